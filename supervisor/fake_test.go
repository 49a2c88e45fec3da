package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

var (
	_ Runtime   = (*fakeRuntime)(nil)
	_ Sandboxes = (*fakeSandboxes)(nil)
)

// call is one recorded call on the fakes. ID is the container ID, the image
// ref (EnsureImage) or the group (Ensure, Destroy).
type call struct {
	Op  string
	ID  string
	Sig syscall.Signal
	All bool
	Cfg *ContainerConfig // CreateContainer
	At  time.Time
}

func (c call) String() string {
	if c.Op == "Kill" {
		return fmt.Sprintf("Kill %s %s all=%v", c.ID, unixSignalName(c.Sig), c.All)
	}
	return c.Op + " " + c.ID
}

// fakeWorld is the state shared by fakeRuntime and fakeSandboxes: one
// ordered call log and the injected faults.
type fakeWorld struct {
	mu     sync.Mutex
	calls  []call
	faults map[string]error // "Op id" or "Op" (any id)
}

// record logs a call and returns the fault injected for it, if any.
// Callers hold w.mu.
func (w *fakeWorld) record(c call) error {
	c.At = time.Now()
	w.calls = append(w.calls, c)
	if err := w.faults[c.Op+" "+c.ID]; err != nil {
		return err
	}
	return w.faults[c.Op]
}

// fail makes every later call op(id) return err; id "" means any id.
func (w *fakeWorld) fail(op, id string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.faults[strings.TrimSpace(op+" "+id)] = err
}

// heal removes every injected fault.
func (w *fakeWorld) heal() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.faults)
}

// callsOf returns the calls of op (every op if ""), for id ("" = any).
func (w *fakeWorld) callsOf(op, id string) []call {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []call
	for _, c := range w.calls {
		if (op == "" || c.Op == op) && (id == "" || c.ID == id) {
			out = append(out, c)
		}
	}
	return out
}

func (w *fakeWorld) count(op, id string) int { return len(w.callsOf(op, id)) }

// index returns the position of the first call matching op and id at or
// after from, or -1.
func (w *fakeWorld) index(from int, op, id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := from; i < len(w.calls); i++ {
		if w.calls[i].Op == op && w.calls[i].ID == id {
			return i
		}
	}
	return -1
}

func (w *fakeWorld) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.calls)
}

// since returns the calls recorded after mark.
func (w *fakeWorld) since(mark int) []call {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls[mark:])
}

// stopMode says how a fake task reacts to a signal other than SIGKILL.
type stopMode struct {
	ignore bool          // exit only on SIGKILL
	delay  time.Duration // exit this long after the signal
	code   uint32
}

type fakeWaiter struct {
	ch   chan ExitStatus
	sent bool
}

type fakeTask struct {
	pid     uint32
	started time.Time
	exited  bool
	status  ExitStatus
	waiters []*fakeWaiter
}

type fakeContainer struct {
	cfg    *ContainerConfig // nil for one put there by addContainer
	labels map[string]string
	task   *fakeTask
}

// fakeRuntime keeps containers and tasks in memory. A started task runs
// until the test calls exit, or until a signal ends it (see stopMode).
type fakeRuntime struct {
	*fakeWorld
	containers map[string]*fakeContainer
	stopModes  map[string]stopMode
	images     map[string]string // ref → image StopSignal
	nextPID    uint32
}

type fakeSandboxes struct {
	*fakeWorld
	live map[string]bool
}

func newFakes() (*fakeRuntime, *fakeSandboxes) {
	w := &fakeWorld{faults: map[string]error{}}
	rt := &fakeRuntime{fakeWorld: w, containers: map[string]*fakeContainer{},
		stopModes: map[string]stopMode{}, images: map[string]string{}, nextPID: 1000}
	return rt, &fakeSandboxes{fakeWorld: w, live: map[string]bool{}}
}

// setStopMode configures how container id reacts to its stop signal.
func (rt *fakeRuntime) setStopMode(id string, m stopMode) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.stopModes[id] = m
}

