package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster"
)

// tlsInitDir runs `agentctl tls init` for nodes into a new directory.
func tlsInitDir(t *testing.T, nodes ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	args := []string{"tls", "init", "--dir", dir}
	for _, n := range nodes {
		args = append(args, "--node", n)
	}
	if out, code := runAgentctlForTLS(t, args...); code != 0 {
		t.Fatalf("tls init: exit %d: %s", code, out)
	}
	return dir
}

// remoteAgent serves GET /v1/version over the inter-agent TLS listener of
// node (certificates from dir) on a kernel-chosen port of 127.0.0.1, and
// counts the requests that reach it.
func remoteAgent(t *testing.T, dir, node string) (string, *atomic.Int32) {
	t.Helper()
	tl, err := cluster.LoadTLS(dir, node)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(api.VersionInfo{Version: "1.5.0", GoVersion: "go1.26.0", Node: node, Containerd: "1.7.35", ContainerdOK: true})
	})
	srv := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(ln, tl.Server()))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String(), &hits
}

// copyFile copies src to dst with mode perm.
func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		t.Fatal(err)
	}
}

func TestAddrTalksToARemoteAgentOverMutualTLS(t *testing.T) {
	dir := tlsInitDir(t, "a=127.0.0.1", "b")
	addr, hits := remoteAgent(t, dir, "a")

	t.Run("with agentctl's certificate", func(t *testing.T) {
		r := runAgentctl(context.Background(), nil, "", "--addr", addr, "--tls-dir", dir, "version")
		wantCode(t, r, exitOK)
		if !strings.Contains(r.stdout, "Server:      1.5.0 (go1.26.0) on node a") {
			t.Errorf("stdout = %q", r.stdout)
		}
	})
	t.Run("with a node's certificate", func(t *testing.T) {
		r := runAgentctl(context.Background(), nil, "", "--addr", addr, "--tls-dir", dir, "--tls-name", "b", "version")
		wantCode(t, r, exitOK)
	})
	t.Run("from the environment", func(t *testing.T) {
		t.Setenv(envAddr, addr)
		t.Setenv(envTLSDir, dir)
		r := runAgentctl(context.Background(), nil, "", "version", "-o", "json")
		wantCode(t, r, exitOK)
		if !strings.Contains(r.stdout, `"node": "a"`) {
			t.Errorf("stdout = %q", r.stdout)
		}
	})
	if n := hits.Load(); n != 3 {
		t.Fatalf("agent served %d requests, want 3", n)
	}
}

func TestAddrRefusesWhatTheClusterCADoesNotVouchFor(t *testing.T) {
	dir := tlsInitDir(t, "a=127.0.0.1", "b")
	other := tlsInitDir(t, "a=127.0.0.1")
	addr, hits := remoteAgent(t, dir, "a")
	addrB, _ := remoteAgent(t, dir, "b") // b's certificate names no address

	// The right CA, but agentctl's certificate from another cluster.
	mixed := t.TempDir()
	copyFile(t, filepath.Join(dir, "ca.crt"), filepath.Join(mixed, "ca.crt"), 0o644)
	copyFile(t, filepath.Join(other, "agentctl.crt"), filepath.Join(mixed, "agentctl.crt"), 0o644)
	copyFile(t, filepath.Join(other, "agentctl.key"), filepath.Join(mixed, "agentctl.key"), 0o600)
	// Only the CA.
	caOnly := t.TempDir()
	copyFile(t, filepath.Join(dir, "ca.crt"), filepath.Join(caOnly, "ca.crt"), 0o644)
	empty := t.TempDir()

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"another cluster's directory", []string{"--addr", addr, "--tls-dir", other}, exitUnavailable,
			"error: agentd at " + addr + " presented a certificate that the cluster CA in " + other + "/ca.crt does not vouch for"},
		{"a client certificate of another CA", []string{"--addr", addr, "--tls-dir", mixed}, exitUnavailable,
			"error: agentd at " + addr + " refused the client certificate " + mixed + "/agentctl.crt (tls: unknown certificate authority)"},
		{"a server certificate without the dialled address", []string{"--addr", addrB, "--tls-dir", dir}, exitUnavailable,
			`error: agentd at ` + addrB + ` presented the certificate of "b", which does not name 127.0.0.1: reissue that node's certificate with its address (agentctl tls init --node b=IP)`},
		{"no client certificate", []string{"--addr", addr, "--tls-dir", caOnly}, exitFailure,
			"error: --addr needs a client certificate: " + caOnly + "/agentctl.crt: no such file; create it with agentctl tls init"},
		{"no CA certificate", []string{"--addr", addr, "--tls-dir", empty}, exitFailure,
			"error: --addr needs the cluster's CA certificate: " + empty + "/ca.crt: no such file"},
		{"no such --tls-name", []string{"--addr", addr, "--tls-dir", dir, "--tls-name", "c"}, exitFailure,
			"error: --addr needs a client certificate: " + dir + "/c.crt: no such file"},
		{"a --tls-name that is a path", []string{"--addr", addr, "--tls-dir", dir, "--tls-name", "../x"}, exitUsage,
			"error: --tls-name: "},
		{"a bad --addr", []string{"--addr", "127.0.0.1:http:x", "--tls-dir", dir}, exitUsage,
			`error: invalid --addr "127.0.0.1:http:x": want host:port`},
		{"both --socket and --addr", []string{"--addr", addr, "--tls-dir", dir, "--socket", "/x.sock"}, exitUsage,
			"error: --socket and --addr exclude each other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runAgentctl(context.Background(), nil, "", append(tc.args, "version")...)
			wantCode(t, r, tc.code)
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr = %q\nwant it to contain %q", r.stderr, tc.stderr)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("refused clients reached the agent %d times", n)
	}
}

// TestAddrFromTheEnvironmentLeavesOfflineCommandsAlone: with BERTH_ADDR
// set and no certificates, commands that never talk to agentd still work,
// and an explicit --socket wins over the environment.
func TestAddrFromTheEnvironmentLeavesOfflineCommandsAlone(t *testing.T) {
	t.Setenv(envAddr, "127.0.0.1:1")
	t.Setenv(envTLSDir, t.TempDir())
	for _, args := range [][]string{
		{"tls", "init", "--dir", filepath.Join(t.TempDir(), "tls"), "--node", "a"},
		{"keygen"},
		{"version", "--client"},
		{"help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runAgentctl(context.Background(), nil, "", args...)
			wantCode(t, r, exitOK)
		})
	}
	t.Run("an explicit --socket", func(t *testing.T) {
		f := newFakeAgent(t)
		r := f.run("", "version")
		wantCode(t, r, exitOK)
	})
	t.Run("a command that talks to agentd", func(t *testing.T) {
		r := runAgentctl(context.Background(), nil, "", "get")
		wantCode(t, r, exitFailure)
		if !strings.Contains(r.stderr, "--addr needs the cluster's CA certificate") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})
}

func TestRemoteAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.1:7000", "10.0.0.1:7000"},
		{"10.0.0.1", "10.0.0.1:" + defaultAPIPort},
		{"node-a.example", "node-a.example:" + defaultAPIPort},
		{"[fd00::1]", "[fd00::1]:" + defaultAPIPort},
		{"[fd00::1]:7000", "[fd00::1]:7000"},
		{"fd00::1", ""},
		{":7000", ""},
		{"10.0.0.1:0", ""},
		{"10.0.0.1:99999", ""},
		{"10.0.0.1:http", ""},
	} {
		got, err := remoteAddr(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("remoteAddr(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("remoteAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
