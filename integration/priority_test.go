package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// Admission by priority on a node of one core: who is preempted, who is
// protected, who waits and who comes back, with real containers.

// smallNode offers admission one core, 1GiB and plenty of pids, and keeps
// the pressure monitor quiet (a zero threshold disables it).
const smallNode = `[node]
cpu = "1"
memory = "1GiB"
pids = 100000

[eviction]
memory_hard = "0"
pids_hard = 0
`

// termDelay is how long a test group's SIGTERM handler takes to exit.
const termDelay = 300 * time.Millisecond

// priorityNode is an agent started with its own config, and a host
// directory its groups may mount: nodeGroup mounts it at /shared, where
// their SIGTERM handlers append to /shared/term.
type priorityNode struct {
	*agentProc
	Shared string
}

// startNodeAgent writes config to a file and starts an agent with it,
// allowing host volumes under a fresh shared directory.
func startNodeAgent(t *testing.T, config string) *priorityNode {
	t.Helper()
	dir := env.newDir(t, "c")
	path := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(path, []byte(baseAgentConfig(config)), 0o644); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(dir, "shared")
	if err := os.MkdirAll(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, agentOpts{Flags: map[string]string{"--config": path, "--host-path-prefix": shared}})
	// Runs before the agent stops (cleanups run last-in first-out): the
	// agent's own admission events are in its history, not its log.
	t.Cleanup(func() {
		if t.Failed() {
			logEvents(t, a)
		}
	})
	return &priorityNode{agentProc: a, Shared: shared}
}

// logEvents writes the agent's event history to the test log.
func logEvents(t testing.TB, a *agentProc) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	err := a.api().Events(ctx, api.EventOptions{}, func(e api.Event) error {
		fmt.Fprintf(&b, "  %s %-8s %-10s %-20s %s\n", e.Time.Format("15:04:05.000"), e.Group, e.Container, e.Reason, e.Message)
		return nil
	})
	t.Logf("agent events (err %v):\n%s", err, b.String())
}

// nodeGroup is a group of one testapp that asks cpu of the node and whose
// SIGTERM handler appends "<name> term <nanos>" to /shared/term, then
// exits after termDelay. It ticks in its log every 100ms once the handler
// is installed (see waitTermHandler). extra holds more top-level keys.
func (n *priorityNode) nodeGroup(name string, priority int, cpu, extra string) string {
	return fmt.Sprintf(`name = %q
priority = %d
grace_period = "5s"
%s
[[volume]]
name = "shared"
type = "host"
path = %q

[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep", "--term-delay", %q, "--on-term-append", "/shared/term", "--name", %q, "--log-every", "100ms"]
mount = [{ volume = "shared", path = "/shared" }]
resources = { requests = { cpu = %q } }
`, name, priority, extra, n.Shared, termDelay.String(), name, cpu)
}

// applyRunning applies a nodeGroup and waits until it runs with its
// SIGTERM handler installed.
func (n *priorityNode) applyRunning(t *testing.T, name string, priority int, cpu, extra string) *api.GroupStatus {
	t.Helper()
	applyTOML(t, n.agentProc, name+".toml", n.nodeGroup(name, priority, cpu, extra))
	st := waitGroup(t, n.agentProc, name, 30*time.Second, "running", allRunning)
	waitTermHandler(t, n.agentProc, name)
	return st
}

// waitTermHandler waits for the first tick in the group's log: testapp
// installs its SIGTERM handler before it starts ticking. (A PID 1 without
// a handler ignores SIGTERM and would only die at the grace period.)
func waitTermHandler(t testing.TB, a *agentProc, name string) {
	t.Helper()
	waitFor(t, 20*time.Second, "group "+name+" to log a tick", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		found := errors.New("found")
		err := a.api().Logs(ctx, name, api.LogOptions{Tail: -1}, func(e api.LogEntry) error {
			if strings.HasPrefix(e.Line, "tick ") {
				return found
			}
			return nil
		})
		if errors.Is(err, found) {
			return true, nil
		}
		return false, err
	})
}

// termTimes reads /shared/term: when each group's SIGTERM handler ran.
func (n *priorityNode) termTimes(t testing.TB) map[string]time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Shared, "term"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "term" {
			t.Fatalf("term file line %q: want \"<name> term <unix-nanos>\"", line)
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("term file line %q: %v", line, err)
		}
		out[f[0]] = time.Unix(0, ns)
	}
	return out
}