// setImageStopSignal sets the StopSignal of an image's config.
func (rt *fakeRuntime) setImageStopSignal(ref, sig string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.images[ref] = sig
}

// addContainer puts a container in the runtime as an earlier agent would
// have left it: task running (pid > 0), exited (pid > 0, exited), or none.
func (rt *fakeRuntime) addContainer(id string, labels map[string]string, pid uint32, exited bool, code uint32) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	c := &fakeContainer{labels: labels}
	if pid > 0 {
		c.task = &fakeTask{pid: pid, started: time.Now().Add(-time.Hour), exited: exited,
			status: ExitStatus{Code: code, ExitedAt: time.Now()}}
	}
	rt.containers[id] = c
}

// exit ends container id's task with code. It reports false if no task
// was running.
func (rt *fakeRuntime) exit(id string, code uint32) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.exitLocked(id, code)
}

func (rt *fakeRuntime) exitLocked(id string, code uint32) bool {
	c := rt.containers[id]
	if c == nil || c.task == nil || c.task.exited {
		return false
	}
	t := c.task
	t.exited, t.status = true, ExitStatus{Code: code, ExitedAt: time.Now()}
	for _, w := range t.waiters {
		if !w.sent {
			w.sent = true
			w.ch <- t.status
		}
	}
	return true
}

// running reports whether id has a live task, and its PID.
func (rt *fakeRuntime) running(id string) (uint32, bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	c := rt.containers[id]
	if c == nil || c.task == nil || c.task.exited {
		return 0, false
	}
	return c.task.pid, true
}

// ids lists the containers that exist.
func (rt *fakeRuntime) ids() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return slices.Sorted(maps.Keys(rt.containers))
}

// subscribe returns an exit channel for t that, like containerd's, reports
// an error when ctx ends first. Callers hold rt.mu.
func (rt *fakeRuntime) subscribe(ctx context.Context, t *fakeTask) <-chan ExitStatus {
	w := &fakeWaiter{ch: make(chan ExitStatus, 1)}
	if t.exited {
		w.sent = true
		w.ch <- t.status
		return w.ch
	}
	t.waiters = append(t.waiters, w)
	context.AfterFunc(ctx, func() {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if !w.sent {
			w.sent = true
			w.ch <- ExitStatus{Err: ctx.Err()}
		}
	})
	return w.ch
}

func (rt *fakeRuntime) EnsureImage(ctx context.Context, ref string) (*ImageConfig, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.record(call{Op: "EnsureImage", ID: ref}); err != nil {
		return nil, err
	}
	return &ImageConfig{Ref: ref, StopSignal: rt.images[ref]}, nil
}

func (rt *fakeRuntime) CreateContainer(ctx context.Context, c *ContainerConfig) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	cp := *c
	cp.Labels = maps.Clone(c.Labels)
	if err := rt.record(call{Op: "CreateContainer", ID: c.ID, Cfg: &cp}); err != nil {
		return err
	}
	if rt.containers[c.ID] != nil {
		return fmt.Errorf("container %s: %w", c.ID, api.ErrAlreadyExists)
	}
	rt.containers[c.ID] = &fakeContainer{cfg: &cp, labels: cp.Labels}
	return nil
}

func (rt *fakeRuntime) StartTask(ctx context.Context, id string) (TaskInfo, <-chan ExitStatus, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.record(call{Op: "StartTask", ID: id}); err != nil {
		return TaskInfo{}, nil, err
	}
	c := rt.containers[id]
	if c == nil {
		return TaskInfo{}, nil, fmt.Errorf("container %s: %w", id, api.ErrNotFound)
	}
	if c.task != nil {
		return TaskInfo{}, nil, fmt.Errorf("task %s: %w", id, api.ErrAlreadyExists)
	}
	rt.nextPID++
	c.task = &fakeTask{pid: rt.nextPID, started: time.Now()}
	return TaskInfo{PID: c.task.pid, StartedAt: c.task.started}, rt.subscribe(ctx, c.task), nil
}

