package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// The container-mode worker: a queue whose mode is "container" runs its
// group's containers once per item.
//
// Where: the allocations of the queue's cluster group mark the nodes that
// work on it ([placement] replicas, spread and constraints choose them, and
// the scheduler counts one item's resources for each). An allocation of a
// container-mode queue runs no containers of its own: its node's worker
// reports it Running and Ready, and leases up to its share of the queue's
// parallelism, ceil(parallelism · its allocations / all placed
// allocations), and only as many as this node has room for.
//
// How: each item runs as a transient local group named "<queue>_<id>" (an
// underscore: never a group or allocation name) with Source "queue",
// through the same admission, supervision, cgroups and logs as any other
// group: the group's spec with restart = "never", no ports, and a host
// volume mounted at /berth/work in every container, holding the item at
// /berth/work/item and an empty /berth/work/out. The item is done when
// every main container has exited: all with 0 → ack, with a summary of the
// output files as the result (the files stay on this node, under the
// agent's state dir: queues/<queue>/<id>/out, and the item's record names
// the node); else → nack, with the exit codes and the last log lines, and
// the queue's retry policy decides. The group is then removed. While it
// runs the worker extends the item's lease.
//
// Restarts: every run is recorded under the state dir before its group
// is created, with its outcome once known; an agent that restarts puts
// the groups of unfinished runs back (the supervisor reattaches to their
// containers, which kept running) and acks or nacks finished ones. Should
// a lease expire meanwhile, the item runs again elsewhere (delivery is at
// least once) and whichever ack comes first is the one completion.

// sourceQueue is the Source of the groups that run queue items.
const sourceQueue = "queue"

// Cadence of the worker.
const (
	workerTick = 200 * time.Millisecond
	// maxLogLines is how many of the last log lines a nack carries.
	maxLogLines = 20
	// maxResultFiles bounds the files a result summary lists.
	maxResultFiles = 100
)

// queueRunsItems reports whether spec's containers run once per item
// (a container-mode queue): its allocations run nothing of their own.
func queueRunsItems(spec *api.GroupSpec) bool {
	return spec != nil && spec.Queue != nil && spec.Queue.Mode == api.QueueContainer
}

// queueWorker runs container-mode items on this node. Its state is owned
// by its Run goroutine (and by restoreQueueRuns before it).
type queueWorker struct {
	a    *Agent
	log  *slog.Logger
	dir  string // queues/ under the state dir
	kick chan struct{}

	mu   sync.Mutex
	runs map[string]*itemRun

	// reportedAt is when each allocation's status was last written.
	reportedAt map[string]time.Time
	lastSweep  time.Time
	// missing are the queues with output here that the last sweep did not
	// find in the state.
	missing map[string]bool
}

func newQueueWorker(a *Agent) *queueWorker {
	return &queueWorker{a: a, log: a.log.With("component", "queue-worker"), dir: filepath.Join(a.cfg.StateDir, "queues"),
		kick: make(chan struct{}, 1), runs: map[string]*itemRun{}, reportedAt: map[string]time.Time{}, missing: map[string]bool{}, lastSweep: time.Now()}
}

func (w *queueWorker) runsDir() string { return filepath.Join(w.dir, "runs") }

