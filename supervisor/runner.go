package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/api"
)

// More labels, read back by reattach and by the removal of orphans whose
// spec the agent no longer has.
const (
	LabelStopSignal = "berth.stop-signal"
	LabelGrace      = "berth.grace-period"
)

// DefaultGrace is the grace period of a group whose spec is unknown.
const DefaultGrace = 30 * time.Second

type desired struct {
	group  Group
	remove bool
}

// ctr is the runner's view of one container.
type ctr struct {
	name       string
	id         string
	spec       *api.ContainerSpec
	labels     map[string]string
	created    bool // the containerd container exists
	running    bool
	unknown    bool // its task could not be watched; reattach
	done       bool // exited, and the restart policy says no more
	pid        uint32
	startedAt  time.Time
	finishedAt time.Time
	exitCode   *uint32
	restarts   int
	reason     string
	taskGen    int // which start an exit belongs to
	oom        bool

	oomSeen bool // an OOM event came for the current task

	// Lifecycle and health.
	initDone  bool // an init container that completed in this run
	ready     bool // readiness verdict (running, when it has no probe)
	startupOK bool // the startup probe passed (or there is none)
	postStart bool // the post_start hook is done (or there is none)
	probes    map[probeKind]*api.ProbeStatus
	hooks     map[string]api.HookStatus
	stopProbe context.CancelFunc // ends the task's probes and hooks
}

// role is the container's role; main for a container recovered without
// its spec.
func (c *ctr) role() api.Role {
	if c.spec == nil {
		return api.RoleMain
	}
	return c.spec.EffectiveRole()
}

type exitMsg struct {
	name string
	gen  int
	st   ExitStatus
}

// runner owns one group: its run goroutine is the only code that changes
// the group's containers, so no two operations on a group ever overlap.
// Other goroutines talk to it through set (desired state) and read
// snapshot (status).
type runner struct {
	s    *Supervisor
	name string
	log  *slog.Logger

	mu     sync.Mutex
	want   desired
	status api.GroupStatus
	wake   chan struct{} // capacity 1: coalesced "want changed"
	exits  chan exitMsg
	health chan healthMsg // probe results and hook outcomes
	gone   chan struct{}  // closed when a removal finished
	// retryNow asks the next reconcile to skip the BackOff delay.
	retryNow bool
	ended    atomic.Bool

	// Owned by the run goroutine.
	existing      []ContainerInfo
	recoveredHash string
	applied       *Group
	ctrs          map[string]*ctr
	order         []string
	sandbox       *Sandbox
	tracker       *restartTracker
	retryAt       time.Time
	removedAll    bool
	// everRunning: the group reached Running since it was (re)created;
	// attemptFresh: the current start attempt began from nothing, so a
	// failure rolls it back whole.
	everRunning, attemptFresh bool
	// restored is the persisted record of a reattached group: its probe
	// verdicts seed the resumed probes.
	restored GroupRecord
	// stoppedOnRequest: the group was stopped by Set(Run=false), so a later
	// Set(Run=true) starts it again; a group the restart policy ended
	// stays down unless restartRequested (Retry) says otherwise.
	stoppedOnRequest, restartRequested bool
}

func newRunner(s *Supervisor, name string, existing []ContainerInfo) *runner {
	return &runner{
		s: s, name: name, log: s.log.With("group", name),
		status:   api.GroupStatus{Name: name, CreatedAt: time.Now()},
		wake:     make(chan struct{}, 1),
		exits:    make(chan exitMsg, 16),
		health:   make(chan healthMsg, 64),
		gone:     make(chan struct{}),
		existing: existing,
		ctrs:     map[string]*ctr{},
		tracker:  newRestartTracker(api.RestartAlways, s.cfg.Backoff),
	}
}

func (r *runner) finished() bool { return r.ended.Load() }

func (r *runner) set(d desired) {
	r.mu.Lock()
	r.want = d
	if !d.remove {
		r.status.Generation = d.group.Generation
		r.status.Source = d.group.Source
		r.status.Priority = d.group.Priority
		r.status.Spec = d.group.Spec
	}
	r.mu.Unlock()
	r.poke()
}