func (rt *fakeRuntime) AttachTask(ctx context.Context, id string) (TaskInfo, <-chan ExitStatus, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.record(call{Op: "AttachTask", ID: id}); err != nil {
		return TaskInfo{}, nil, err
	}
	c := rt.containers[id]
	if c == nil || c.task == nil {
		return TaskInfo{}, nil, fmt.Errorf("task %s: %w", id, api.ErrNotFound)
	}
	return TaskInfo{PID: c.task.pid, StartedAt: c.task.started}, rt.subscribe(ctx, c.task), nil
}

func (rt *fakeRuntime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.record(call{Op: "Kill", ID: id, Sig: sig, All: all}); err != nil {
		return err
	}
	c := rt.containers[id]
	if c == nil || c.task == nil || c.task.exited {
		return fmt.Errorf("task %s: %w", id, api.ErrNotFound)
	}
	m := rt.stopModes[id]
	switch {
	case sig == syscall.SIGKILL:
		rt.exitLocked(id, 137)
	case m.ignore:
	case m.delay == 0:
		rt.exitLocked(id, m.code)
	default:
		t := c.task
		time.AfterFunc(m.delay, func() {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			if rt.containers[id] != nil && rt.containers[id].task == t {
				rt.exitLocked(id, m.code)
			}
		})
	}
	return nil
}

func (rt *fakeRuntime) DeleteTask(ctx context.Context, id string) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.record(call{Op: "DeleteTask", ID: id}); err != nil {
		return err
	}
	c := rt.containers[id]
	if c == nil || c.task == nil {
		return fmt.Errorf("task %s: %w", id, api.ErrNotFound)
	}
	if !c.task.exited {
		return fmt.Errorf("task %s is running: cannot delete", id)
	}
	c.task = nil
	return nil
}

func (rt *fakeRuntime) DeleteContainer(ctx context.Context, id string) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.record(call{Op: "DeleteContainer", ID: id}); err != nil {
		return err
	}
	if rt.containers[id] == nil {
		return fmt.Errorf("container %s: %w", id, api.ErrNotFound)
	}
	rt.exitLocked(id, 137)
	delete(rt.containers, id)
	return nil
}

func (rt *fakeRuntime) ListContainers(ctx context.Context, labels map[string]string) ([]ContainerInfo, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.record(call{Op: "ListContainers"}); err != nil {
		return nil, err
	}
	var out []ContainerInfo
	for _, id := range slices.Sorted(maps.Keys(rt.containers)) {
		c := rt.containers[id]
		match := true
		for k, v := range labels {
			match = match && c.labels[k] == v
		}
		if match {
			out = append(out, ContainerInfo{ID: id, Labels: maps.Clone(c.labels)})
		}
	}
	return out, nil
}

func (sb *fakeSandboxes) Ensure(ctx context.Context, spec *api.GroupSpec) (*Sandbox, error) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := sb.record(call{Op: "Ensure", ID: spec.Name}); err != nil {
		return nil, err
	}
	sb.live[spec.Name] = true
	s := &Sandbox{Group: spec.Name, NetNSPath: "/run/berth/netns/" + spec.Name,
		Volumes: map[string]string{}, Files: map[string]string{"/etc/hosts": "/var/lib/berth/" + spec.Name + "/hosts"}}
	if spec.ShareIPC {
		s.IPCNSPath = "/run/berth/ipcns/" + spec.Name
	}
	for _, v := range spec.Volumes {
		s.Volumes[v.Name] = "/var/lib/berth/" + spec.Name + "/volumes/" + v.Name
	}
	return s, nil
}

func (sb *fakeSandboxes) Destroy(ctx context.Context, group string) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := sb.record(call{Op: "Destroy", ID: group}); err != nil {
		return err
	}
	delete(sb.live, group)
	return nil
}

// List makes Recover find sandboxes without containers too.
func (sb *fakeSandboxes) List() []string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return slices.Sorted(maps.Keys(sb.live))
}

