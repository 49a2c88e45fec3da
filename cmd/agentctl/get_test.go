package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestGetTable(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "get")
	wantCode(t, r, exitOK)
	want := `NAME  STATE         READY  RESTARTS  AGE
db    Running       1/1    0         2d
web   BackOff (3s)  1/2    4         5m
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
}

func TestGetWide(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "get", "-o", "wide", "web")
	wantCode(t, r, exitOK)
	want := `NAME  STATE         READY  RESTARTS  AGE  GENERATION  SOURCE                      REASON     AFTER     REQUEST
web   BackOff (3s)  1/2    4         5m   3           /etc/berth/groups/web.toml  CrashLoop  db,cache  cpu 500m, mem 256MiB
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
	if got := f.requestLog(); len(got) != 1 || got[0] != "GET /v1/groups/web" {
		t.Errorf("requests = %q", got)
	}
}

// TestGetWideRequest shows what admission counts for each group: as the
// agent reports it, else (an agent that reports none) computed from the
// spec, requests before limits; "-" when neither says anything.
func TestGetWideRequest(t *testing.T) {
	f := newFakeAgent(t)
	f.groups[0].Request = api.Resources{}
	f.groups[0].Spec.Containers[0].Resources.Requests = api.RequestSpec{CPU: 250, Memory: 128 << 20}
	f.groups[0].Spec.Containers[1].Resources = api.ResourceSpec{CPU: 1500, Memory: 64 << 20}
	f.groups[1].Request = api.Resources{}
	f.groups = append(f.groups, api.GroupStatus{Name: "batch", State: api.GroupPending, Reason: "Unschedulable",
		Request: api.Resources{CPU: 4000, Memory: 1536 << 20}, CreatedAt: testNow})

	r := f.run("", "get", "-o", "wide")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 4 || !strings.HasSuffix(lines[0], "  AFTER     REQUEST") {
		t.Fatalf("stdout =\n%s", r.stdout)
	}
	for i, want := range []string{"cpu 4, mem 1.5GiB", "-", "cpu 1750m, mem 192MiB"} {
		if !strings.HasSuffix(lines[i+1], "  "+want) {
			t.Errorf("line %d: want REQUEST %q:\n%s", i+1, want, r.stdout)
		}
	}
}

func TestGetJSON(t *testing.T) {
	f := newFakeAgent(t)
	t.Run("no names: a list", func(t *testing.T) {
		r := f.run("", "get", "-o", "json")
		wantCode(t, r, exitOK)
		var groups []api.GroupStatus
		if err := json.Unmarshal([]byte(r.stdout), &groups); err != nil {
			t.Fatalf("not a JSON list: %v\n%s", err, r.stdout)
		}
		if len(groups) != 2 || groups[0].Name != "db" || groups[1].Name != "web" {
			t.Errorf("groups = %+v", groups)
		}
	})
	t.Run("one name: the full object", func(t *testing.T) {
		r := f.run("", "get", "web", "-o", "json")
		wantCode(t, r, exitOK)
		var g api.GroupStatus
		if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
			t.Fatalf("not a JSON object: %v\n%s", err, r.stdout)
		}
		if g.Name != "web" || g.Spec == nil || len(g.Events) != 2 {
			t.Errorf("group lacks spec or events: %+v", g)
		}
	})
	t.Run("several names: a list", func(t *testing.T) {
		r := f.run("", "-o", "json", "get", "web", "db")
		wantCode(t, r, exitOK)
		var groups []api.GroupStatus
		if err := json.Unmarshal([]byte(r.stdout), &groups); err != nil || len(groups) != 2 {
			t.Fatalf("not a JSON list of 2 (%v):\n%s", err, r.stdout)
		}
	})
}

func TestGetPrintsFoundGroupsAndExits4ForMissing(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "get", "web", "nope", "db")
	wantCode(t, r, exitNotFound)
	if !strings.Contains(r.stdout, "\nweb ") || !strings.Contains(r.stdout, "\ndb ") {
		t.Errorf("stdout lacks the groups found:\n%s", r.stdout)
	}
	if r.stderr != "error: group \"nope\" not found\n" {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestGetEmpty(t *testing.T) {
	f := newFakeAgent(t)
	f.groups = nil
	r := f.run("", "get")
	wantCode(t, r, exitOK)
	if r.stdout != "" || r.stderr != "no groups\n" {
		t.Errorf("stdout = %q, stderr = %q", r.stdout, r.stderr)
	}
	r = f.run("", "get", "-o", "json")
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("json of no groups = %q, want []", r.stdout)
	}
}

