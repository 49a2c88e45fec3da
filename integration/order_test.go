package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// Tests of start and stop order: init containers, sidecars before main
// containers, reverse stop in one grace period, and `after` between
// groups.

// containerNamed returns the status of container name of st; the test
// fails if the group has no such container.
func containerNamed(t testing.TB, st *api.GroupStatus, name string) api.ContainerStatus {
	t.Helper()
	for _, c := range st.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("group %s has no container %q (containers: %+v)", st.Name, name, st.Containers)
	return api.ContainerStatus{}
}

// eventsOf returns the events of st about container ("" for the group's
// own events) with the given reason, oldest first.
func eventsOf(st *api.GroupStatus, container, reason string) []api.Event {
	var out []api.Event
	for _, e := range st.Events {
		if e.Container == container && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// checkLegalTransitions fails the test if the supervisor reported a state
// change its own table does not allow.
func checkLegalTransitions(t testing.TB, st *api.GroupStatus) {
	t.Helper()
	for _, e := range eventsOf(st, "", "IllegalTransition") {
		t.Errorf("group %s: illegal transition %s", st.Name, e.Message)
	}
}

// volumeFile is the host path of file in the empty volume of a group.
func volumeFile(a *agentProc, group, volume, file string) string {
	return filepath.Join(a.StateDir, "volumes", group, volume, file)
}

// containerCreated reports whether the containerd container of a group's
// container exists (in env.Namespace, the default agent's).
func containerCreated(t testing.TB, group, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(env.ctx(context.Background()), 10*time.Second)
	defer cancel()
	_, err := env.Client.LoadContainer(ctx, supervisor.ContainerID(group, name))
	switch {
	case err == nil:
		return true
	case errdefs.IsNotFound(err):
		return false
	}
	t.Fatalf("load container %s/%s: %v", group, name, err)
	return false
}

// quiesceAtEnd registers a cleanup, run before the agent's own (cleanups
// run last-registered first), that stops the group through the API and
// waits until containerd has no task left for it. A test that ends while
// the agent restarts a container or runs exec probes and hooks would
// otherwise stop agentd with a task create or an exec still in flight in
// containerd, racing the harness's deletion of the containers: a task
// can then outlive its deleted container and break a later test.
func quiesceAtEnd(t testing.TB, a *agentProc, group string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.api().Stop(ctx, group, true); err != nil {
			t.Errorf("stop %s at the end of the test: %v", group, err)
			return
		}
		st, err := a.api().Get(ctx, group)
		if err != nil {
			t.Errorf("get %s: %v", group, err)
			return
		}
		waitFor(t, 10*time.Second, "no task left for group "+group, func() (bool, error) {
			for _, c := range st.Containers {
				ctr, err := env.Client.LoadContainer(env.ctx(ctx), c.ID)
				if errdefs.IsNotFound(err) {
					continue
				}
				if err != nil {
					return false, err
				}
				if _, err := ctr.Task(env.ctx(ctx), nil); !errdefs.IsNotFound(err) {
					return false, fmt.Errorf("container %s: task lookup: %v", c.Name, err)
				}
			}
			return true, nil
		})
	})
}

