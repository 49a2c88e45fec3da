package supervisor

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
)

// Group is the desired state of one group on this node, as the agent
// assembled it.
type Group struct {
	Spec       *api.GroupSpec
	Generation int64
	// SpecHash identifies the spec; a different hash means replace.
	SpecHash string
	// Run is false for a group stopped on request (definition kept).
	Run bool
	// Env is added to every container (BERTH_GROUP, BERTH_NODE, …).
	Env []string
	// Source is reported in the status: a file path or "api".
	Source   string
	Priority int64
	// Hold, when set, keeps a group that is not running from starting and
	// says why (e.g. a dependency that is not ready): the group is Pending
	// with HoldReason (default WaitingForDependency) and Hold as message.
	Hold       string
	HoldReason string
	// Stop says why a group with Run false is stopped; nil means on
	// request (state Stopped, reason StopRequested).
	Stop *StopCause
}

// StopCause is why the agent stops a group.
type StopCause struct {
	State   api.GroupState // Stopped or Evicted
	Reason  string         // e.g. Preempted, NodePressure
	Message string
	// Grace, when set, replaces the group's grace period (hard eviction).
	Grace *time.Duration
}

// EventSink receives events. It must not block (the agent's event hub
// copies into a bounded buffer).
type EventSink func(api.Event)

// Config configures a Supervisor.
type Config struct {
	Runtime   Runtime
	Sandboxes Sandboxes
	Events    EventSink
	Logger    *slog.Logger
	// LogDir is where container logs are written (by the log driver).
	LogDir  string
	Backoff Backoff
	// KillWait bounds the wait for a task to exit after SIGKILL.
	KillWait time.Duration
	// State persists restart counts and backoff; nil keeps them in memory.
	State StateStore
	// Network attaches groups with network = "bridge" to the node network
	// (NewCNI); nil leaves every group with loopback only.
	Network Network
	// Observers learn of sandboxes coming and going.
	Observers []SandboxObserver
}

// Supervisor runs one runner per group and is the only thing on the node
// that touches containerd. It knows nothing of the cluster or priorities:
// the agent tells it what should run (Set, Remove) and reads back status.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	ctx      context.Context // supervision; set by Run
	runners  map[string]*runner
	existing map[string][]ContainerInfo // found by Recover, handed to runners
	wg       sync.WaitGroup
	started  chan struct{}
}

// New returns a Supervisor. Call Recover, then Run.
func New(cfg Config) *Supervisor {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.KillWait == 0 {
		cfg.KillWait = 10 * time.Second
	}
	if cfg.Events == nil {
		cfg.Events = func(api.Event) {}
	}
	if n, ok := cfg.Sandboxes.(networkUser); ok && cfg.Network != nil {
		n.useNetwork(cfg.Network)
	}
	return &Supervisor{cfg: cfg, log: cfg.Logger, runners: map[string]*runner{},
		existing: map[string][]ContainerInfo{}, started: make(chan struct{})}
}

// Recover lists what the agent left in containerd and on disk, so runners
// reattach to live tasks instead of starting new ones. It returns the names
// of every group found.
func (s *Supervisor) Recover(ctx context.Context) ([]string, error) {
	cs, err := s.cfg.Runtime.ListContainers(ctx, nil)
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	s.mu.Lock()
	for _, c := range cs {
		g := c.Labels[LabelGroup]
		if g == "" {
			continue
		}
		s.existing[g] = append(s.existing[g], c)
		found[g] = true
	}
	s.mu.Unlock()
	if l, ok := s.cfg.Sandboxes.(interface{ List() []string }); ok {
		for _, g := range l.List() {
			found[g] = true
		}
	}
	names := make([]string, 0, len(found))
	for g := range found {
		names = append(names, g)
	}
	sort.Strings(names)
	return names, nil
}

// Run supervises until ctx ends, then returns once every runner has
// stopped supervising. Ending ctx never stops containers.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	close(s.started)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watchOOM(ctx)
	}()
	<-ctx.Done()
	s.wg.Wait()
	return nil
}

