package agent

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// The agent's Prometheus metrics. Besides the Go runtime's go_* and the
// process's process_* families, it exports:
//
// Recorded as things happen (Instrument, ObserveEvent, ObserveReconcile):
//
//	berth_api_request_duration_seconds{route,method,code}  histogram  admin API requests; method is lower case
//	                                                                  ("get"); a stream (follow=1) counts its whole length
//	berth_reconcile_duration_seconds                       histogram  file syncs and applies
//	berth_evictions_total{reason}                          counter    eviction decisions; reason Preempted | NodePressure
//	berth_preemptions_total                                counter    admissions that evict lower-priority groups to fit
//	berth_container_exits_total{group,container,code_class} counter   task exits; code_class zero | nonzero
//	berth_oom_kills_total{group,container}                 counter    tasks the kernel killed for memory
//	berth_probe_failures_total{group,container,kind}       counter    a probe's verdict turning to failure:
//	                                                                  kind startup | liveness | readiness
//
// Read at scrape time (stateCollector), from the supervisor's status and
// containerd's task metrics:
//
//	berth_groups{state}                                    gauge    groups in each state; every state, 0 included
//	berth_group_ready{group}                               gauge    1 when the group is Ready
//	berth_container_restarts{group,container}              gauge    restarts, from the status
//	berth_probe_success{group,container,kind}              gauge    1/0: the last result; absent while unknown
//	berth_probe_duration_seconds{group,container,kind}     gauge    how long the last probe took
//	berth_container_cpu_seconds_total{group,container}     counter  CPU time of the running task
//	berth_container_memory_working_set_bytes{group,container} gauge the running task's working set
//	berth_container_memory_limit_bytes{group,container}    gauge    its memory limit; absent when it has none
//	berth_container_pids{group,container}                  gauge    processes and threads of the running task
//	berth_node_allocatable{resource}                       gauge    what groups may ask in all; resource cpu (cores) |
//	                                                                memory (bytes) | pids
//	berth_node_allocated{resource}                         gauge    what admitted groups ask
//	berth_node_memory_available_bytes                      gauge    the kernel's MemAvailable, as the pressure monitor last
//	                                                                read it; absent until its first read
//	berth_node_drained                                     gauge    1 while the node is drained
//	berth_containerd_up                                    gauge    1 when containerd answers a version request within 1s
//
// The per-container series of the event counters are dropped when the
// group is deleted, so deleted groups do not accumulate series; a group
// created again under the same name starts them from zero (a counter
// reset, which rate() handles).

// scrapeTimeout bounds everything a scrape asks of containerd.
const scrapeTimeout = 2 * time.Second

// usageParallelism is how many groups' usage a scrape reads at once.
const usageParallelism = 4

// groupStates are the states berth_groups reports, in the order of the
// supervisor's state diagram.
var groupStates = []api.GroupState{
	api.GroupPending, api.GroupStarting, api.GroupRunning, api.GroupBackOff, api.GroupStopping,
	api.GroupStopped, api.GroupFailed, api.GroupEvicted, api.GroupDeleting,
}

// metrics holds the agent's registry and the metrics recorded as things
// happen. Its methods are safe for concurrent use and never block on I/O.
type metrics struct {
	reg *prometheus.Registry

	requests      *prometheus.HistogramVec // route, method, code
	reconcile     prometheus.Histogram
	evictions     *prometheus.CounterVec // reason
	preemptions   prometheus.Counter
	exits         *prometheus.CounterVec // group, container, code_class
	oomKills      *prometheus.CounterVec // group, container
	probeFailures *prometheus.CounterVec // group, container, kind
}

// newMetrics returns the agent's metrics in a registry of their own, with
// the Go and process collectors. With a nil agent, the state read at
// scrape time (groups, usage, node, containerd) is left out: that is for
// tests of what is recorded as things happen.
func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_api_request_duration_seconds",
			Help:    "Time to serve an admin API request, by route, method and status code. A stream (follow=1) counts its whole length.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method", "code"}),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_reconcile_duration_seconds",
			Help:    "Time to bring the desired state up to date after a groups_dir sync or an apply.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_evictions_total",
			Help: "Groups the agent decided to evict, by reason (Preempted, NodePressure).",
		}, []string{"reason"}),
		preemptions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_preemptions_total",
			Help: "Admissions that evict lower-priority groups to make room.",
		}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_container_exits_total",
			Help: "Container task exits, by exit code class (zero, nonzero).",
		}, []string{"group", "container", "code_class"}),
		oomKills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_oom_kills_total",
			Help: "Container tasks the kernel killed for using more memory than their limit.",
		}, []string{"group", "container"}),
		probeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_probe_failures_total",
			Help: "Times a probe's verdict turned to failure (startup: gave up; liveness: restart; readiness: not ready), by probe kind.",
		}, []string{"group", "container", "kind"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.reconcile, m.evictions, m.preemptions, m.exits, m.oomKills, m.probeFailures,
	)
	for _, r := range []string{"Preempted", "NodePressure"} {
		m.evictions.WithLabelValues(r) // present at 0 from the start
	}
	if a != nil {
		m.reg.MustRegister(newStateCollector(a))
	}
	return m
}

