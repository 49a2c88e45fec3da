package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestGetReadyCountsReadyNonInitContainers(t *testing.T) {
	f := newFakeAgent(t)
	// db runs, but its readiness probe fails: running is not ready.
	f.groups[1].Containers[0].Ready = false
	// web gains an init container that completed: not counted at all.
	f.groups[0].Containers = append([]api.ContainerStatus{
		{Name: "migrate", Image: "migrate:1", State: api.ContainerExited, ExitCode: exitCodePtr(0), Role: api.RoleInit},
	}, f.groups[0].Containers...)
	// A second init container whose status lacks the role: the spec has it.
	f.groups[0].Containers = append(f.groups[0].Containers,
		api.ContainerStatus{Name: "seed", Image: "seed:1", State: api.ContainerExited, ExitCode: exitCodePtr(0)})
	f.groups[0].Spec.Containers = append(f.groups[0].Spec.Containers,
		api.ContainerSpec{Name: "seed", Image: "seed:1", Role: api.RoleInit})

	r := f.run("", "get", "web", "db")
	wantCode(t, r, exitOK)
	want := `NAME  STATE         READY  RESTARTS  AGE
web   BackOff (3s)  1/2    4         5m
db    Running       0/1    0         2d
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}

	// The list has no specs: "seed", without a role in its status, counts.
	r = f.run("", "get")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "\nweb   BackOff (3s)  1/3 ") {
		t.Errorf("list: web should be 1/3 (init by status role only):\n%s", r.stdout)
	}
}

func TestGetBackOffCountdown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state api.GroupState
		next  time.Time
		want  string
	}{
		{"rounds to seconds", api.GroupBackOff, testNow.Add(2600 * time.Millisecond), "BackOff (3s)"},
		{"rounds down too", api.GroupBackOff, testNow.Add(3400 * time.Millisecond), "BackOff (3s)"},
		{"minutes", api.GroupBackOff, testNow.Add(90 * time.Second), "BackOff (1m30s)"},
		{"overdue", api.GroupBackOff, testNow.Add(-2 * time.Second), "BackOff (0s)"},
		{"not set", api.GroupBackOff, time.Time{}, "BackOff"},
		{"only in BackOff", api.GroupRunning, testNow.Add(3 * time.Second), "Running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAgent(t)
			f.groups[0].State, f.groups[0].NextRestart = tc.state, tc.next
			r := f.run("", "get", "web")
			wantCode(t, r, exitOK)
			lines := strings.Split(r.stdout, "\n")
			if len(lines) < 2 || !strings.HasPrefix(lines[1], "web   "+tc.want+"  ") {
				t.Errorf("want STATE %q:\n%s", tc.want, r.stdout)
			}
		})
	}
}

func TestGetWideListFetchesAfter(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "get", "-o", "wide")
	wantCode(t, r, exitOK)
	want := `NAME  STATE         READY  RESTARTS  AGE  GENERATION  SOURCE                      REASON     AFTER     REQUEST
db    Running       1/1    0         2d   1           api                         -          -         cpu 2, mem 1GiB
web   BackOff (3s)  1/2    4         5m   3           /etc/berth/groups/web.toml  CrashLoop  db,cache  cpu 500m, mem 256MiB
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
	got := strings.Join(f.requestLog(), "; ")
	if got != "GET /v1/groups; GET /v1/groups/db; GET /v1/groups/web; GET /v1/cluster/groups" {
		t.Errorf("requests = %s", got)
	}
}