func (r *runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *runner) desired() desired {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retryNow {
		r.retryNow = false
		r.retryAt = time.Time{}
		r.restartRequested = true
	}
	return r.want
}

func (r *runner) snapshot() api.GroupStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Containers = append([]api.ContainerStatus(nil), r.status.Containers...)
	return st
}

// publish copies the containers' state into the status. Run goroutine only.
func (r *runner) publish() {
	cs := make([]api.ContainerStatus, 0, len(r.order))
	restarts := 0
	for _, n := range r.order {
		c := r.ctrs[n]
		st := api.ContainerStatus{Name: n, ID: c.id, Restarts: c.restarts, Reason: c.reason,
			StartedAt: c.startedAt, FinishedAt: c.finishedAt, ExitCode: c.exitCode,
			Role: c.role(), Ready: c.running && c.ready, OOMKilled: c.oom}
		if c.spec != nil {
			st.Image = c.spec.Image
		}
		for _, k := range []probeKind{probeStartup, probeLiveness, probeReadiness} {
			if p := c.probes[k]; p != nil {
				st.Probes = append(st.Probes, *p)
			}
		}
		for _, k := range []string{"post_start", "pre_stop"} {
			if h, ok := c.hooks[k]; ok {
				st.Hooks = append(st.Hooks, h)
			}
		}
		switch {
		case c.running:
			st.State, st.PID = api.ContainerRunning, c.pid
		case c.unknown:
			st.State = api.ContainerUnknown
		case c.exitCode != nil:
			st.State = api.ContainerExited
		default:
			st.State = api.ContainerWaiting
		}
		restarts += c.restarts
		cs = append(cs, st)
	}
	ready := len(r.order) > 0
	for _, n := range r.order {
		c := r.ctrs[n]
		if c.role() == api.RoleInit {
			ready = ready && c.initDone
		} else {
			ready = ready && c.running && c.ready
		}
	}
	r.mu.Lock()
	wasReady := r.status.Ready
	r.status.Containers = cs
	r.status.Restarts = restarts
	r.status.Ready = ready
	r.status.NextRestart = time.Time{}
	if r.status.State == api.GroupBackOff {
		r.status.NextRestart = r.retryAt
	}
	if r.sandbox != nil {
		r.status.NetNS = r.sandbox.NetNSPath
		r.status.Network = r.sandbox.Network
	}
	r.mu.Unlock()
	if ready != wasReady {
		if ready {
			r.event(api.EventNormal, "", "Ready", "group is ready")
		} else {
			r.event(api.EventNormal, "", "NotReady", "group is not ready")
		}
	}
}

func (r *runner) event(typ, container, reason, msg string) {
	r.s.cfg.Events(api.Event{Time: time.Now(), Type: typ, Group: r.name, Container: container, Reason: reason, Message: msg})
	if typ == api.EventWarning {
		r.log.Warn(msg, "reason", reason, "container", container)
	} else {
		r.log.Info(msg, "reason", reason, "container", container)
	}
}

func (r *runner) state() api.GroupState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.State
}

func (r *runner) run(ctx context.Context) {
	defer r.ended.Store(true)
	r.recover(ctx)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if r.reconcile(ctx) {
			r.removedAll = true
			close(r.gone)
			return
		}
		r.publish()
		if ctx.Err() != nil {
			return
		}
		var tick <-chan time.Time
		if !r.retryAt.IsZero() {
			timer.Reset(time.Until(r.retryAt))
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case ex := <-r.exits:
			r.onExit(ctx, ex)
		case h := <-r.health:
			r.onHealth(ctx, h)
		case <-tick:
		}
		timer.Stop()
	}
}