func (w *queueWorker) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// save records run; remove forgets it.
func (w *queueWorker) save(run *itemRun) error {
	data, err := json.Marshal(run)
	if err != nil {
		return err
	}
	// Atomic but not synced: a record must survive agentd, not the
	// machine, whose crash takes the item's containers with it (the item
	// then comes back when its lease expires).
	path := filepath.Join(w.runsDir(), run.Name+".json")
	if err := os.MkdirAll(w.runsDir(), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// restoreQueueRuns puts back the groups of the item runs an earlier agent
// left unfinished, before the agent sorts out what it found in
// containerd, so that their containers are reattached, not removed.
func (a *Agent) restoreQueueRuns() {
	w := a.queueState().worker
	paths, _ := filepath.Glob(filepath.Join(w.runsDir(), "*.json"))
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range paths {
		data, err := os.ReadFile(p)
		var run itemRun
		if err == nil {
			err = json.Unmarshal(data, &run)
		}
		if err != nil || run.Spec == nil || run.Name == "" {
			w.log.Error("unreadable queue item record; dropping it", "file", p, "err", err)
			_ = os.Remove(p)
			continue
		}
		w.runs[run.Name] = &run
		if run.Outcome == nil {
			a.upsertLocked(run.Spec, sourceQueue)
			a.groups[run.Name].env = itemEnv(&run)
		}
		w.log.Info("queue item run restored", "queue", run.Queue, "item", run.ID, "group", run.Name, "finished", run.Outcome != nil)
	}
}

// Run works until ctx ends. Ending it leaves item containers running.
func (w *queueWorker) Run(ctx context.Context) {
	_, events, cancel := w.a.events.Subscribe("")
	defer func() { cancel() }()
	watch := w.a.cl.store.Watch(ctx)
	tick := time.NewTicker(workerTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				_, events, cancel = w.a.events.Subscribe("")
				continue
			}
			w.mu.Lock()
			_, mine := w.runs[ev.Group]
			w.mu.Unlock()
			if !mine {
				continue
			}
		case <-watch:
		case <-tick.C:
		case <-w.kick:
		}
		w.pass(ctx)
	}
}

// pass does one round: outcomes of finished runs, acks and nacks, lease
// extensions, new leases, allocation status, cleanup.
func (w *queueWorker) pass(ctx context.Context) {
	a := w.a
	w.collect()
	w.settle(ctx)
	w.extend(ctx)
	mine, placed := w.allocations()
	if a.cl.caughtUp.Load() {
		w.lease(ctx, mine, placed)
		w.report(ctx, mine)
		w.sweep()
	}
}

// allocations returns this node's allocations of container-mode queue
// groups and how many allocations of each such group are placed anywhere.
func (w *queueWorker) allocations() (mine map[string][]raftstore.Allocation, placed map[string]int) {
	mine, placed = map[string][]raftstore.Allocation{}, map[string]int{}
	for _, al := range w.a.cl.store.Allocations() {
		if al.Node == "" || !queueRunsItems(al.Spec) {
			continue
		}
		placed[al.Group]++
		if al.Node == w.a.cfg.NodeName {
			mine[al.Group] = append(mine[al.Group], al)
		}
	}
	return mine, placed
}

// collect records the outcome of every run whose containers are done.
func (w *queueWorker) collect() {
	w.mu.Lock()
	runs := slices.Collect(maps.Values(w.runs))
	w.mu.Unlock()
	for _, run := range runs {
		if run.Outcome != nil {
			continue
		}
		st, ok := w.a.sup.Status(run.Name)
		if !ok {
			continue
		}
		done, ok, msg, failed := itemOutcomeOf(st)
		if !done {
			continue
		}
		out := &itemOutcome{OK: ok}
		if ok {
			out.Result = w.result(run)
		} else {
			out.Error = msg + w.lastLogs(run, failed)
		}
		run.Outcome = out
		if err := w.save(run); err != nil {
			w.log.Error("record a queue item's outcome", "queue", run.Queue, "item", run.ID, "err", err)
		}
		w.log.Info("queue item finished", "queue", run.Queue, "item", run.ID, "attempt", run.Attempt, "ok", ok,
			"took", time.Since(run.Started).Round(time.Millisecond), "error", out.Error)
	}
}