// TestInitContainersRunInOrderBeforeOthers proves that init containers
// run one at a time in file order, each to completion, before the main
// container starts; that they stay completed (exit 0, not restarted)
// while the group runs; and that the group is Ready with them exited.
func TestInitContainersRunInOrderBeforeOthers(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "inits.toml", `name = "inits"
grace_period = "1s"
restart_backoff = { initial = "100ms" }
[[volume]]
name = "data"
type = "empty"

# init1 is the slower one: run at the same time as init2, its line would
# come second.
[[container]]
name = "init1"
role = "init"
image = "berth.local/busybox:latest"
command = ["sh", "-c", "sleep 0.3; echo init1 $(date +%s) >> /data/log"]
[[container.mount]]
volume = "data"
path = "/data"

[[container]]
name = "init2"
role = "init"
image = "berth.local/busybox:latest"
command = ["sh", "-c", "echo init2 $(date +%s) >> /data/log"]
[[container.mount]]
volume = "data"
path = "/data"

[[container]]
name = "app"
image = "berth.local/busybox:latest"
command = ["sh", "-c", "cat /data/log > /data/seen; exec sleep 3600"]
[[container.mount]]
volume = "data"
path = "/data"
`)
	st := waitGroup(t, a, "inits", 30*time.Second, "running and ready", func(st *api.GroupStatus) bool {
		return st.State == api.GroupRunning && st.Ready && st.Running() == 1
	})

	// What the main container found when it started: both init lines, in
	// file order.
	var seen string
	waitFor(t, 10*time.Second, "app to write /data/seen", func() (bool, error) {
		b, err := os.ReadFile(volumeFile(a, "inits", "data", "seen"))
		seen = string(b)
		return err == nil && seen != "", err
	})
	lines := strings.Split(strings.TrimSpace(seen), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "init1 ") || !strings.HasPrefix(lines[1], "init2 ") {
		t.Errorf("app found %q, want the lines of init1 then init2 and nothing else", seen)
	}

	init1, init2, app := containerNamed(t, st, "init1"), containerNamed(t, st, "init2"), containerNamed(t, st, "app")
	for _, c := range []api.ContainerStatus{init1, init2} {
		if c.State != api.ContainerExited || c.ExitCode == nil || *c.ExitCode != 0 || c.PID != 0 {
			t.Errorf("init container %s: state %s, exit code %v, pid %d; want Exited with code 0", c.Name, c.State, c.ExitCode, c.PID)
		}
		if c.Role != api.RoleInit {
			t.Errorf("init container %s has role %q", c.Name, c.Role)
		}
	}
	// The times containerd recorded: each step starts after the one
	// before has exited.
	if !init2.StartedAt.After(init1.FinishedAt) {
		t.Errorf("init2 started at %s, before init1 finished at %s", init2.StartedAt, init1.FinishedAt)
	}
	if !app.StartedAt.After(init2.FinishedAt) {
		t.Errorf("app started at %s, before init2 finished at %s", app.StartedAt, init2.FinishedAt)
	}

	// Completed once, started once, never restarted: checked after the
	// file was read, so a wrongly restarted init (backoff 100ms) has had
	// its time to show.
	st = getGroup(t, a, "inits")
	for _, n := range []string{"init1", "init2"} {
		if got := len(eventsOf(st, n, "Completed")); got != 1 {
			t.Errorf("%s: %d Completed events, want 1", n, got)
		}
		if got := len(eventsOf(st, n, "Started")); got != 1 {
			t.Errorf("%s: started %d times, want 1", n, got)
		}
		if c := containerNamed(t, st, n); c.Restarts != 0 || c.State != api.ContainerExited {
			t.Errorf("%s: %d restarts, state %s; want 0 restarts and Exited", n, c.Restarts, c.State)
		}
	}
	if st.Restarts != 0 || !st.Ready || st.State != api.GroupRunning {
		t.Errorf("group: state %s, ready %v, %d restarts; want Running, ready, 0 restarts", st.State, st.Ready, st.Restarts)
	}
	checkLegalTransitions(t, st)
}

// TestSidecarWithoutReadinessProbeDoesNotHoldMain proves that a sidecar
// without a readiness probe counts as ready once it runs, so the main
// containers follow it at once, also when the sidecar step is not the
// first thing the group does: after an init container, and in a start
// after a stop.
func TestSidecarWithoutReadinessProbeDoesNotHoldMain(t *testing.T) {
	const group = `name = "plain"
grace_period = "1s"
%s
[[container]]
name = "side"
role = "sidecar"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
[[container]]
name = "app"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`
	// side and app run; init, if there is one, has completed.
	running := func(st *api.GroupStatus) bool {
		if st.State != api.GroupRunning || len(st.Containers) == 0 {
			return false
		}
		for _, c := range st.Containers {
			if c.Role == api.RoleInit {
				if c.ExitCode == nil || *c.ExitCode != 0 {
					return false
				}
			} else if c.State != api.ContainerRunning {
				return false
			}
		}
		return true
	}
	t.Run("after an init container", func(t *testing.T) {
		a := startAgent(t, agentOpts{})
		applyTOML(t, a, "plain.toml", fmt.Sprintf(group, `[[container]]
name = "init"
role = "init"
image = "berth.local/busybox:latest"
command = ["true"]`))
		checkLegalTransitions(t, waitGroup(t, a, "plain", 15*time.Second, "sidecar and main running", running))
	})
	t.Run("in a start after a stop", func(t *testing.T) {
		a := startAgent(t, agentOpts{})
		applyTOML(t, a, "plain.toml", fmt.Sprintf(group, ""))
		waitGroup(t, a, "plain", 15*time.Second, "sidecar and main running", running)
		if err := a.api().Stop(context.Background(), "plain", true); err != nil {
			t.Fatal(err)
		}
		if err := a.api().Start(context.Background(), "plain"); err != nil {
			t.Fatal(err)
		}
		checkLegalTransitions(t, waitGroup(t, a, "plain", 15*time.Second, "sidecar and main running again", running))
	})
}

