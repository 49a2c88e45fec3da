package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	"golang.org/x/sync/errgroup"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

// Version is agentd's version, set at build time with -ldflags.
var Version = "dev"

// Agent is agentd: it assembles this node's desired state (group files,
// groups applied through the API) and hands it to the supervisor, serves
// the admin API and keeps the event history.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	events *Events

	client  *containerd.Client
	managed *containerdproc.Process
	images  *supervisor.Images
	sup     *supervisor.Supervisor

	mu     sync.Mutex
	groups map[string]*groupEntry
	// prev holds what earlier runs recorded of each group (and of groups
	// deleted since): generations only grow.
	prev     map[string]persistedGroup
	fileErrs map[string]string // groups_dir file → its current error

	// capacity is what groups may ask in all; releasing holds the requests
	// of deleted groups until their stop has finished.
	capacity     api.Resources
	releasing    map[string]api.Resources
	memAvailable api.ByteSize
	pressure     string
	// drained: the node is drained (persisted); draining: a Drain call is
	// stopping groups level by level.
	drained, draining bool
	// containerdUp is what the last health check of containerd said.
	containerdUp atomic.Bool

	metrics *metrics
	// local is the agent's bbolt database (set by Run).
	local *localState
	// cl is the agent's Raft member and gossip (set by Run).
	cl *clusterRT
	// downward serves each group's downward API socket (downward.go).
	downward *downward
	// electorPorts serve the leader-elector answer of leases with an
	// elector_port inside their groups' netns (lease_elector.go).
	electorPorts *electorPorts
	// leases is this node's side of leader election (leases.go).
	leases     *leaseManager
	leasesOnce sync.Once
	// amb runs the groups' ambassadors (ambassadors.go).
	amb *ambassadorSet
	// queues is the work queue machinery (queues.go, queue_worker.go).
	queues     *queueSet
	queuesOnce sync.Once

	ready chan struct{}
}

// New returns an agent for a validated config.
func New(cfg Config, log *slog.Logger) *Agent {
	a := &Agent{
		cfg: cfg, log: log, events: NewEvents(1000),
		groups: map[string]*groupEntry{}, prev: map[string]persistedGroup{}, fileErrs: map[string]string{},
		ready:     make(chan struct{}),
		capacity:  capacityFromConfig(cfg.Node),
		releasing: map[string]api.Resources{},
	}
	a.metrics = newMetrics(a)
	a.events.observe = a.metrics.ObserveEvent
	return a
}

