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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// testNow is the clock of every test run of agentctl.
var testNow = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// fakeAgent serves the admin API from canned data on a unix socket and
// records what it was asked.
type fakeAgent struct {
	sock string

	mu       sync.Mutex
	requests []string // "METHOD /path?query"
	applied  []api.ApplyRequest
	imported []byte

	groups   []api.GroupStatus // as Get returns them
	applyErr *api.ErrorBody
	logs     []api.LogEntry
	events   []api.Event
	images   []api.ImageInfo
	node     api.NodeStatus
}

func exitCodePtr(c uint32) *uint32 { return &c }

// newFakeAgent starts an agent with two groups: "web" (in BackOff, after
// db and cache: a ready main container with probes and hooks, and a
// crashed sidecar; with a spec and events) and "db" (one container), on
// node "node-1" under memory pressure.
func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	f := &fakeAgent{}
	f.groups = []api.GroupStatus{
		{
			Name: "web", State: api.GroupBackOff, Reason: "CrashLoop", Message: `container "sidecar" exited with code 1`,
			Priority: 100, Generation: 3, Source: "/etc/berth/groups/web.toml", Restarts: 4,
			Request:     api.Resources{CPU: 500, Memory: 256 << 20, Pids: 100},
			NextRestart: testNow.Add(3 * time.Second),
			CreatedAt:   testNow.Add(-5 * time.Minute), StartedAt: testNow.Add(-4 * time.Minute),
			NetNS: "/run/berth/netns/web",
			Containers: []api.ContainerStatus{
				{Name: "app", ID: "web-app", Image: "nginx:1.25", State: api.ContainerRunning, PID: 4242, StartedAt: testNow.Add(-4 * time.Minute),
					Role: api.RoleMain, Ready: true,
					Probes: []api.ProbeStatus{
						{Kind: "liveness", Action: "tcp :80", Result: "failure", Message: "dial tcp 127.0.0.1:80:\nconnection refused",
							LastProbe: testNow.Add(-2 * time.Second), Failures: 2, Duration: 1500 * time.Microsecond},
						{Kind: "readiness", Action: "http GET :80/healthz", Result: "success",
							LastProbe: testNow.Add(-5 * time.Second), Successes: 7, Duration: 12345 * time.Microsecond},
					},
					Hooks: []api.HookStatus{
						{Kind: "post_start", Action: "exec /bin/warm-cache", Result: "success", At: testNow.Add(-4 * time.Minute), Duration: 2 * time.Second},
					}},
				{Name: "sidecar", ID: "web-sidecar", Image: "busybox:1", State: api.ContainerExited, Reason: "Error", Role: api.RoleSidecar,
					ExitCode: exitCodePtr(1), Restarts: 4, StartedAt: testNow.Add(-40 * time.Second), FinishedAt: testNow.Add(-30 * time.Second)},
			},
			Spec: &api.GroupSpec{
				Name: "web", Priority: api.Priority{Class: "high"}, GracePeriod: api.Duration(30 * time.Second),
				Restart:        api.RestartAlways,
				After:          []string{"db", "cache"},
				RestartBackoff: api.BackoffSpec{Initial: api.Duration(2 * time.Second), Factor: 1.5},
				Volumes:        []api.VolumeSpec{{Name: "data", Type: api.VolumeEmpty}, {Name: "tmp", Type: api.VolumeTmpfs, Size: 64 << 20}},
				Containers: []api.ContainerSpec{
					{Name: "app", Image: "nginx:1.25",
						Resources: api.ResourceSpec{Memory: 256 << 20, Pids: 100},
						Mounts:    []api.MountSpec{{Volume: "data", Path: "/data", ReadOnly: true}, {Volume: "tmp", Path: "/tmp"}},
						Liveness:  &api.Probe{TCP: &api.TCPAction{Port: 80}, FailureThreshold: 5},
						Readiness: &api.Probe{HTTP: &api.HTTPAction{Path: "/healthz", Port: 80}},
						PostStart: &api.Hook{Exec: &api.ExecAction{Command: []string{"/bin/warm-cache"}}},
						PreStop:   &api.Hook{HTTP: &api.HTTPAction{Path: "drain", Port: 8081}}},
					{Name: "sidecar", Image: "busybox:1", Role: api.RoleSidecar, Command: []string{"sh", "-c", "exit 1"}},
				},
			},
			Events: []api.Event{
				{Seq: 1, Time: testNow.Add(-4 * time.Minute), Type: api.EventNormal, Group: "web", Container: "app", Reason: "Started", Message: "started container"},
				{Seq: 2, Time: testNow.Add(-30 * time.Second), Type: api.EventWarning, Group: "web", Container: "sidecar", Reason: "BackOff", Message: "exited with code 1;\nrestarting in 10s"},
			},
		},
		{
			Name: "db", State: api.GroupRunning, Priority: 50, Generation: 1, Source: "api", Ready: true,
			Request:   api.Resources{CPU: 2000, Memory: 1 << 30},
			CreatedAt: testNow.Add(-50 * time.Hour),
			Containers: []api.ContainerStatus{
				{Name: "pg", Image: "postgres:16", State: api.ContainerRunning, PID: 77, StartedAt: testNow.Add(-50 * time.Hour), Ready: true},
			},
		},
	}
	f.node = api.NodeStatus{
		Name:            "node-1",
		Allocatable:     api.Resources{CPU: 4000, Memory: 8 << 30, Pids: 4096},
		Allocated:       api.Resources{CPU: 2500, Memory: 1280 << 20, Pids: 100},
		Free:            api.Resources{CPU: 1500, Memory: 8<<30 - 1280<<20, Pids: 3996},
		MemoryAvailable: 300 << 20,
		Pressure:        "memory",
		Admitted:        2, Pending: 1, Evicted: 3,
	}
	f.logs = []api.LogEntry{
		{Time: testNow.Add(-3 * time.Second), Stream: "stdout", Container: "app", Line: "hello"},
		{Time: testNow.Add(-2 * time.Second), Stream: "stderr", Container: "sidecar", Line: "oops"},
		{Time: testNow.Add(-1 * time.Second), Stream: "stdout", Container: "app", Line: "bye"},
	}
	f.images = []api.ImageInfo{
		{Name: "nginx:1.25", Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Size: 70 << 20},
		{Name: "busybox:1", Digest: "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", Size: 2 << 20},
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, api.VersionInfo{Version: "1.4.0", GoVersion: "go1.26.0", Node: "node-1", Containerd: "1.7.35", ContainerdOK: true})
	})
	mux.HandleFunc("POST /v1/apply", f.apply)
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, f.node) })
	mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		var list []api.GroupStatus
		for _, g := range f.groups {
			g.Spec, g.Events = nil, nil
			list = append(list, g)
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("GET /v1/groups/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "slow" {
			<-r.Context().Done()
			return
		}
		if g := f.group(w, r); g != nil {
			writeJSON(w, g)
		}
	})
	okIfFound := func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "broken" {
			writeError(w, http.StatusInternalServerError, "internal", "containerd: task delete: exit status 1")
			return
		}
		if f.group(w, r) != nil {
			w.WriteHeader(http.StatusOK)
		}
	}
	mux.HandleFunc("DELETE /v1/groups/{name}", okIfFound)
	mux.HandleFunc("POST /v1/groups/{name}/stop", okIfFound)
	mux.HandleFunc("POST /v1/groups/{name}/start", okIfFound)
	mux.HandleFunc("GET /v1/groups/{name}/logs", f.serveLogs)
	mux.HandleFunc("GET /v1/events", f.serveEvents)
	mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, f.images) })
	mux.HandleFunc("POST /v1/images/import", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.imported = body
		f.mu.Unlock()
		name := r.URL.Query().Get("name")
		if name == "" {
			name = "import-" + string(body[:3])
		}
		writeJSON(w, []api.ImageInfo{{Name: name, Digest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Size: int64(len(body))}})
	})
	mux.HandleFunc("POST /v1/images/pull", func(w http.ResponseWriter, r *http.Request) {
		ref := r.URL.Query().Get("ref")
		if strings.HasPrefix(ref, "registry.down/") {
			writeError(w, http.StatusServiceUnavailable, "unavailable", "registry.down: connection refused")
			return
		}
		writeJSON(w, api.ImageInfo{Name: ref, Digest: "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", Size: 5 << 20})
	})

	f.sock = filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeAgent) group(w http.ResponseWriter, r *http.Request) *api.GroupStatus {
	name := r.PathValue("name")
	for i := range f.groups {
		if f.groups[i].Name == name {
			return &f.groups[i]
		}
	}
	writeError(w, http.StatusNotFound, "not_found", `group "`+name+`" not found`)
	return nil
}