// settle acks and nacks the finished runs, one command each per queue,
// and removes their groups. A run whose item is gone (queue deleted) is
// dropped; one whose write failed for now is tried again next pass.
func (w *queueWorker) settle(ctx context.Context) {
	a := w.a
	byQueue := map[string][]*itemRun{}
	applied := a.cl.store.Index()
	w.mu.Lock()
	for _, run := range w.runs {
		// A run is settled once this member applied its lease: an agent
		// that has just started may not have replayed the log that far,
		// and would take the item, or its queue, for gone.
		if run.Outcome != nil && applied >= run.Token {
			byQueue[run.Queue] = append(byQueue[run.Queue], run)
		}
	}
	w.mu.Unlock()
	for queue, runs := range byQueue {
		q, ok := a.cl.store.Queue(queue)
		if !ok {
			for _, run := range runs {
				w.finish(run, "its queue was deleted")
			}
			continue
		}
		var acks []raftstore.ItemAck
		var nacks []raftstore.ItemNack
		var ackRuns, nackRuns []*itemRun
		for _, run := range runs {
			if err := a.checkToken(queue, run.ID, run.Token); err != nil {
				w.finish(run, err.Error())
				continue
			}
			if run.Outcome.OK {
				acks = append(acks, raftstore.ItemAck{ID: run.ID, Token: run.Token, Attempt: run.Attempt,
					Node: a.cfg.NodeName, Worker: a.cfg.NodeName, Result: run.Outcome.Result})
				ackRuns = append(ackRuns, run)
			} else {
				nacks = append(nacks, raftstore.ItemNack{ID: run.ID, Token: run.Token, Error: run.Outcome.Error})
				nackRuns = append(nackRuns, run)
			}
		}
		if len(acks) > 0 {
			res, err := a.ackItems(ctx, q, acks)
			if err != nil {
				w.log.Warn("ack queue items", "queue", queue, "items", len(acks), "err", err)
			} else {
				for i, run := range ackRuns {
					w.finish(run, "acked: "+res.Results[i].Outcome)
				}
			}
		}
		if len(nacks) > 0 {
			res, err := a.nackItems(ctx, q, nacks)
			if err != nil {
				w.log.Warn("nack queue items", "queue", queue, "items", len(nacks), "err", err)
			} else {
				for i, run := range nackRuns {
					r := res.Results[i]
					why := "nacked: " + string(r.State)
					if r.Stale {
						why = "nack ignored: the item moved on"
					}
					w.finish(run, why)
				}
			}
		}
	}
}

// finish removes a run's group and record. The output of a done item
// stays; the files of a failed run go with its group.
func (w *queueWorker) finish(run *itemRun, why string) {
	a := w.a
	w.log.Debug("queue item run finished", "queue", run.Queue, "item", run.ID, "group", run.Name, "why", why)
	a.mu.Lock()
	var gone <-chan struct{}
	if g, ok := a.groups[run.Name]; ok && g.Source == sourceQueue {
		gone = a.removeLocked(run.Name)
	} else {
		gone = a.sup.Remove(run.Name)
	}
	delete(a.prev, run.Name) // the next save of the agent's state forgets it
	a.mu.Unlock()
	w.mu.Lock()
	delete(w.runs, run.Name)
	w.mu.Unlock()
	_ = os.Remove(filepath.Join(w.runsDir(), run.Name+".json"))
	keep := run.Outcome != nil && run.Outcome.OK
	go func() {
		<-gone
		if keep {
			_ = os.Remove(filepath.Join(run.Dir, "item"))
		} else {
			_ = os.RemoveAll(run.Dir)
		}
	}()
}

// extend keeps the leases of running items: each one past half its
// visibility is extended, one command per queue.
func (w *queueWorker) extend(ctx context.Context) {
	a := w.a
	now := time.Now()
	byQueue := map[string][]*itemRun{}
	w.mu.Lock()
	for _, run := range w.runs {
		if run.Outcome == nil {
			byQueue[run.Queue] = append(byQueue[run.Queue], run)
		}
	}
	w.mu.Unlock()
	for queue, runs := range byQueue {
		q, ok := a.cl.store.Queue(queue)
		if !ok {
			continue
		}
		vis := q.Spec.EffectiveVisibility().D()
		var due []raftstore.ItemToken
		var dueRuns []*itemRun
		for _, run := range runs {
			if run.Expiry.Sub(now) < vis/2 {
				due = append(due, raftstore.ItemToken{ID: run.ID, Token: run.Token})
				dueRuns = append(dueRuns, run)
			}
		}
		if len(due) == 0 {
			continue
		}
		res, err := a.extendItems(ctx, q, due, 0)
		if err != nil {
			w.log.Warn("extend the leases of running queue items", "queue", queue, "items", len(due), "err", err)
			continue
		}
		for i, run := range dueRuns {
			if r := res.Results[i]; r.Stale {
				// Lost (expired, or its node was thought dead): it runs on,
				// and its ack still counts if it comes first.
				run.Expiry = now.Add(vis)
				w.log.Warn("lease of a running queue item lost; letting it finish", "queue", queue, "item", run.ID)
			} else {
				run.Expiry = r.Expiry
			}
		}
	}
}