// Handler serves the registry in the Prometheus exposition formats. A
// collector that fails leaves its families out; the rest is served.
func (m *metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg, // promhttp_metric_handler_errors_total
		MaxRequestsInFlight: 4,     // each scrape asks containerd; more get 503
	})
}

// Instrument wraps the handler of one route (e.g. "GET /v1/groups/{name}")
// to record berth_api_request_duration_seconds. The wrapped writer keeps
// the interfaces of the original (http.Flusher for streams, Unwrap for
// http.ResponseController).
func (m *metrics) Instrument(route string, h http.HandlerFunc) http.HandlerFunc {
	return promhttp.InstrumentHandlerDuration(m.requests.MustCurryWith(prometheus.Labels{"route": route}), h)
}

// ObserveReconcile records how long a file sync or an apply took.
func (m *metrics) ObserveReconcile(d time.Duration) {
	m.reconcile.Observe(d.Seconds())
}

// ObserveEvent counts what an event says happened. Call it for every
// event published; it never blocks (the counters are atomic, label lookups
// take a short lock).
//
// The supervisor reports each state change with the cause's reason (a
// group evicted for pressure moves to Stopping and Evicted with reason
// NodePressure; a preempting group waits in Pending with reason
// Preempting), so an eviction or preemption is counted from the agent's
// own decision event only, never from those transitions (isTransition).
func (m *metrics) ObserveEvent(e api.Event) {
	if e.Group == "" {
		return
	}
	if e.Container == "" {
		switch {
		case e.Reason == "Deleted":
			m.forgetGroup(e.Group)
		case isTransition(e):
		case e.Reason == "Preempted" || e.Reason == "NodePressure":
			m.evictions.WithLabelValues(e.Reason).Inc()
		case e.Reason == "Preempting":
			m.preemptions.Inc()
		}
		return
	}
	switch e.Reason {
	case "Exited":
		// The supervisor reports a non-zero exit as a Warning.
		class := "zero"
		if e.Type == api.EventWarning {
			class = "nonzero"
		}
		m.exits.WithLabelValues(e.Group, e.Container, class).Inc()
	case "OOMKilled":
		m.oomKills.WithLabelValues(e.Group, e.Container).Inc()
	case "StartupProbeFailed":
		m.probeFailures.WithLabelValues(e.Group, e.Container, "startup").Inc()
	case "LivenessProbeFailed":
		m.probeFailures.WithLabelValues(e.Group, e.Container, "liveness").Inc()
	case "ContainerNotReady":
		m.probeFailures.WithLabelValues(e.Group, e.Container, "readiness").Inc()
	}
}

// forgetGroup drops the per-container series of a deleted group.
func (m *metrics) forgetGroup(group string) {
	l := prometheus.Labels{"group": group}
	m.exits.DeletePartialMatch(l)
	m.oomKills.DeletePartialMatch(l)
	m.probeFailures.DeletePartialMatch(l)
}

// isTransition reports whether e is the supervisor's report of a group
// state change: its message is the new state, alone or followed by ": "
// and the cause (supervisor.runner.transition).
func isTransition(e api.Event) bool {
	for _, s := range groupStates {
		if e.Message == string(s) || strings.HasPrefix(e.Message, string(s)+": ") {
			return true
		}
	}
	return false
}

// stateCollector reads the node's state at scrape time. A scrape takes at
// most scrapeTimeout of containerd's time, whatever it has to read.
type stateCollector struct {
	a *Agent

	groups, groupReady, restarts                  *prometheus.Desc
	probeSuccess, probeDuration                   *prometheus.Desc
	cpu, memory, memoryLimit, pids                *prometheus.Desc
	allocatable, allocated, memAvailable, drained *prometheus.Desc
	ctrdUp                                        *prometheus.Desc
}