func (f *fakeAgent) apply(w http.ResponseWriter, r *http.Request) {
	var req api.ApplyRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	f.mu.Lock()
	f.applied = append(f.applied, req)
	f.mu.Unlock()
	if f.applyErr != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(f.applyErr)
		return
	}
	var res []api.ApplyResult
	for i, file := range req.Files {
		action := api.ActionCreated
		if i%2 == 1 {
			action = api.ActionUnchanged
		}
		name := strings.TrimSuffix(filepath.Base(file.Name), ".toml")
		res = append(res, api.ApplyResult{Group: name, Action: action, Generation: 1})
	}
	writeJSON(w, res)
}

func (f *fakeAgent) serveLogs(w http.ResponseWriter, r *http.Request) {
	if f.group(w, r) == nil {
		return
	}
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	enc := json.NewEncoder(w)
	for _, e := range f.logs {
		if c := r.URL.Query().Get("container"); c == "" || c == e.Container {
			enc.Encode(e)
		}
	}
	if r.URL.Query().Get("follow") == "1" {
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
}

func (f *fakeAgent) serveEvents(w http.ResponseWriter, r *http.Request) {
	var events []api.Event
	for _, g := range f.groups {
		for _, e := range g.Events {
			if q := r.URL.Query().Get("group"); q == "" || q == e.Group {
				events = append(events, e)
			}
		}
	}
	if r.URL.Query().Get("follow") != "1" {
		writeJSON(w, events)
		return
	}
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	enc := json.NewEncoder(w)
	for _, e := range events {
		enc.Encode(e)
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, class, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.ErrorBody{Error: msg, Class: class})
}

// requestLog returns the requests the agent has seen.
func (f *fakeAgent) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// result is what one run of agentctl did.
type result struct {
	stdout, stderr string
	code           int
}

// run runs agentctl against the fake agent.
func (f *fakeAgent) run(stdin string, args ...string) result {
	return runAgentctl(context.Background(), nil, stdin, append([]string{"--socket", f.sock}, args...)...)
}

// runAgentctl runs agentctl in-process with the test clock; setup, when
// set, adjusts the app before the run.
func runAgentctl(ctx context.Context, setup func(*app), stdin string, args ...string) result {
	var stdout, stderr bytes.Buffer
	a := newApp(strings.NewReader(stdin), &stdout, &stderr)
	a.now = func() time.Time { return testNow }
	a.isTerminal = func(io.Writer) bool { return false }
	if setup != nil {
		setup(a)
	}
	code := a.run(ctx, args)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// wantCode fails the test when r did not exit with code.
func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}