// recover reattaches to the containers an earlier agent left running.
func (r *runner) recover(ctx context.Context) {
	hashes := map[string]bool{}
	for _, ci := range r.existing {
		name := ci.Labels[LabelContainer]
		c := &ctr{name: name, id: ci.ID, labels: ci.Labels, created: true}
		r.ctrs[name] = c
		r.order = append(r.order, name)
		hashes[ci.Labels[LabelSpecHash]] = true
		r.attach(ctx, c)
	}
	if len(hashes) == 1 {
		for h := range hashes {
			r.recoveredHash = h
		}
	}
	r.everRunning = r.countRunning() > 0
	r.existing = nil
	r.publish()
}

// attach watches a container's existing task, if it has one.
func (r *runner) attach(ctx context.Context, c *ctr) {
	info, exitC, err := r.s.cfg.Runtime.AttachTask(ctx, c.id)
	switch {
	case err == nil:
		c.running, c.unknown, c.pid, c.startedAt = true, false, info.PID, info.StartedAt
		c.taskGen++
		r.watch(ctx, c.name, c.taskGen, exitC)
	case errors.Is(err, api.ErrNotFound):
		c.running, c.unknown = false, false
	default:
		c.running, c.unknown = false, true
		r.log.Warn("cannot attach to task", "container", c.name, "err", err)
	}
}