// marshalIndent is what -o json must print for v.
func marshalIndent(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	if err := printJSON(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestJSONIsTheFullObjectUnchanged(t *testing.T) {
	f := newFakeAgent(t)
	web := marshalIndent(t, f.groups[0])
	for _, want := range []string{`"ready": true`, `"next_restart": "2024-05-01T12:00:03Z"`, `"probes": [`, `"hooks": [`, `"after": [`, `"restart_backoff": {`} {
		if !strings.Contains(web, want) {
			t.Fatalf("fixture JSON lacks %s:\n%s", want, web)
		}
	}
	for _, args := range [][]string{{"get", "web", "-o", "json"}, {"describe", "web", "-o", "json"}} {
		r := f.run("", args...)
		wantCode(t, r, exitOK)
		if r.stdout != web {
			t.Errorf("%s: stdout =\n%s\nwant\n%s", strings.Join(args, " "), r.stdout, web)
		}
	}

	// The list is as List returns it: no spec, no events, nothing added.
	var list []api.GroupStatus
	for _, name := range []string{"db", "web"} {
		for _, g := range f.groups {
			if g.Name == name {
				g.Spec, g.Events = nil, nil
				list = append(list, g)
			}
		}
	}
	r := f.run("", "get", "-o", "json")
	wantCode(t, r, exitOK)
	if want := marshalIndent(t, list); r.stdout != want {
		t.Errorf("list: stdout =\n%s\nwant\n%s", r.stdout, want)
	}
	var back []api.GroupStatus
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !back[1].NextRestart.Equal(testNow.Add(3*time.Second)) || !back[1].Containers[0].Ready {
		t.Errorf("list does not decode back (%v): %+v", err, back)
	}
}

func TestDescribeWaitingForDependency(t *testing.T) {
	f := newFakeAgent(t)
	web := &f.groups[0]
	web.State, web.Reason, web.Message, web.NextRestart = api.GroupPending, reasonWaitingForDependency, "cache", time.Time{}
	web.Containers = nil

	r := f.run("", "describe", "web")
	wantCode(t, r, exitOK)
	for _, want := range []string{
		"State:            Pending (WaitingForDependency)\n",
		"Waiting for:      cache\n",
		"After:            db, cache\n",
		"  app:\n    Image:      nginx:1.25\n    State:      not created\n",
		// Probes and hooks of the spec, not run yet.
		"      liveness   tcp :80               -       0/5       0/1        -     -         -\n",
		"      readiness  http GET :80/healthz  -       0/3       0/1        -     -         -\n",
		"      post_start  exec /bin/warm-cache  -       -   -         -\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, unwanted := range []string{"Message:", "Next restart:"} {
		if strings.Contains(r.stdout, unwanted) {
			t.Errorf("describe output has %q:\n%s", unwanted, r.stdout)
		}
	}

	// Without a message, the spec says what the group waits for.
	web.Message = ""
	r = f.run("", "describe", "web")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "Waiting for:      db, cache\n") {
		t.Errorf("describe output lacks the After groups:\n%s", r.stdout)
	}
}

// TestDescribeSaysWhyNotRunning puts the reason and message of a Pending
// or Evicted group right under its state, instead of a Message line, and
// shows what admission counts for it and how it may be evicted.
func TestDescribeSaysWhyNotRunning(t *testing.T) {
	const needs = "needs cpu 2, memory 1GiB; the node has cpu 1500m, memory 512MiB free"
	for _, tc := range []struct {
		name            string
		state           api.GroupState
		reason, message string
		want            string
	}{
		{"pending", api.GroupPending, "Unschedulable", needs, "Pending:          Unschedulable — " + needs + "\n"},
		{"evicted", api.GroupEvicted, "Preempted", "evicted for \"batch\" (priority 1000);\nreturns when there is room",
			`Evicted:          Preempted — evicted for "batch" (priority 1000); returns when there is room` + "\n"},
		{"reason only", api.GroupEvicted, "MemoryPressure", "", "Evicted:          MemoryPressure\n"},
		{"message only", api.GroupPending, "", needs, "Pending:          " + needs + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAgent(t)
			web := &f.groups[0]
			web.State, web.Reason, web.Message, web.NextRestart = tc.state, tc.reason, tc.message, time.Time{}
			no := false
			web.Spec.Preemptible, web.Spec.OnEvict = &no, api.EvictStop

			r := f.run("", "describe", "web")
			wantCode(t, r, exitOK)
			// Under the state, before anything else.
			i := strings.Index(r.stdout, "\nReady:")
			if i < 0 || !strings.HasSuffix(r.stdout[:i+1], tc.want) {
				t.Errorf("describe output lacks %q right under State:\n%s", tc.want, r.stdout)
			}
			for _, want := range []string{
				"Request:          cpu 500m, memory 256MiB, pids 100\n",
				"Preemptible:      false\nOn evict:         stop\n",
			} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("describe output lacks %q:\n%s", want, r.stdout)
				}
			}
			if strings.Contains(r.stdout, "Message:") {
				t.Errorf("message shown twice:\n%s", r.stdout)
			}
		})
	}

	// Other states keep the Message line; waiting for dependencies keeps
	// "Waiting for".
	f := newFakeAgent(t)
	r := f.run("", "describe", "web")
	wantCode(t, r, exitOK)
	if strings.Contains(r.stdout, "BackOff:") || !strings.Contains(r.stdout, "\nMessage:  ") {
		t.Errorf("BackOff group: want a Message line only:\n%s", r.stdout)
	}
	f.groups[0].State, f.groups[0].Reason, f.groups[0].Message = api.GroupPending, reasonWaitingForDependency, "cache"
	r = f.run("", "describe", "web")
	wantCode(t, r, exitOK)
	if strings.Contains(r.stdout, "Pending:") || !strings.Contains(r.stdout, "Waiting for:      cache\n") {
		t.Errorf("waiting group: want Waiting for only:\n%s", r.stdout)
	}
}