// lease takes new items for every container-mode queue this node works
// on, up to its share of the parallelism and the room it has.
func (w *queueWorker) lease(ctx context.Context, mine map[string][]raftstore.Allocation, placed map[string]int) {
	a := w.a
	a.mu.Lock()
	drained, free := a.drained, a.nodeStatusLocked().Free
	a.mu.Unlock()
	if drained {
		return
	}
	running := map[string]int{}
	w.mu.Lock()
	for _, run := range w.runs {
		running[run.Queue]++
	}
	w.mu.Unlock()
	for _, group := range sortedKeys(mine) {
		allocs := mine[group]
		tmpl := allocs[0]
		p, ok := queueOfSpec(group, tmpl.Spec)
		if !ok {
			continue
		}
		q, ok := a.cl.store.Queue(p.Name)
		if !ok || q.Group != group {
			continue
		}
		slots := shareOf(q.Spec.EffectiveParallelism(), len(allocs), placed[group]) - running[q.Name]
		slots = min(slots, fits(tmpl.Spec.Request(), free))
		if slots <= 0 || !a.leaseWorthTrying(q.Name) {
			continue
		}
		idx, err := a.propose(ctx, raftstore.CmdLeaseItem, raftstore.LeaseItem{
			Queue: q.Name, Worker: a.cfg.NodeName, Node: a.cfg.NodeName, Now: time.Now(), Max: slots})
		if err != nil {
			w.log.Warn("lease queue items", "queue", q.Name, "err", err)
			continue
		}
		for _, it := range a.cl.store.LeasedItems(q.Name, idx) {
			if err := w.start(q, tmpl, it); err != nil {
				w.log.Error("start a queue item", "queue", q.Name, "item", it.ID, "err", err)
				if _, err := a.nackItems(ctx, q, []raftstore.ItemNack{{ID: it.ID, Token: it.LeaseToken,
					Error: fmt.Sprintf("node %s could not start it: %v", a.cfg.NodeName, err)}}); err != nil {
					w.log.Warn("nack a queue item that did not start", "queue", q.Name, "item", it.ID, "err", err)
				}
			}
		}
	}
}

// shareOf is a node's share of parallelism p when it has mine of the
// placed allocations: rounded up, so that the shares cover p (the FSM
// keeps the total within p).
func shareOf(p, mine, placed int) int {
	if p <= 0 || mine <= 0 || placed <= 0 {
		return 0
	}
	return (p*mine + placed - 1) / placed
}

// fits is how many copies of req fit in free (a large number when req
// asks nothing).
func fits(req, free api.Resources) int {
	n := 1 << 20
	for _, r := range [][2]int64{{int64(req.CPU), int64(free.CPU)}, {int64(req.Memory), int64(free.Memory)}, {req.Pids, free.Pids}} {
		if r[0] > 0 {
			n = min(n, int(max(r[1], 0)/r[0]))
		}
	}
	return n
}