func (r *runner) watch(ctx context.Context, name string, gen int, exitC <-chan ExitStatus) {
	go func() {
		select {
		case st := <-exitC:
			select {
			case r.exits <- exitMsg{name: name, gen: gen, st: st}:
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
}

// reconcile moves the group one step towards what is wanted. It returns
// true when the group has been removed.
func (r *runner) reconcile(ctx context.Context) bool {
	want := r.desired()
	restart := r.restartRequested // a Retry: also brings back a group the policy ended
	r.restartRequested = false
	if want.remove {
		return r.removeAll(ctx)
	}
	if want.group.Spec == nil {
		r.retryAt = time.Time{}
		return false // nothing asked yet
	}
	if !want.group.Run {
		cause := StopCause{State: api.GroupStopped, Reason: "StopRequested", Message: "stopped on request"}
		if want.group.Stop != nil {
			cause = *want.group.Stop
		}
		if r.anyRunning() {
			r.transition(api.GroupStopping, cause.Reason, "stopping: "+cause.Message)
			grace := r.grace()
			if cause.Grace != nil && *cause.Grace < grace {
				grace = *cause.Grace
			}
			r.stopAllWithin(ctx, cause.Reason, grace)
		}
		if ctx.Err() != nil {
			return false
		}
		r.retryAt = time.Time{}
		r.transition(cause.State, cause.Reason, cause.Message)
		r.stoppedOnRequest = true
		// A spec changed while stopped is applied now, so that the next
		// start runs the new spec, not the old containers.
		if h := r.currentHash(); h != "" && h != want.group.SpecHash && len(r.ctrs) > 0 {
			if !r.deleteContainers(ctx) {
				return false
			}
			r.tracker = newRestartTracker(want.group.Spec.Restart, backoffOf(want.group.Spec, r.s.cfg.Backoff))
		}
		r.adoptSpec(want.group)
		return false
	}
	g := want.group
	if g.Hold != "" && !r.anyRunning() {
		reason := g.HoldReason
		if reason == "" {
			reason = "WaitingForDependency"
		}
		r.adoptSpec(g)
		r.stoppedOnRequest = true // once released, it starts
		r.transition(api.GroupPending, reason, g.Hold)
		return false
	}
	switch {
	case r.applied == nil && r.recoveredHash != "" && r.recoveredHash == g.SpecHash:
		r.adoptSpec(g)
		r.loadState() // restart counts and a pending backoff resume
		switch {
		case r.countRunning() == r.countLongRunning():
			r.transition(api.GroupRunning, "Reattached", fmt.Sprintf("reattached to %d running containers", r.countRunning()))
		case !r.retryAt.IsZero():
			r.transition(api.GroupBackOff, "Reattached", fmt.Sprintf("reattached to %d of %d containers; restart due in %s",
				r.countRunning(), r.countLongRunning(), time.Until(r.retryAt).Round(time.Millisecond)))
		default:
			r.transition(api.GroupPending, "Reattached", fmt.Sprintf("reattached to %d of %d containers", r.countRunning(), r.countLongRunning()))
		}
	case r.currentHash() != g.SpecHash || r.applied == nil:
		if len(r.ctrs) > 0 {
			from := "unknown"
			if r.applied != nil {
				from = strconv.FormatInt(r.applied.Generation, 10)
			}
			r.transition(api.GroupStopping, "Replacing", fmt.Sprintf("spec changed (generation %s → %d)", from, g.Generation))
			if !r.stopAll(ctx, "Replacing") || !r.deleteContainers(ctx) {
				return false
			}
		}
		r.tracker = newRestartTracker(g.Spec.Restart, backoffOf(g.Spec, r.s.cfg.Backoff))
		r.everRunning = false
		r.adoptSpec(g)
		r.retryAt = time.Time{}
		r.transition(api.GroupPending, "Accepted", fmt.Sprintf("generation %d", g.Generation))
	default:
		r.adoptSpec(g)
		if st := r.state(); st == api.GroupStopped || st == api.GroupFailed || st == api.GroupEvicted {
			if !r.stoppedOnRequest && !restart {
				return false // the restart policy ended it; only a start brings it back
			}
			// Start after a stop: every container runs again, init
			// containers first.
			r.stoppedOnRequest = false
			for _, c := range r.ctrs {
				c.done, c.initDone = false, false
			}
			r.everRunning = false
			r.tracker.reset()
		} else {
			// Released from a hold, or running: from here the restart
			// policy decides, and an end it decides is final.
			r.stoppedOnRequest = false
		}
	}
	if r.sandbox == nil && r.anyRunning() {
		// Reattached: find the pinned namespaces again (probes dial from them).
		sb, err := r.s.cfg.Sandboxes.Ensure(ctx, g.Spec)
		if err != nil {
			r.event(api.EventWarning, "", "SandboxLost", fmt.Sprintf("cannot find the group's sandbox: %v", err))
		} else {
			r.sandbox = sb
			r.s.sandboxReady(g.Spec, sb)
		}
	}
	lost := false
	for _, c := range r.ctrs {
		if c.unknown {
			r.attach(ctx, c)
			lost = lost || c.unknown
		}
		if c.running && c.stopProbe == nil {
			r.superviseTask(ctx, c, false) // reattached: probes resume
		}
	}
	if lost {
		// containerd is not back yet: try again in a second, for as long
		// as it takes, without touching the tasks.
		if at := time.Now().Add(time.Second); r.retryAt.IsZero() || r.retryAt.After(at) {
			r.retryAt = at
		}
		return false
	}
	if !r.retryAt.IsZero() && time.Now().Before(r.retryAt) {
		return false
	}
	r.retryAt = time.Time{}
	if r.anyToStart() {
		r.start(ctx)
	} else if r.countRunning() == r.countLongRunning() && r.countLongRunning() > 0 {
		r.transition(api.GroupRunning, r.status.Reason, r.status.Message)
	}
	return false
}

// adoptSpec makes g the applied group and lines up the container table
// with its spec (new containers are added as not created).
func (r *runner) adoptSpec(g Group) {
	r.applied = &g
	r.tracker.policy = g.Spec.Restart
	r.tracker.backoff = backoffOf(g.Spec, r.s.cfg.Backoff)
	order := make([]string, 0, len(g.Spec.Containers))
	for i := range g.Spec.Containers {
		cs := &g.Spec.Containers[i]
		c, ok := r.ctrs[cs.Name]
		if !ok {
			c = &ctr{name: cs.Name, id: ContainerID(r.name, cs.Name)}
			r.ctrs[cs.Name] = c
		}
		c.spec = cs
		if c.role() == api.RoleInit && r.everRunning && !c.running {
			c.initDone = true // the group runs: its init containers ran
		}
		order = append(order, cs.Name)
	}
	r.order = order
}

// currentHash is the spec hash of the containers that exist now.
func (r *runner) currentHash() string {
	if r.applied != nil {
		return r.applied.SpecHash
	}
	return r.recoveredHash
}

func (r *runner) anyRunning() bool { return r.countRunning() > 0 }

func (r *runner) countRunning() int {
	n := 0
	for _, c := range r.ctrs {
		if c.running {
			n++
		}
	}
	return n
}

func (r *runner) anyToStart() bool {
	for _, n := range r.order {
		c := r.ctrs[n]
		if c.role() == api.RoleInit {
			if !c.initDone {
				return true
			}
			continue
		}
		if !c.running && !c.done && !c.unknown {
			return true
		}
	}
	return false
}

// onExit handles a task exit seen by the main loop.
func (r *runner) onExit(ctx context.Context, ex exitMsg) {
	c := r.recordExit(ctx, ex)
	if c == nil || c.unknown || r.applied == nil {
		return // without a spec yet, the policy is unknown: reconcile decides
	}
	if c.oom {
		c.reason = "OOMKilled"
		r.event(api.EventWarning, c.name, "OOMKilled", fmt.Sprintf("container %s was killed for using more memory than its limit", c.name))
	}
	if c.role() == api.RoleInit && *c.exitCode == 0 {
		c.initDone = true
		r.event(api.EventNormal, c.name, "Completed", fmt.Sprintf("init container %s completed", c.name))
		return
	}
	d := r.tracker.onExit(*c.exitCode, c.startedAt, time.Now(), true)
	if d.Restart {
		c.restarts++
		at := time.Now().Add(d.Delay)
		if r.retryAt.IsZero() || at.After(r.retryAt) {
			r.retryAt = at
		}
		r.transition(api.GroupBackOff, "ContainerExited",
			fmt.Sprintf("container %s exited with code %d; restarting in %s", c.name, *c.exitCode, d.Delay.Round(time.Millisecond)))
		return
	}
	c.done = true
	c.reason = d.Reason
	if r.anyRunning() {
		r.transition(api.GroupRunning, "ContainerExited", fmt.Sprintf("container %s exited with code %d, not restarted (%s)", c.name, *c.exitCode, d.Reason))
		return
	}
	failed := false
	for _, o := range r.ctrs {
		if o.exitCode != nil && *o.exitCode != 0 {
			failed = true
		}
	}
	if failed {
		r.transition(api.GroupFailed, "ContainerFailed", "every container has exited, at least one with a non-zero code")
	} else {
		r.transition(api.GroupStopped, "Completed", "every container exited with code 0")
	}
}

// recordExit updates a container after its task ended and deletes the
// task. It returns nil for a stale message.
func (r *runner) recordExit(ctx context.Context, ex exitMsg) *ctr {
	c := r.ctrs[ex.name]
	if c == nil || ex.gen != c.taskGen || !c.running {
		return nil
	}
	c.running = false
	r.endTask(c)
	if ex.st.Err != nil {
		if ctx.Err() != nil {
			return nil // supervision ended; the task is not ours to judge
		}
		c.unknown = true
		r.retryAt = time.Now().Add(time.Second)
		r.event(api.EventWarning, c.name, "SupervisionLost", fmt.Sprintf("lost track of container %s: %v; reattaching", c.name, ex.st.Err))
		return c
	}
	code := ex.st.Code
	c.exitCode, c.finishedAt = &code, ex.st.ExitedAt
	c.oom, c.oomSeen = c.oomSeen, false
	if err := r.s.cfg.Runtime.DeleteTask(ctx, c.id); err != nil && !errors.Is(err, api.ErrNotFound) {
		r.log.Warn("delete task", "container", c.name, "err", err)
	}
	typ := api.EventNormal
	if code != 0 {
		typ = api.EventWarning
	}
	r.event(typ, c.name, "Exited", fmt.Sprintf("container %s exited with code %d", c.name, code))
	return c
}