func nodeStatus(t testing.TB, a *agentProc) *api.NodeStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := a.api().Node(ctx)
	if err != nil {
		t.Fatalf("node status: %v", err)
	}
	return ns
}

func deleteGroup(t testing.TB, a *agentProc, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.api().Delete(ctx, name, true); err != nil {
		t.Fatalf("delete %s: %v", name, err)
	}
}

func isState(state api.GroupState, reason string) func(*api.GroupStatus) bool {
	return func(st *api.GroupStatus) bool { return st.State == state && st.Reason == reason }
}

func countEvents(st *api.GroupStatus, reason string) int {
	n := 0
	for _, e := range st.Events {
		if e.Reason == reason {
			n++
		}
	}
	return n
}

func eventMessage(st *api.GroupStatus, reason string) string {
	for _, e := range st.Events {
		if e.Reason == reason {
			return e.Message
		}
	}
	return ""
}

// checkUntouched fails the test unless the group still runs the same
// processes it ran before, and was never told to make room.
func checkUntouched(t testing.TB, a *agentProc, before *api.GroupStatus) {
	t.Helper()
	st := getGroup(t, a, before.Name)
	if !allRunning(st) || !reflect.DeepEqual(pids(st), pids(before)) {
		t.Errorf("group %s was disturbed: state %s (%s), pids %v → %v", st.Name, st.State, st.Reason, pids(before), pids(st))
	}
	for _, r := range []string{"Preempted", "NodePressure"} {
		if hasEvent(st, r) {
			t.Errorf("group %s has a %s event: %s", st.Name, r, eventMessage(st, r))
		}
	}
}

// checkPreempted fails the test unless every victim is Evicted for
// preemption, with no container left running, and exited before any
// container of the preemptor started: the node never runs both. It
// returns the victims' statuses and the last victim exit.
func checkPreempted(t testing.TB, a *agentProc, preemptor *api.GroupStatus, victims ...string) (map[string]*api.GroupStatus, time.Time) {
	t.Helper()
	out := map[string]*api.GroupStatus{}
	var lastExit time.Time
	for _, name := range victims {
		st := getGroup(t, a, name)
		out[name] = st
		if st.State != api.GroupEvicted || st.Reason != "Preempted" || st.Running() != 0 {
			t.Errorf("victim %s: state %s (%s: %s), %d running; want Evicted (Preempted), none running",
				name, st.State, st.Reason, st.Message, st.Running())
		}
		if !hasEvent(st, "Preempted") {
			t.Errorf("victim %s has no Preempted event", name)
		}
		// Admitted once, at its start: not again into the room it freed
		// while the preemptor waited for the other victims.
		if n := countEvents(st, "Admitted"); n != 1 {
			t.Errorf("victim %s was admitted %d times, want once", name, n)
		}
		for _, c := range st.Containers {
			if c.FinishedAt.After(lastExit) {
				lastExit = c.FinishedAt
			}
		}
	}
	for _, c := range preemptor.Containers {
		if c.StartedAt.Before(lastExit) {
			t.Errorf("%s/%s started at %s, %s before the last victim exited: the node ran both",
				preemptor.Name, c.Name, c.StartedAt.Format("15:04:05.000"), lastExit.Sub(c.StartedAt))
		}
	}
	return out, lastExit
}