// start runs item it of q on this node as a transient group made from
// the allocation's spec.
func (w *queueWorker) start(q raftstore.Queue, al raftstore.Allocation, it raftstore.QueueItem) error {
	a := w.a
	name := itemGroupName(q.Name, it.ID)
	w.mu.Lock()
	_, busy := w.runs[name]
	w.mu.Unlock()
	if busy {
		return fmt.Errorf("item %d already runs here as group %s", it.ID, name)
	}
	dir := filepath.Join(w.dir, q.Name, strconv.FormatUint(it.ID, 10))
	out := filepath.Join(dir, "out")
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o777); err != nil {
		return err
	}
	_ = os.Chmod(out, 0o777) // whatever user the containers run as
	if err := os.WriteFile(filepath.Join(dir, "item"), it.Data, 0o644); err != nil {
		return err
	}
	run := &itemRun{Name: name, Queue: q.Name, Group: q.Group, ID: it.ID, Token: it.LeaseToken, Attempt: it.Attempts,
		Dir: dir, Spec: itemSpec(al.Spec, name, dir, q.Name, it.ID), Started: time.Now(), Expiry: it.LeaseExpiry}
	if err := w.save(run); err != nil {
		return fmt.Errorf("record the run: %w", err)
	}
	w.mu.Lock()
	w.runs[name] = run
	w.mu.Unlock()
	a.mu.Lock()
	a.upsertLocked(run.Spec, sourceQueue)
	g := a.groups[name]
	g.env = itemEnv(run)
	a.admitLocked() // pushes it when admitted
	if !g.adm.admitted {
		a.pushLocked(name) // shows why it waits
	}
	a.mu.Unlock()
	a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Group: name, Reason: "ItemLeased",
		Message: fmt.Sprintf("queue %s item %d, attempt %d", q.Name, it.ID, it.Attempts)})
	return nil
}

// report writes this node's allocations of container-mode queues as
// Running and Ready: they are the worker, which runs while the agent does.
func (w *queueWorker) report(ctx context.Context, mine map[string][]raftstore.Allocation) {
	var updates []raftstore.AllocationStatus
	for _, allocs := range mine {
		for _, al := range allocs {
			reason := "works on queue " + al.Spec.Queue.EffectiveName(al.Group)
			if al.Status == api.GroupRunning && al.Ready && al.Reason == reason {
				continue
			}
			if time.Since(w.reportedAt[al.ID]) < 2*time.Second {
				continue // written, maybe not applied here yet
			}
			w.reportedAt[al.ID] = time.Now()
			updates = append(updates, raftstore.AllocationStatus{ID: al.ID, Generation: al.Generation, Node: w.a.cfg.NodeName,
				Status: api.GroupRunning, Ready: true, Reason: reason})
		}
	}
	if len(updates) == 0 {
		return
	}
	if _, err := w.a.propose(ctx, raftstore.CmdSetAllocationStatus, raftstore.SetAllocationStatus{Updates: updates}); err != nil {
		w.log.Warn("report queue worker allocations", "allocations", len(updates), "err", err)
	}
}

// sweep, every half minute, drops the output of queues that have not
// existed for two sweeps in a row (never right after a start, while the
// log may not be replayed), and item groups that have no run (a crash
// between the two).
func (w *queueWorker) sweep() {
	if time.Since(w.lastSweep) < 30*time.Second {
		return
	}
	w.lastSweep = time.Now()
	for id, at := range w.reportedAt {
		if time.Since(at) > time.Minute {
			delete(w.reportedAt, id)
		}
	}
	a := w.a
	w.mu.Lock()
	busy := map[string]bool{}
	for _, run := range w.runs {
		busy[run.Queue] = true
	}
	w.mu.Unlock()
	ents, _ := os.ReadDir(w.dir)
	for _, e := range ents {
		if !e.IsDir() || e.Name() == "runs" || busy[e.Name()] {
			continue
		}
		if _, ok := a.cl.store.Queue(e.Name()); ok {
			delete(w.missing, e.Name())
			continue
		}
		if !w.missing[e.Name()] {
			w.missing[e.Name()] = true
			continue
		}
		w.log.Info("removing the output of a deleted queue", "queue", e.Name())
		_ = os.RemoveAll(filepath.Join(w.dir, e.Name()))
		delete(w.missing, e.Name())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, g := range a.groups {
		w.mu.Lock()
		_, ok := w.runs[name]
		w.mu.Unlock()
		if g.Source == sourceQueue && !ok {
			w.log.Warn("removing an item group without a run", "group", name)
			a.removeLocked(name)
		}
	}
}