// Set makes g the desired state of its group, creating the runner if
// needed. It never blocks on the runner.
func (s *Supervisor) Set(g Group) {
	<-s.started
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[g.Spec.Name]
	if !ok || r.finished() {
		r = newRunner(s, g.Spec.Name, s.existing[g.Spec.Name])
		delete(s.existing, g.Spec.Name)
		s.runners[g.Spec.Name] = r
		s.start(r)
	}
	r.set(desired{group: g})
}

// Remove stops the group and deletes everything it had: containers,
// snapshots, namespaces, volumes, logs. The channel closes when it is gone.
// Removing an unknown group cleans up whatever Recover found of it.
func (s *Supervisor) Remove(name string) <-chan struct{} {
	<-s.started
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[name]
	if !ok || r.finished() {
		r = newRunner(s, name, s.existing[name])
		delete(s.existing, name)
		s.runners[name] = r
		s.start(r)
	}
	r.set(desired{remove: true})
	return r.gone
}

func (s *Supervisor) start(r *runner) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.run(s.ctx)
		s.mu.Lock()
		if s.runners[r.name] == r && r.removedAll {
			delete(s.runners, r.name)
		}
		s.mu.Unlock()
	}()
}

// oomer is implemented by runtimes that report OOM kills.
type oomer interface {
	OOMEvents(ctx context.Context) (<-chan string, <-chan error)
}

// watchOOM routes the runtime's OOM events to the runners, so the exit
// that follows is recorded as OOMKilled. It resubscribes when the stream
// breaks (containerd restarted).
func (s *Supervisor) watchOOM(ctx context.Context) {
	o, ok := s.cfg.Runtime.(oomer)
	if !ok {
		return
	}
	for ctx.Err() == nil {
		ids, errs := o.OOMEvents(ctx)
	loop:
		for {
			select {
			case <-ctx.Done():
				return
			case id, ok := <-ids:
				if !ok {
					break loop
				}
				group, container, ok := SplitContainerID(id)
				if !ok {
					continue
				}
				s.mu.Lock()
				r := s.runners[group]
				s.mu.Unlock()
				if r != nil {
					r.noteOOM(container)
				}
			case err := <-errs:
				s.log.Warn("OOM events", "err", err)
				break loop
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Retry cuts short a group's BackOff delay: its next attempt starts now.
func (s *Supervisor) Retry(name string) {
	s.mu.Lock()
	r, ok := s.runners[name]
	s.mu.Unlock()
	if ok {
		r.mu.Lock()
		r.retryNow = true
		r.mu.Unlock()
		r.poke()
	}
}

// Status returns the status of one group.
func (s *Supervisor) Status(name string) (api.GroupStatus, bool) {
	s.mu.Lock()
	r, ok := s.runners[name]
	s.mu.Unlock()
	if !ok {
		return api.GroupStatus{}, false
	}
	return r.snapshot(), true
}

// List returns the status of every group, by name.
func (s *Supervisor) List() []api.GroupStatus {
	s.mu.Lock()
	rs := make([]*runner, 0, len(s.runners))
	for _, r := range s.runners {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	out := make([]api.GroupStatus, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// sandboxReady tells the observers that group's sandbox is in place.
func (s *Supervisor) sandboxReady(spec *api.GroupSpec, sb *Sandbox) {
	for _, o := range s.cfg.Observers {
		o.SandboxReady(spec, sb)
	}
}

// destroySandbox tells the observers group's sandbox goes, then destroys it.
func (s *Supervisor) destroySandbox(ctx context.Context, group string) error {
	for _, o := range s.cfg.Observers {
		o.SandboxGone(group)
	}
	return s.cfg.Sandboxes.Destroy(ctx, group)
}

// LogDir returns where container logs are.
func (s *Supervisor) LogDir() string { return s.cfg.LogDir }

func (s *Supervisor) removeLogs(group string) error {
	if s.cfg.LogDir == "" {
		return nil
	}
	return os.RemoveAll(filepath.Join(s.cfg.LogDir, group))
}