func TestDescribe(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "describe", "web")
	wantCode(t, r, exitOK)
	// Sections in order; within each, the lines that matter.
	want := []string{
		"Name:             web",
		`State:            BackOff (CrashLoop)`,
		"Ready:            false",
		`Message:          container "sidecar" exited with code 1`,
		"Next restart:     in 3s (at 2024-05-01T12:00:03Z)",
		"Priority:         100 (class high)",
		"Generation:       3",
		"Source:           /etc/berth/groups/web.toml",
		"Created:          2024-05-01T11:55:00Z (5m ago)",
		"Netns:            /run/berth/netns/web",
		"Restart policy:   always",
		"Grace period:     30s",
		"Restart backoff:  initial=2s max=5m0s factor=1.5 reset_after=10m0s",
		"After:            db, cache",
		"Containers:",
		"  app:",
		"    Image:      nginx:1.25",
		"    State:      Running",
		"    Ready:      true",
		"    PID:        4242",
		"    Resources:  memory=256MiB pids=100",
		"    Mounts:     data -> /data (ro)",
		"                tmp -> /tmp (rw)",
		"    Probes:",
		"      KIND       ACTION                RESULT   FAILURES  SUCCESSES  LAST    DURATION  MESSAGE",
		"      liveness   tcp :80               failure  2/5       0/1        2s ago  2ms       dial tcp 127.0.0.1:80: connection refused",
		"      readiness  http GET :80/healthz  success  0/3       7/1        5s ago  12ms      -",
		"    Hooks:",
		"      KIND        ACTION                RESULT   AT      DURATION  MESSAGE",
		"      post_start  exec /bin/warm-cache  success  4m ago  2s        -",
		"      pre_stop    http GET :8081/drain  -        -       -         -",
		"  sidecar:",
		"    Role:       sidecar",
		"    State:      Exited",
		"    Reason:     Error",
		"    Ready:      false",
		"    Exit code:  1",
		"    Restarts:   4",
		"    Finished:   2024-05-01T11:59:30Z (30s ago)",
		"    Command:    sh -c exit 1",
		"    Resources:  unlimited",
		"    Mounts:     <none>",
		"Volumes:",
		"  data  empty",
		"  tmp   tmpfs 64MiB",
		"Events:",
		"  AGE  TYPE     REASON   CONTAINER  MESSAGE",
		"  4m   Normal   Started  app        started container",
		"  30s  Warning  BackOff  sidecar    exited with code 1; restarting in 10s",
	}
	out := r.stdout
	for _, line := range want {
		i := strings.Index(out, line+"\n")
		if i < 0 {
			t.Fatalf("describe output lacks %q (or has it out of order):\n%s", line, r.stdout)
		}
		out = out[i+len(line):]
	}
	if strings.Contains(r.stdout, "Spec error") {
		t.Error("spec error shown for a group without one")
	}
}

func TestDescribeShowsSpecErrorAndNoEvents(t *testing.T) {
	f := newFakeAgent(t)
	f.groups[1].SpecError = "db.toml:3:1: name: must not change"
	r := f.run("", "describe", "db")
	wantCode(t, r, exitOK)
	for _, want := range []string{
		"Spec error:  db.toml:3:1: name: must not change (still running the last valid spec)\n",
		"  pg:\n    Image:     postgres:16\n",
		"Events:\n  <none>\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestGetWideNetwork shows each group's address on the node bridge (its
// mode when it has none) and its published ports; "-" for a group whose
// network the agent does not report yet.
func TestGetWideNetwork(t *testing.T) {
	f := newFakeAgent(t)
	f.groups[0].Network = &api.NetworkStatus{Mode: api.NetworkBridge, Address: "10.89.0.7", Ports: []api.PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: api.ProtocolTCP},
		{HostIP: "127.0.0.1", HostPort: 5353, ContainerPort: 53, Protocol: api.ProtocolUDP}}}
	f.groups[1].Network = &api.NetworkStatus{Mode: api.NetworkHost}
	f.groups = append(f.groups, api.GroupStatus{Name: "batch", State: api.GroupPending, CreatedAt: testNow,
		Spec: &api.GroupSpec{Name: "batch"}})

	r := f.run("", "get", "-o", "wide")
	wantCode(t, r, exitOK)
	want := `NAME   STATE         READY  RESTARTS  AGE  ADDRESS    PORTS                                GENERATION  SOURCE                      REASON     AFTER     REQUEST
batch  Pending       0/0    0         0s   -          -                                    0           -                           -          -         -
db     Running       1/1    0         2d   host       -                                    1           api                         -          -         cpu 2, mem 1GiB
web    BackOff (3s)  1/2    4         5m   10.89.0.7  8080->80/tcp,127.0.0.1:5353->53/udp  3           /etc/berth/groups/web.toml  CrashLoop  db,cache  cpu 500m, mem 256MiB
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}

	// Without -o wide the table stays as it is.
	r = f.run("", "get")
	if strings.Contains(r.stdout, "ADDRESS") || strings.Contains(r.stdout, "10.89.0.7") {
		t.Errorf("get without -o wide shows the network:\n%s", r.stdout)
	}
}