// TestFailingInitContainerRetriesAndNeverStartsMain proves that an init
// container that exits non-zero puts the group in BackOff with a reason,
// is retried with growing restart counts, and that the main container is
// never created while the init container has not completed.
func TestFailingInitContainerRetriesAndNeverStartsMain(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "badinit.toml", `name = "badinit"
grace_period = "1s"
restart_backoff = { initial = "100ms", max = "300ms" }
[[container]]
name = "migrate"
role = "init"
image = "berth.local/busybox:latest"
command = ["sh", "-c", "echo migration failed; exit 1"]
[[container]]
name = "app"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`)
	quiesceAtEnd(t, a, "badinit")
	st := waitGroup(t, a, "badinit", 30*time.Second, "in BackOff after the init container failed", func(st *api.GroupStatus) bool {
		return st.State == api.GroupBackOff && len(st.Containers) == 2 && st.Containers[0].ExitCode != nil
	})
	if st.Reason != "ContainerExited" || !strings.Contains(st.Message, "migrate") || !strings.Contains(st.Message, "code 1") {
		t.Errorf("BackOff reason %q, message %q; want ContainerExited naming migrate and code 1", st.Reason, st.Message)
	}
	if st.NextRestart.IsZero() {
		t.Errorf("a group in BackOff shows no next restart time")
	}
	first := containerNamed(t, st, "migrate").Restarts

	// The count grows from retry to retry: watch it go up twice.
	seen := []int{first}
	st = waitGroup(t, a, "badinit", 20*time.Second, "the init container retried twice more", func(st *api.GroupStatus) bool {
		r := containerNamed(t, st, "migrate").Restarts
		if r != seen[len(seen)-1] {
			seen = append(seen, r)
		}
		return r >= first+2
	})
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Errorf("restart count went down: %v", seen)
		}
	}
	t.Logf("restart counts seen: %v", seen)

	app := containerNamed(t, st, "app")
	if app.State != api.ContainerWaiting || app.PID != 0 || !app.StartedAt.IsZero() {
		t.Errorf("app: state %s, pid %d, started at %s; want Waiting, never started", app.State, app.PID, app.StartedAt)
	}
	if containerCreated(t, "badinit", "app") {
		t.Errorf("the main container was created although its init container never completed")
	}
	if evs := eventsOf(st, "app", "Started"); len(evs) > 0 {
		t.Errorf("app was started: %v", evs)
	}
	if st.Ready {
		t.Errorf("group is Ready with a failing init container")
	}
	if n := len(eventsOf(st, "migrate", "Started")); n < first+2 {
		t.Errorf("migrate started %d times, want at least %d", n, first+2)
	}
	checkLegalTransitions(t, st)
}