func TestHigherPriorityPreemptsExactlyTheLowestGracefully(t *testing.T) {
	n := startNodeAgent(t, smallNode)
	// 250m + 250m + 500m fill the core. Evicting "important" alone would
	// also make room for 500m, with fewer victims, but lower priorities
	// go first.
	n.applyRunning(t, "batch", -10, "250m", "")
	n.applyRunning(t, "normal", 0, "250m", "")
	important := n.applyRunning(t, "important", 10, "500m", "")
	if free := nodeStatus(t, n.agentProc).Free; free.CPU != 0 {
		t.Fatalf("node free cpu = %s with three groups admitted, want 0", free.CPU)
	}

	applyTOML(t, n.agentProc, "urgent.toml", n.nodeGroup("urgent", 100, "500m", ""))
	urgent := waitGroup(t, n.agentProc, "urgent", 30*time.Second, "running", allRunning)

	victims, lastExit := checkPreempted(t, n.agentProc, urgent, "batch", "normal")
	terms := n.termTimes(t)
	for name, st := range victims {
		if hasEvent(st, "KilledAtGrace") {
			t.Errorf("victim %s was SIGKILLed; its handler takes %s of a 5s grace", name, termDelay)
		}
		c := st.Containers[0]
		if c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("victim %s exit code = %v, want 0 (its SIGTERM handler's own exit)", name, c.ExitCode)
		}
		term, ok := terms[name]
		if !ok {
			t.Errorf("victim %s: its SIGTERM handler did not run (no line in the term file: %v)", name, terms)
		} else if ran := c.FinishedAt.Sub(term); ran < termDelay-20*time.Millisecond {
			t.Errorf("victim %s exited %s after SIGTERM, before its %s handler could finish", name, ran, termDelay)
		}
	}
	checkUntouched(t, n.agentProc, important)
	if _, ok := terms["important"]; ok {
		t.Errorf("important (priority 10) got SIGTERM")
	}

	if msg := eventMessage(urgent, "Preempting"); !strings.Contains(msg, "evicting batch, normal ") {
		t.Errorf("urgent's Preempting event = %q, want it to name batch, normal (stop order)", msg)
	}
	for _, c := range urgent.Containers {
		wait := c.StartedAt.Sub(lastExit)
		t.Logf("urgent/%s started %s after the last victim exited", c.Name, wait)
		if wait > time.Second {
			t.Errorf("urgent/%s started %s after the last victim exited, want < 1s", c.Name, wait)
		}
	}
}

func TestEqualPriorityNeverPreempts(t *testing.T) {
	n := startNodeAgent(t, smallNode)
	first := n.applyRunning(t, "first", 0, "600m", "")

	applyTOML(t, n.agentProc, "second.toml", n.nodeGroup("second", 0, "600m", ""))
	second := waitGroup(t, n.agentProc, "second", 30*time.Second, "Pending (Unschedulable)", isState(api.GroupPending, "Unschedulable"))
	for _, want := range []string{"needs cpu 600m", "free cpu 400m", "first (priority 0 ≥ 0)"} {
		if !strings.Contains(second.Message, want) {
			t.Errorf("second's message %q does not say %q", second.Message, want)
		}
	}
	if second.Running() != 0 || hasEvent(second, "Admitted") || hasEvent(second, "Preempting") {
		t.Errorf("second: %d running, Admitted %v, Preempting %v; want none", second.Running(),
			hasEvent(second, "Admitted"), hasEvent(second, "Preempting"))
	}
	checkUntouched(t, n.agentProc, first)
	if terms := n.termTimes(t); len(terms) > 0 {
		t.Errorf("SIGTERM handlers ran: %v", terms)
	}
	if ns := nodeStatus(t, n.agentProc); ns.Admitted != 1 || ns.Pending != 1 || ns.Evicted != 0 {
		t.Errorf("node: %d admitted, %d pending, %d evicted; want 1, 1, 0", ns.Admitted, ns.Pending, ns.Evicted)
	}
}

func TestNonPreemptibleGroupIsProtected(t *testing.T) {
	n := startNodeAgent(t, smallNode)
	keeper := n.applyRunning(t, "keeper", -10, "400m", "preemptible = false")
	n.applyRunning(t, "spare", 0, "600m", "")

	// The lowest priority is protected: the preemptor takes the next one.
	applyTOML(t, n.agentProc, "urgent.toml", n.nodeGroup("urgent", 100, "600m", ""))
	urgent := waitGroup(t, n.agentProc, "urgent", 30*time.Second, "running", allRunning)
	checkPreempted(t, n.agentProc, urgent, "spare")

	// Room only the protected group could give: the preemptor waits.
	applyTOML(t, n.agentProc, "urgent2.toml", n.nodeGroup("urgent2", 100, "400m", ""))
	u2 := waitGroup(t, n.agentProc, "urgent2", 30*time.Second, "Pending (Unschedulable)", isState(api.GroupPending, "Unschedulable"))
	if !strings.Contains(u2.Message, "keeper (priority -10, not preemptible)") {
		t.Errorf("urgent2's message %q does not name keeper as not preemptible", u2.Message)
	}
	if hasEvent(u2, "Preempting") {
		t.Errorf("urgent2 preempted: %s", eventMessage(u2, "Preempting"))
	}
	checkUntouched(t, n.agentProc, keeper)
	if _, ok := n.termTimes(t)["keeper"]; ok {
		t.Errorf("keeper (preemptible = false) got SIGTERM")
	}
}