// Ready is closed once the agent serves its API with the desired state
// loaded.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run runs the agent until ctx ends. Ending it stops supervision and
// leaves every group running: only explicit stops, deletes and evictions
// kill containers.
func (a *Agent) Run(ctx context.Context) error {
	for _, d := range []string{a.cfg.StateDir, a.cfg.RunDir, a.logDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	client, err := a.connectContainerd(ctx)
	if err != nil {
		return err
	}
	a.client = client
	a.containerdUp.Store(true)
	defer client.Close()

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary for the log driver: %w", err)
	}
	// Exec FIFOs of an agent that was killed mid-exec are swept here.
	fifoDir := filepath.Join(a.cfg.RunDir, "fifo")
	if err := os.RemoveAll(fifoDir); err != nil {
		return err
	}
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		return err
	}
	a.images = supervisor.NewImages(client, a.cfg.Containerd.Namespace, a.cfg.Containerd.Snapshotter, a.cfg.Registry.AuthFile)
	rt := supervisor.NewContainerdRuntime(client, supervisor.ContainerdConfig{
		Namespace:   a.cfg.Containerd.Namespace,
		Snapshotter: a.cfg.Containerd.Snapshotter,
		Runtime:     a.cfg.Containerd.Runtime,
		LogDriver:   self,
		LogDir:      a.logDir(),
		LogOpts:     supervisor.LogOptions{MaxSize: int64(a.cfg.Logs.MaxSize), MaxFiles: a.cfg.Logs.MaxFiles},
		FIFODir:     fifoDir,
		Images:      a.images,
	})
	local, err := openLocalState(filepath.Join(a.cfg.StateDir, "state.db"))
	if err != nil {
		return err
	}
	defer local.Close()
	a.local = local
	network, err := a.newNetwork()
	if err != nil {
		return err
	}
	a.sup = supervisor.New(supervisor.Config{
		State:     local,
		Runtime:   rt,
		Sandboxes: supervisor.NewSandboxes(a.cfg.RunDir, a.cfg.StateDir),
		Network:   network,
		Events:    a.events.Publish,
		Logger:    a.log,
		LogDir:    a.logDir(),
		Observers: a.sandboxObservers(),
	})
	if err := a.openCluster(); err != nil {
		return err
	}
	defer a.closeCluster()
	found, err := a.sup.Recover(ctx)
	if err != nil {
		return fmt.Errorf("list containers in namespace %s: %w", a.cfg.Containerd.Namespace, err)
	}
	if released, err := a.sup.ReconcileNetwork(ctx); err != nil {
		a.log.Error("release the network addresses of groups that are gone", "err", err)
	} else if len(released) > 0 {
		a.log.Info("released the network addresses of groups that are gone", "groups", released)
	}

	srv, ln, err := a.listen()
	if err != nil {
		return err
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return a.sup.Run(ctx) })
	eg.Go(func() error { return a.downwardAPI().Run(ctx) })
	eg.Go(func() error { return a.electors().Run(ctx) })
	eg.Go(func() error { return a.ambassadors().Run(ctx) })
	if err := a.loadDesired(); err != nil {
		return err
	}
	if err := a.syncFiles(); err != nil {
		a.log.Error("scan groups dir", "err", err)
	}
	a.restoreQueueRuns()
	a.mu.Lock()
	for _, name := range found {
		g, ok := a.groups[name]
		if !ok && isAllocationName(name) {
			// An allocation: kept running until the cluster state says
			// whether it is still this node's (syncAllocations).
			continue
		}
		if !ok {
			a.log.Info("removing group that is no longer defined", "group", name)
			a.sup.Remove(name)
			continue
		}
		if !g.Stopped {
			// Running before the restart: it holds its room, admitted first.
			g.adm = admission{admitted: true, admittedAt: time.Now()}
		}
	}
	for name := range a.groups {
		a.pushLocked(name)
	}
	a.admitLocked()
	a.mu.Unlock()

	a.runCluster(ctx, eg.Go)
	eg.Go(func() error { return a.runLeases(ctx) })
	eg.Go(func() error { return a.runQueues(ctx) })
	eg.Go(func() error { return a.watchFiles(ctx) })
	eg.Go(func() error { return a.watchDependencies(ctx) })
	eg.Go(func() error { return a.watchPressure(ctx) })
	eg.Go(func() error { return a.watchContainerd(ctx) })
	eg.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin API: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	})
	if a.cfg.MetricsAddress != "" {
		msrv := &http.Server{Addr: a.cfg.MetricsAddress, Handler: a.metrics.Handler(), ReadHeaderTimeout: 10 * time.Second}
		eg.Go(func() error {
			if err := msrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics on %s: %w", a.cfg.MetricsAddress, err)
			}
			return nil
		})
		eg.Go(func() error {
			<-ctx.Done()
			return msrv.Close()
		})
	}
	notify := newNotifier(a.log)
	eg.Go(func() error { return notify.Run(ctx, a.statusLine, a.healthy) })
	eg.Go(func() error {
		<-ctx.Done()
		notify.Stopping()
		return nil
	})
	close(a.ready)
	notify.Ready()
	a.log.Info("agent ready", "node", a.cfg.NodeName, "socket", a.cfg.Socket, "groups", len(a.groups),
		"containerd", a.cfg.Containerd.Address, "namespace", a.cfg.Containerd.Namespace)
	err = eg.Wait()
	a.log.Info("agent stopped; groups keep running")
	return err
}

// statusLine is the systemd STATUS= line.
func (a *Agent) statusLine() string {
	running := 0
	for _, st := range a.sup.List() {
		if st.State == api.GroupRunning {
			running++
		}
	}
	a.mu.Lock()
	ns := a.nodeStatusLocked()
	a.mu.Unlock()
	cd := "containerd ok"
	if !a.containerdUp.Load() {
		cd = "containerd unavailable"
	}
	s := fmt.Sprintf("%d groups: %d running, %d pending, %d evicted; %s", ns.Admitted+ns.Pending+ns.Evicted, running, ns.Pending, ns.Evicted, cd)
	if ns.Drained {
		s += "; drained"
	}
	return s
}

// healthy says whether the agent's state can be read in time: the
// watchdog is pinged only then, so a stuck agent is restarted by systemd.
func (a *Agent) healthy() bool {
	done := make(chan struct{})
	go func() {
		a.mu.Lock()
		a.mu.Unlock()
		a.sup.List()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

// loadDesired restores groups applied through the API and the persisted
// generations and stop flags.
func (a *Agent) loadDesired() error {
	p, err := a.loadPersisted()
	if err != nil {
		return err
	}
	applied, err := a.loadApplied()
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, pg := range p.Groups {
		a.prev[n] = pg
	}
	a.drained = p.Drained
	// Files get theirs in syncFiles.
	for _, spec := range applied {
		a.upsertLocked(spec, SourceAPI)
	}
	return nil
}

// status returns a group's status with the agent's own fields filled in.
func (a *Agent) status(name string, detail bool) (api.GroupStatus, bool) {
	a.mu.Lock()
	g, ok := a.groups[name]
	var specErr string
	if ok {
		specErr = g.SpecError
	}
	a.mu.Unlock()
	st, sok := a.sup.Status(name)
	if !ok && !sok {
		return api.GroupStatus{}, false
	}
	if !sok {
		st = api.GroupStatus{Name: name, State: api.GroupPending, Source: g.Source, Generation: g.Generation}
	}
	st.SpecError = specErr
	if ok {
		st.Request = g.Spec.Request()
	}
	if detail {
		if ok {
			st.Spec = g.Spec
		}
		st.Events = a.events.History(name)
	} else {
		st.Spec = nil
	}
	return st, true
}