// TestMainStartsOnlyAfterSidecarIsReady proves that a main container is
// neither created nor started while a sidecar fails its readiness probe
// (the group shows WaitingForSidecars), and starts once the sidecar is
// ready.
func TestMainStartsOnlyAfterSidecarIsReady(t *testing.T) {
	a := startAgent(t, agentOpts{})
	// proxy is not ready until /data/ready exists.
	applyTOML(t, a, "withproxy.toml", `name = "withproxy"
grace_period = "2s"
[[volume]]
name = "data"
type = "empty"

[[container]]
name = "proxy"
role = "sidecar"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":9090", "--ready-file", "/data/ready"]
readiness = { http = { path = "/ready", port = 9090 }, period = "100ms", timeout = "100ms" }
[[container.mount]]
volume = "data"
path = "/data"

[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`)

	// Held for half a second: five failed readiness probes of the sidecar.
	st := waitGroup(t, a, "withproxy", 30*time.Second, "waiting for the sidecar, 5 readiness probes failed", func(st *api.GroupStatus) bool {
		if st.Reason != "WaitingForSidecars" || len(st.Containers) != 2 {
			return false
		}
		p := containerNamed(t, st, "proxy")
		return len(p.Probes) == 1 && p.Probes[0].Failures >= 5
	})
	if st.State != api.GroupStarting || !strings.Contains(st.Message, "proxy") {
		t.Errorf("state %s (%s: %s), want Starting, WaitingForSidecars naming proxy", st.State, st.Reason, st.Message)
	}
	if app := containerNamed(t, st, "app"); app.State != api.ContainerWaiting || app.PID != 0 {
		t.Errorf("app while the sidecar is not ready: state %s, pid %d; want Waiting", app.State, app.PID)
	}
	if containerCreated(t, "withproxy", "app") {
		t.Errorf("app was created while the sidecar was not ready")
	}
	if p := containerNamed(t, st, "proxy"); p.State != api.ContainerRunning || p.Ready {
		t.Errorf("proxy: state %s, ready %v; want Running, not ready", p.State, p.Ready)
	}

	// The sidecar cannot be ready before this write.
	wrote := time.Now()
	if code, body := nsDo(t, st.NetNS, "POST", "http://127.0.0.1:9090/write?path=/data/ready", "yes"); code != 200 {
		t.Fatalf("write the ready file through the sidecar: %d %s", code, body)
	}
	st = waitGroup(t, a, "withproxy", 20*time.Second, "running and ready", func(st *api.GroupStatus) bool {
		return allRunning(st) && st.Ready
	})
	app := containerNamed(t, st, "app")
	if !app.StartedAt.After(wrote) {
		t.Errorf("app started at %s, before the sidecar's ready file was written at %s", app.StartedAt, wrote)
	}
	ready := eventsOf(st, "proxy", "ContainerReady")
	if len(ready) == 0 {
		t.Fatalf("no ContainerReady event for proxy")
	}
	if !app.StartedAt.After(ready[0].Time) {
		t.Errorf("app started at %s, before proxy was ready at %s", app.StartedAt, ready[0].Time)
	}
	t.Logf("ready file written → proxy ready %s → app started %s",
		ready[0].Time.Sub(wrote).Round(time.Millisecond), app.StartedAt.Sub(ready[0].Time).Round(time.Millisecond))
	// Asked from inside the main container: the sidecar answers ready.
	waitHTTP(t, st.NetNS, "http://127.0.0.1:8080/health")
	if code, body := nsDo(t, st.NetNS, "GET", "http://127.0.0.1:8080/fetch?url=http://127.0.0.1:9090/ready", ""); code != 200 {
		t.Errorf("app fetching the sidecar's /ready: %d %s", code, body)
	}
	checkLegalTransitions(t, st)
}

// termGroup is a group of a sidecar and a main container that both note
// their SIGTERM in /data/term and take termDelay to exit.
func termGroup(name, grace, termDelay string) string {
	return fmt.Sprintf(`name = %q
grace_period = %q
[[volume]]
name = "data"
type = "empty"

[[container]]
name = "proxy"
role = "sidecar"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":9090", "--on-term-append", "/data/term", "--name", "sidecar", "--term-delay", %[3]q]
[[container.mount]]
volume = "data"
path = "/data"

[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--on-term-append", "/data/term", "--name", "main", "--term-delay", %[3]q]
[[container.mount]]
volume = "data"
path = "/data"
`, name, grace, termDelay)
}

// termTimes reads the "<name> term <unix-nanos>" lines of a term file, in
// order.
func termTimes(t testing.TB, path string) (names []string, at []time.Time) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "term" {
			t.Fatalf("%s: bad line %q", path, line)
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("%s: bad line %q: %v", path, line, err)
		}
		names, at = append(names, f[0]), append(at, time.Unix(0, ns))
	}
	return names, at
}