func newStateCollector(a *Agent) *stateCollector {
	gc := []string{"group", "container"}
	gck := []string{"group", "container", "kind"}
	return &stateCollector{
		a:             a,
		groups:        prometheus.NewDesc("berth_groups", "Groups in each state.", []string{"state"}, nil),
		groupReady:    prometheus.NewDesc("berth_group_ready", "1 when every container of the group is ready.", []string{"group"}, nil),
		restarts:      prometheus.NewDesc("berth_container_restarts", "Times the container was restarted.", gc, nil),
		probeSuccess:  prometheus.NewDesc("berth_probe_success", "1 when the probe's last result is success, 0 on failure; absent while unknown.", gck, nil),
		probeDuration: prometheus.NewDesc("berth_probe_duration_seconds", "How long the last probe took.", gck, nil),
		cpu:           prometheus.NewDesc("berth_container_cpu_seconds_total", "CPU time (user and system) of the container's running task.", gc, nil),
		memory:        prometheus.NewDesc("berth_container_memory_working_set_bytes", "Working set of the container's running task (usage minus inactive file cache).", gc, nil),
		memoryLimit:   prometheus.NewDesc("berth_container_memory_limit_bytes", "Memory limit of the container's running task; absent when it has none.", gc, nil),
		pids:          prometheus.NewDesc("berth_container_pids", "Processes and threads of the container's running task.", gc, nil),
		allocatable:   prometheus.NewDesc("berth_node_allocatable", "What groups may ask in all: cpu in cores, memory in bytes, pids.", []string{"resource"}, nil),
		allocated:     prometheus.NewDesc("berth_node_allocated", "What admitted groups (and groups being deleted) ask: cpu in cores, memory in bytes, pids.", []string{"resource"}, nil),
		memAvailable:  prometheus.NewDesc("berth_node_memory_available_bytes", "The kernel's MemAvailable, as the pressure monitor last read it.", nil, nil),
		drained:       prometheus.NewDesc("berth_node_drained", "1 while the node is drained: every group stopped until undrain.", nil, nil),
		ctrdUp:        prometheus.NewDesc("berth_containerd_up", "1 when containerd answers a version request within 1s.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.groups, c.groupReady, c.restarts, c.probeSuccess, c.probeDuration,
		c.cpu, c.memory, c.memoryLimit, c.pids, c.allocatable, c.allocated, c.memAvailable, c.drained, c.ctrdUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	if a.sup == nil {
		return // not started yet
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	up := c.containerdUp(ctx)
	gauge(c.ctrdUp, boolFloat(up))

	a.mu.Lock()
	ns := a.nodeStatusLocked()
	defined := make([]string, 0, len(a.groups))
	for n := range a.groups {
		defined = append(defined, n)
	}
	a.mu.Unlock()
	for _, r := range []struct {
		name              string
		allocatable, used float64
	}{
		{"cpu", float64(ns.Allocatable.CPU) / 1000, float64(ns.Allocated.CPU) / 1000},
		{"memory", float64(ns.Allocatable.Memory), float64(ns.Allocated.Memory)},
		{"pids", float64(ns.Allocatable.Pids), float64(ns.Allocated.Pids)},
	} {
		gauge(c.allocatable, r.allocatable, r.name)
		gauge(c.allocated, r.used, r.name)
	}
	if ns.MemoryAvailable > 0 {
		gauge(c.memAvailable, float64(ns.MemoryAvailable))
	}
	gauge(c.drained, boolFloat(ns.Drained))

	// As GET /v1/groups: every group the supervisor runs, and the defined
	// ones it has not been given yet (Pending admission).
	sts := a.sup.List()
	seen := make(map[string]bool, len(sts))
	for _, st := range sts {
		seen[st.Name] = true
	}
	for _, n := range defined {
		if !seen[n] {
			sts = append(sts, api.GroupStatus{Name: n, State: api.GroupPending})
		}
	}
	counts := make(map[api.GroupState]int, len(groupStates))
	for _, st := range sts {
		counts[st.State]++
		gauge(c.groupReady, boolFloat(st.Ready), st.Name)
		for _, ct := range st.Containers {
			gauge(c.restarts, float64(ct.Restarts), st.Name, ct.Name)
			for _, p := range ct.Probes {
				switch p.Result {
				case "success", "failure":
					gauge(c.probeSuccess, boolFloat(p.Result == "success"), st.Name, ct.Name, p.Kind)
				}
				if !p.LastProbe.IsZero() {
					gauge(c.probeDuration, p.Duration.Seconds(), st.Name, ct.Name, p.Kind)
				}
			}
		}
	}
	for _, s := range groupStates {
		gauge(c.groups, float64(counts[s]), string(s))
	}

	if !up {
		return // usage comes from containerd too
	}
	usage := make([]map[string]supervisor.Usage, len(sts))
	var eg errgroup.Group
	eg.SetLimit(usageParallelism)
	for i, st := range sts {
		if st.Running() == 0 {
			continue
		}
		eg.Go(func() error {
			usage[i] = a.sup.ContainerUsage(ctx, st.Name)
			return nil
		})
	}
	_ = eg.Wait()
	for i, st := range sts {
		for name, u := range usage[i] {
			ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, float64(u.CPUNanos)/1e9, st.Name, name)
			gauge(c.memory, float64(u.MemoryBytes), st.Name, name)
			if u.MemoryLimit > 0 {
				gauge(c.memoryLimit, float64(u.MemoryLimit), st.Name, name)
			}
			gauge(c.pids, float64(u.Pids), st.Name, name)
		}
	}
}

// containerdUp reports whether containerd answers within a second.
func (c *stateCollector) containerdUp(ctx context.Context) bool {
	if c.a.client == nil {
		return false
	}
	vctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := c.a.client.Version(vctx)
	return err == nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