func TestDescribeContainerRequests(t *testing.T) {
	f := newFakeAgent(t)
	f.groups[0].Spec.Containers[0].Resources.Requests = api.RequestSpec{CPU: 250, Memory: 128 << 20}
	f.groups[0].Spec.Containers[1].Resources.Requests = api.RequestSpec{Memory: 32 << 20}
	r := f.run("", "describe", "web")
	wantCode(t, r, exitOK)
	for _, want := range []string{
		"    Resources:  memory=256MiB pids=100 (requests cpu=250m memory=128MiB)\n",
		"    Resources:  unlimited (requests memory=32MiB)\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestDescribeOOMKilledAndProbesWithoutSpec(t *testing.T) {
	f := newFakeAgent(t)
	sidecar := &f.groups[0].Containers[1]
	sidecar.ExitCode, sidecar.OOMKilled, sidecar.Reason = exitCodePtr(137), true, "OOMKilled"
	db := &f.groups[1]
	db.Containers[0].Probes = []api.ProbeStatus{{Kind: "readiness", Action: "exec pg_isready", Result: "success", Successes: 1, LastProbe: testNow.Add(-time.Second), Duration: 40 * time.Millisecond}}

	r := f.run("", "describe", "web")
	wantCode(t, r, exitOK)
	want := "    Ready:      false\n    OOMKilled:  true\n    ID:         web-sidecar\n    Exit code:  137 (SIGKILL, OOMKilled)\n"
	if !strings.Contains(r.stdout, want) {
		t.Errorf("describe output lacks %q:\n%s", want, r.stdout)
	}
	if strings.Count(r.stdout, "OOMKilled:") != 1 {
		t.Errorf("OOMKilled shown for a container that was not:\n%s", r.stdout)
	}

	// db has no spec: counts without thresholds, no restart backoff.
	r = f.run("", "describe", "db")
	wantCode(t, r, exitOK)
	want = "      readiness  exec pg_isready  success  0         1          1s ago  40ms      -\n"
	if !strings.Contains(r.stdout, want) {
		t.Errorf("describe output lacks %q:\n%s", want, r.stdout)
	}
	for _, unwanted := range []string{"Restart backoff:", "Hooks:", "Role:", "Next restart:"} {
		if strings.Contains(r.stdout, unwanted) {
			t.Errorf("describe db has %q:\n%s", unwanted, r.stdout)
		}
	}
}

func TestDescribeExitCode(t *testing.T) {
	for _, tc := range []struct {
		code uint32
		oom  bool
		want string
	}{
		{0, false, "0"},
		{1, false, "1"},
		{128, false, "128"},
		{137, false, "137 (SIGKILL)"},
		{143, false, "143 (SIGTERM)"},
		{139, false, "139 (SIGSEGV)"},
		{137, true, "137 (SIGKILL, OOMKilled)"},
		{1, true, "1 (OOMKilled)"},
		{255, false, "255"},
	} {
		if got := describeExitCode(tc.code, tc.oom); got != tc.want {
			t.Errorf("describeExitCode(%d, %v) = %q, want %q", tc.code, tc.oom, got, tc.want)
		}
	}
}

func TestDescribeBackoffDefaults(t *testing.T) {
	got := describeBackoff(api.BackoffSpec{})
	if want := "initial=1s max=5m0s factor=2 reset_after=10m0s"; got != want {
		t.Errorf("describeBackoff(zero) = %q, want %q", got, want)
	}
}

func TestSpecActions(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{probeAction(&api.Probe{Exec: &api.ExecAction{Command: []string{"sh", "-c", "test -f /ok"}}}), `exec sh -c "test -f /ok"`},
		{probeAction(&api.Probe{TCP: &api.TCPAction{Port: 5432}}), "tcp :5432"},
		{probeAction(&api.Probe{HTTP: &api.HTTPAction{Path: "health", Port: 8080}}), "http GET :8080/health"},
		{hookAction(&api.Hook{HTTP: &api.HTTPAction{Path: "/drain", Port: 9}}), "http GET :9/drain"},
	} {
		if tc.got != tc.want {
			t.Errorf("action = %q, want %q", tc.got, tc.want)
		}
	}
}