// startTermGroup applies termGroup and waits until both servers answer
// (their SIGTERM handlers are installed before they listen).
func startTermGroup(t testing.TB, a *agentProc, name, grace, termDelay string) {
	t.Helper()
	applyTOML(t, a, name+".toml", termGroup(name, grace, termDelay))
	st := waitGroup(t, a, name, 30*time.Second, "running", allRunning)
	waitHTTP(t, st.NetNS, "http://127.0.0.1:8080/health")
	waitHTTP(t, st.NetNS, "http://127.0.0.1:9090/health")
}

// TestStopRunsInReverseOrderWithinOneGrace proves that a stop signals the
// main container first and the sidecar only once the main container has
// exited, and that the whole sequence fits in one grace period when each
// container takes 300ms to exit.
func TestStopRunsInReverseOrderWithinOneGrace(t *testing.T) {
	a := startAgent(t, agentOpts{})
	const grace = 2 * time.Second
	startTermGroup(t, a, "rev", grace.String(), "300ms")

	start := time.Now()
	if err := a.api().Stop(context.Background(), "rev", true); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	st := getGroup(t, a, "rev")
	names, at := termTimes(t, volumeFile(a, "rev", "data", "term"))
	if len(names) != 2 || names[0] != "main" || names[1] != "sidecar" {
		t.Fatalf("SIGTERM order %v, want [main sidecar]", names)
	}
	app, proxy := containerNamed(t, st, "app"), containerNamed(t, st, "proxy")
	if at[1].Before(app.FinishedAt) {
		t.Errorf("sidecar got SIGTERM at %s, before the main container exited at %s", at[1], app.FinishedAt)
	}
	for _, c := range []api.ContainerStatus{app, proxy} {
		if c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("%s: exit code %v, want 0 (its own exit after SIGTERM)", c.Name, c.ExitCode)
		}
	}
	if hasEvent(st, "KilledAtGrace") {
		t.Errorf("a container was SIGKILLed although both exit within the grace period")
	}
	// Sequential: two 300ms exits one after the other; within one grace.
	if took < 600*time.Millisecond || took >= grace {
		t.Errorf("stop took %s, want between 600ms (two 300ms exits in turn) and the %s grace period", took, grace)
	}
	if st.State != api.GroupStopped {
		t.Errorf("state %s, want Stopped", st.State)
	}
	t.Logf("stop took %s; main exited %s after its SIGTERM, sidecar signalled %s after that",
		took.Round(time.Millisecond), app.FinishedAt.Sub(at[0]).Round(time.Millisecond), at[1].Sub(app.FinishedAt).Round(time.Millisecond))
	checkLegalTransitions(t, st)
}

// TestStopGivesSidecarOnlyWhatIsLeftOfTheGrace proves that the grace
// period bounds the whole stop, not each phase: a sidecar signalled after
// the main container took 700ms of a 1s grace is SIGKILLed at the 1s
// deadline, not 1s after its own SIGTERM.
func TestStopGivesSidecarOnlyWhatIsLeftOfTheGrace(t *testing.T) {
	a := startAgent(t, agentOpts{})
	const grace = time.Second
	startTermGroup(t, a, "shared", grace.String(), "700ms")

	start := time.Now()
	if err := a.api().Stop(context.Background(), "shared", true); err != nil {
		t.Fatal(err)
	}
	st := getGroup(t, a, "shared")
	app, proxy := containerNamed(t, st, "app"), containerNamed(t, st, "proxy")
	if app.ExitCode == nil || *app.ExitCode != 0 {
		t.Errorf("app: exit code %v, want 0 (exits 700ms after SIGTERM, within the grace)", app.ExitCode)
	}
	if proxy.ExitCode == nil || *proxy.ExitCode != 137 {
		t.Errorf("proxy: exit code %v, want 137 (SIGKILL at the group's deadline)", proxy.ExitCode)
	}
	if evs := eventsOf(st, "proxy", "KilledAtGrace"); len(evs) != 1 {
		t.Errorf("proxy: %d KilledAtGrace events, want 1", len(evs))
	}
	errAt := proxy.FinishedAt.Sub(start.Add(grace))
	t.Logf("sidecar killed %s after the group's deadline", errAt.Round(time.Millisecond))
	if errAt < 0 || errAt > 250*time.Millisecond {
		t.Errorf("sidecar exited %s after the group's grace deadline, want within [0, 250ms]", errAt)
	}
	checkLegalTransitions(t, st)
}