func TestPendingGroupsAreAdmittedByPriorityWhenRoomAppears(t *testing.T) {
	n := startNodeAgent(t, smallNode)
	n.applyRunning(t, "holder", 100, "600m", "")
	// modest asks first: age does not beat priority.
	for _, g := range []struct {
		name     string
		priority int
	}{{"modest", 5}, {"eager", 50}} {
		applyTOML(t, n.agentProc, g.name+".toml", n.nodeGroup(g.name, g.priority, "600m", ""))
		waitGroup(t, n.agentProc, g.name, 30*time.Second, "Pending (Unschedulable)", isState(api.GroupPending, "Unschedulable"))
	}

	deleteGroup(t, n.agentProc, "holder")
	waitGroup(t, n.agentProc, "eager", 30*time.Second, "running", allRunning)
	modest := waitGroup(t, n.agentProc, "modest", 10*time.Second, "Unschedulable, blocked by eager", func(st *api.GroupStatus) bool {
		return isState(api.GroupPending, "Unschedulable")(st) && strings.Contains(st.Message, "eager (priority 50 ≥ 5)")
	})
	if modest.Running() != 0 || hasEvent(modest, "Admitted") || hasEvent(modest, "Started") {
		t.Errorf("modest (priority 5) was admitted or started before eager (priority 50): %d running", modest.Running())
	}
}

func TestEvictedGroupReturnsWhenRoomAppears(t *testing.T) {
	n := startNodeAgent(t, smallNode)
	waiter := n.applyRunning(t, "waiter", 0, "500m", "")
	n.applyRunning(t, "quitter", 0, "500m", `on_evict = "stop"`)

	applyTOML(t, n.agentProc, "urgent.toml", n.nodeGroup("urgent", 100, "1", ""))
	urgent := waitGroup(t, n.agentProc, "urgent", 30*time.Second, "running", allRunning)
	if checkPreempted(t, n.agentProc, urgent, "waiter", "quitter"); t.Failed() {
		t.FailNow()
	}

	deleteGroup(t, n.agentProc, "urgent")
	back := waitGroup(t, n.agentProc, "waiter", 30*time.Second, "running again", allRunning)
	if reflect.DeepEqual(pids(back), pids(waiter)) {
		t.Errorf("waiter runs the pids it had before its eviction: %v", pids(back))
	}
	// Both fit in the room that appeared and were considered in the same
	// pass: quitter stays down because of its policy, not for lack of room.
	quitter := getGroup(t, n.agentProc, "quitter")
	if quitter.State != api.GroupEvicted || quitter.Running() != 0 {
		t.Errorf("quitter (on_evict = \"stop\"): state %s (%s), %d running; want Evicted", quitter.State, quitter.Reason, quitter.Running())
	}
	if ns := nodeStatus(t, n.agentProc); ns.Admitted != 1 || ns.Evicted != 1 || ns.Free.CPU != 500 {
		t.Errorf("node: %d admitted, %d evicted, free cpu %s; want 1, 1, 500m", ns.Admitted, ns.Evicted, ns.Free.CPU)
	}
}

func TestPreemptingAStartingGroupWaitsForItsExit(t *testing.T) {
	n := startNodeAgent(t, smallNode)
	// The victim is admitted and starting, not running yet, when the
	// preemptor arrives: its room is free only once it has stopped. (It
	// may get SIGTERM before its handler is set up: a 1s grace bounds
	// that.)
	applyTOML(t, n.agentProc, "early.toml", strings.Replace(n.nodeGroup("early", 0, "1", ""), `"5s"`, `"1s"`, 1))
	applyTOML(t, n.agentProc, "urgent.toml", n.nodeGroup("urgent", 100, "1", ""))
	urgent := waitGroup(t, n.agentProc, "urgent", 30*time.Second, "running", allRunning)
	checkPreempted(t, n.agentProc, urgent, "early")
}
