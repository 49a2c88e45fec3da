package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// runEndpoints runs agentctl with args against an agent that serves eps
// for service "cache" (and none for any other), and returns the result and
// the requested paths.
func runEndpoints(t *testing.T, eps []api.Endpoint, args ...string) (result, []string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.Method+" "+r.URL.Path)
		if r.URL.Path == "/v1/endpoints/cache" {
			writeJSON(w, eps)
			return
		}
		writeJSON(w, []api.Endpoint{})
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	var stdout, stderr bytes.Buffer
	a := newApp(strings.NewReader(""), &stdout, &stderr)
	a.now = func() time.Time { return testNow }
	a.isTerminal = func(io.Writer) bool { return false }
	root := a.rootCommand()
	if !slices.ContainsFunc(root.Commands(), func(c *cobra.Command) bool { return c.Name() == "endpoints" }) {
		root.AddCommand(a.endpointsCommand()) // until root.go registers it
	}
	root.SetArgs(append([]string{"--socket", sock}, args...))
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	code := exitOK
	if cmd, err := root.ExecuteContextC(context.Background()); err != nil {
		code = a.report(cmd, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}, paths
}

func TestEndpointsTable(t *testing.T) {
	eps := []api.Endpoint{
		{Group: "cache", Node: "node-1", Address: "10.89.0.4", Ready: true,
			Ports: []api.PortMapping{{HostPort: 6379, ContainerPort: 6379, Protocol: api.ProtocolTCP}}},
		{Group: "cache.1", Node: "node-1", Address: "10.89.0.9", Ready: true},
	}
	r, paths := runEndpoints(t, eps, "endpoints", "cache")
	wantCode(t, r, exitOK)
	want := `GROUP    NODE    ADDRESS    PORTS
cache    node-1  10.89.0.4  6379->6379/tcp
cache.1  node-1  10.89.0.9  -
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
	if !slices.Equal(paths, []string{"GET /v1/endpoints/cache"}) {
		t.Errorf("requests %v", paths)
	}
}

func TestEndpointsJSON(t *testing.T) {
	eps := []api.Endpoint{{Group: "cache", Node: "node-1", Address: "10.89.0.4", Ready: true}}
	r, _ := runEndpoints(t, eps, "endpoints", "cache", "-o", "json")
	wantCode(t, r, exitOK)
	var got []api.Endpoint
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, eps) {
		t.Errorf("stdout %s: %v, want %+v", r.stdout, err, eps)
	}
	r, _ = runEndpoints(t, nil, "endpoints", "other", "-o", "json")
	wantCode(t, r, exitOK)
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("no endpoints as JSON: %q, want []", r.stdout)
	}
}

func TestEndpointsNone(t *testing.T) {
	r, _ := runEndpoints(t, nil, "endpoints", "other")
	wantCode(t, r, exitOK)
	if r.stdout != "" || r.stderr != "no ready endpoints for service other\n" {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	r, _ = runEndpoints(t, nil, "endpoints")
	wantCode(t, r, exitUsage)
}