// TestAfterStartsGroupOnlyWhenDependencyIsReady proves that a group with
// after = ["db"] stays Pending (WaitingForDependency, naming db), with no
// container created, until db is Ready, and then starts; and that a group
// waiting for an undefined group says so and does not loop.
func TestAfterStartsGroupOnlyWhenDependencyIsReady(t *testing.T) {
	a := startAgent(t, agentOpts{})
	ctx := context.Background()
	_, err := a.api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{
		{Name: "db.toml", Content: `name = "db"
[[volume]]
name = "data"
type = "empty"
[[container]]
name = "db"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--ready-file", "/data/ready"]
readiness = { http = { path = "/ready", port = 8080 }, period = "100ms", timeout = "100ms" }
[[container.mount]]
volume = "data"
path = "/data"
`},
		{Name: "web.toml", Content: `name = "web"
after = ["db"]
[[container]]
name = "web"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`},
		{Name: "orphan.toml", Content: `name = "orphan"
after = ["nope"]
restart_backoff = { initial = "100ms" }
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`},
	}})
	if err != nil {
		t.Fatal(err)
	}

	// db runs, is not ready, and web waits for it.
	waitGroup(t, a, "db", 30*time.Second, "running, not ready, 3 readiness probes failed", func(st *api.GroupStatus) bool {
		return allRunning(st) && !st.Ready && len(st.Containers[0].Probes) == 1 && st.Containers[0].Probes[0].Failures >= 3
	})
	web := waitGroup(t, a, "web", 10*time.Second, "waiting for db", func(st *api.GroupStatus) bool {
		return st.State == api.GroupPending && st.Reason == "WaitingForDependency"
	})
	if web.Message != "db" {
		t.Errorf("web waits with message %q, want %q", web.Message, "db")
	}
	if c := containerNamed(t, web, "web"); c.State != api.ContainerWaiting || c.PID != 0 {
		t.Errorf("web's container while db is not ready: state %s, pid %d; want Waiting", c.State, c.PID)
	}
	if containerCreated(t, "web", "web") {
		t.Errorf("web's container was created while db was not ready")
	}

	became := time.Now()
	if err := os.WriteFile(volumeFile(a, "db", "data", "ready"), []byte("yes"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, a, "db", 10*time.Second, "ready", func(st *api.GroupStatus) bool { return st.Ready })
	web = waitGroup(t, a, "web", 20*time.Second, "running once db is ready", allRunning)
	if c := containerNamed(t, web, "web"); !c.StartedAt.After(became) {
		t.Errorf("web started at %s, before db could be ready (%s)", c.StartedAt, became)
	}
	checkLegalTransitions(t, web)

	// The group after an undefined one has waited all along, and done
	// nothing else.
	orphan := getGroup(t, a, "orphan")
	if orphan.State != api.GroupPending || orphan.Reason != "WaitingForDependency" || orphan.Message != "nope (not defined)" {
		t.Errorf("orphan: %s (%s: %q), want Pending (WaitingForDependency: \"nope (not defined)\")", orphan.State, orphan.Reason, orphan.Message)
	}
	if orphan.Restarts != 0 {
		t.Errorf("orphan: %d restarts, want 0", orphan.Restarts)
	}
	if containerCreated(t, "orphan", "app") {
		t.Errorf("orphan's container was created although it waits for an undefined group")
	}
	for _, e := range orphan.Events {
		switch e.Reason {
		case "Applied", "Accepted", "WaitingForDependency":
		default:
			t.Errorf("orphan: unexpected event %s: %s", e.Reason, e.Message)
		}
	}
	checkLegalTransitions(t, orphan)
}