// harness runs a Supervisor against the fakes.
type harness struct {
	t      *testing.T
	rt     *fakeRuntime
	sb     *fakeSandboxes
	cfg    Config
	sup    *Supervisor
	cancel context.CancelFunc
	done   chan struct{}

	evMu   sync.Mutex
	events []api.Event
}

// testBackoff restarts quickly; start failures wait for Retry.
var testBackoff = Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, Factor: 2, ResetAfter: time.Hour}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t}
	h.rt, h.sb = newFakes()
	h.cfg = Config{Runtime: h.rt, Sandboxes: h.sb, Logger: slog.New(slog.DiscardHandler),
		Backoff: testBackoff, KillWait: 2 * time.Second, Events: h.onEvent}
	t.Cleanup(func() {
		h.stop()
		for _, e := range h.eventsOf("IllegalTransition") {
			t.Errorf("illegal state transition: %s", e.Message)
		}
	})
	return h
}

func (h *harness) onEvent(e api.Event) {
	h.evMu.Lock()
	defer h.evMu.Unlock()
	h.events = append(h.events, e)
}

// eventsOf returns the events with reason ("" = all).
func (h *harness) eventsOf(reason string) []api.Event {
	h.evMu.Lock()
	defer h.evMu.Unlock()
	var out []api.Event
	for _, e := range h.events {
		if reason == "" || e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// start runs a new Supervisor on the fakes, as agentd does: Recover, then
// Run. It returns what Recover found.
func (h *harness) start() []string {
	h.t.Helper()
	h.sup = New(h.cfg)
	names, err := h.sup.Recover(context.Background())
	if err != nil {
		h.t.Fatalf("Recover: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		_ = h.sup.Run(ctx)
	}(h.done)
	return names
}

// stop ends supervision (as an agent shutdown does) and waits for Run.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		h.t.Errorf("Supervisor.Run did not return after its context ended")
	}
	h.cancel = nil
}

// waitState waits until the group is in state (with reason, unless "").
func (h *harness) waitState(name string, state api.GroupState, reason string) api.GroupStatus {
	h.t.Helper()
	var st api.GroupStatus
	eventually(h.t, fmt.Sprintf("group %s %s %s", name, state, reason), func() bool {
		var ok bool
		st, ok = h.sup.Status(name)
		return ok && st.State == state && (reason == "" || st.Reason == reason)
	}, func() string { return fmt.Sprintf("status %+v; calls %v", st, h.rt.callsOf("", "")) })
	return st
}

// waitRunning waits until every container of the group runs.
func (h *harness) waitRunning(name string, n int) api.GroupStatus {
	h.t.Helper()
	var st api.GroupStatus
	eventually(h.t, fmt.Sprintf("group %s running %d containers", name, n), func() bool {
		var ok bool
		st, ok = h.sup.Status(name)
		return ok && st.State == api.GroupRunning && st.Running() == n
	}, func() string { return fmt.Sprintf("status %+v", st) })
	return st
}

// testGroup is a valid group of containers with image "img/NAME", grace
// period 100ms, restart policy always; generation gen, hash "hash-GEN".
func testGroup(name string, gen int64, containers ...string) Group {
	spec := &api.GroupSpec{Name: name, GracePeriod: api.Duration(100 * time.Millisecond), Restart: api.RestartAlways}
	for _, c := range containers {
		spec.Containers = append(spec.Containers, api.ContainerSpec{Name: c, Image: "img/" + c})
	}
	return Group{Spec: spec, Generation: gen, SpecHash: fmt.Sprintf("hash-%d", gen), Run: true, Source: "api"}
}

// eventually polls cond every 5ms for up to 5s. detail, if given, is
// added to the failure message.
func eventually(t *testing.T, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			msg := "timed out waiting for " + what
			for _, d := range detail {
				msg += "; " + d()
			}
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// consistently checks that cond holds for d. It proves an absence (no
// restart, no kill), which no condition can be awaited for.
func consistently(t *testing.T, d time.Duration, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if !cond() {
			msg := what + " no longer holds"
			for _, d := range detail {
				msg += "; " + d()
			}
			t.Fatal(msg)
		}
	}
}

var errBoom = errors.New("boom")
