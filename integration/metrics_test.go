package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-project/berth/api"
)

// scrape is one GET /metrics on the admin socket, parsed.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics fetches and parses the agent's metrics.
func scrapeMetrics(t testing.TB, a *agentProc) scrape {
	t.Helper()
	status, body, err := httpUnix(a.Socket, "GET", "/metrics", nil)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d: %s", status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse GET /metrics: %v\n%s", err, body)
	}
	return mfs
}

// find returns the samples of family name whose labels include want,
// failing the test when the family is missing or has another type.
func (s scrape) find(t testing.TB, name string, typ dto.MetricType, want map[string]string) []*dto.Metric {
	t.Helper()
	mf, ok := s[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
	if mf.GetType() != typ {
		t.Fatalf("%s is a %s, want a %s", name, mf.GetType(), typ)
	}
	var out []*dto.Metric
	for _, m := range mf.GetMetric() {
		if hasLabels(m, want) {
			out = append(out, m)
		}
	}
	return out
}

// value returns the value of the one gauge or counter sample of family
// name with labels want (a subset of its labels).
func (s scrape) value(t testing.TB, name string, typ dto.MetricType, want map[string]string) float64 {
	t.Helper()
	ms := s.find(t, name, typ, want)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, want, len(ms))
	}
	if typ == dto.MetricType_COUNTER {
		return ms[0].GetCounter().GetValue()
	}
	return ms[0].GetGauge().GetValue()
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// TestMetricsReportGroupsProbesUsageAndAPI proves that GET /metrics on the
// admin socket reports, for a running group with a readiness probe: the
// group counts by state, readiness, the probe's result and duration, the
// container's restarts and usage from containerd, the node's capacity,
// containerd's health, API request durations and the Go runtime; and that
// a readiness failure shows in the gauges and in the event counter.
func TestMetricsReportGroupsProbesUsageAndAPI(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "web.toml", `name = "web"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "200ms", timeout = "150ms" }
`)
	st := waitGroup(t, a, "web", 30*time.Second, "running and ready", func(st *api.GroupStatus) bool {
		return allRunning(st) && st.Ready
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.api().List(ctx); err != nil { // GET /v1/groups, for the API histogram
		t.Fatal(err)
	}

	const (
		gauge     = dto.MetricType_GAUGE
		counter   = dto.MetricType_COUNTER
		histogram = dto.MetricType_HISTOGRAM
	)
	app := map[string]string{"group": "web", "container": "app"}
	readiness := map[string]string{"group": "web", "container": "app", "kind": "readiness"}
	s := scrapeMetrics(t, a)

	t.Run("groups by state", func(t *testing.T) {
		states := []api.GroupState{api.GroupPending, api.GroupStarting, api.GroupRunning, api.GroupBackOff,
			api.GroupStopping, api.GroupStopped, api.GroupFailed, api.GroupEvicted, api.GroupDeleting}
		for _, state := range states {
			want := 0.0
			if state == api.GroupRunning {
				want = 1
			}
			if got := s.value(t, "berth_groups", gauge, map[string]string{"state": string(state)}); got != want {
				t.Errorf("berth_groups{state=%q} = %v, want %v", state, got, want)
			}
		}
		if got := s.value(t, "berth_group_ready", gauge, map[string]string{"group": "web"}); got != 1 {
			t.Errorf("berth_group_ready{group=web} = %v, want 1", got)
		}
	})
	t.Run("container and probe", func(t *testing.T) {
		if got := s.value(t, "berth_container_restarts", gauge, app); got != 0 {
			t.Errorf("berth_container_restarts = %v, want 0", got)
		}
		if got := s.value(t, "berth_probe_success", gauge, readiness); got != 1 {
			t.Errorf("berth_probe_success{kind=readiness} = %v, want 1", got)
		}
		// An HTTP GET inside the group's netns, within its 150ms timeout.
		if got := s.value(t, "berth_probe_duration_seconds", gauge, readiness); got <= 0 || got > 0.15 {
			t.Errorf("berth_probe_duration_seconds{kind=readiness} = %v, want in (0, 0.15]", got)
		}
	})
	t.Run("usage", func(t *testing.T) {
		// A Go HTTP server that started and answers probes: some CPU time,
		// megabytes of working set, a few threads.
		if got := s.value(t, "berth_container_cpu_seconds_total", counter, app); got <= 0 || got > 60 {
			t.Errorf("berth_container_cpu_seconds_total = %v, want in (0, 60]", got)
		}
		if got := s.value(t, "berth_container_memory_working_set_bytes", gauge, app); got < 64<<10 || got > 1<<30 {
			t.Errorf("berth_container_memory_working_set_bytes = %v, want between 64 KiB and 1 GiB", got)
		}
		if got := s.value(t, "berth_container_pids", gauge, app); got < 1 || got > 1000 {
			t.Errorf("berth_container_pids = %v, want in [1, 1000]", got)
		}
	})
	t.Run("node and containerd", func(t *testing.T) {
		if got := s.value(t, "berth_containerd_up", gauge, nil); got != 1 {
			t.Errorf("berth_containerd_up = %v, want 1", got)
		}
		if got := s.value(t, "berth_node_drained", gauge, nil); got != 0 {
			t.Errorf("berth_node_drained = %v, want 0", got)
		}
		for _, r := range []string{"cpu", "memory", "pids"} {
			if got := s.value(t, "berth_node_allocatable", gauge, map[string]string{"resource": r}); got <= 0 {
				t.Errorf("berth_node_allocatable{resource=%s} = %v, want > 0", r, got)
			}
			// The group asks nothing: nothing is allocated.
			if got := s.value(t, "berth_node_allocated", gauge, map[string]string{"resource": r}); got != 0 {
				t.Errorf("berth_node_allocated{resource=%s} = %v, want 0", r, got)
			}
		}
	})
	t.Run("API and runtime", func(t *testing.T) {
		var n uint64
		for _, m := range s.find(t, "berth_api_request_duration_seconds", histogram, map[string]string{"method": "get", "code": "200"}) {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && strings.Contains(l.GetValue(), api.PathGroups) {
					n += m.GetHistogram().GetSampleCount()
				}
			}
		}
		if n == 0 {
			t.Errorf("berth_api_request_duration_seconds has no sample of a %s route", api.PathGroups)
		}
		if got := s.value(t, "go_goroutines", gauge, nil); got < 1 {
			t.Errorf("go_goroutines = %v", got)
		}
		if got := s.value(t, "berth_evictions_total", counter, map[string]string{"reason": "Preempted"}); got != 0 {
			t.Errorf("berth_evictions_total{reason=Preempted} = %v, want 0", got)
		}
	})
	if t.Failed() {
		return
	}

	// Readiness fails: the gauges follow at the next scrape, and the
	// ContainerNotReady event is counted.
	if code, body := nsDo(t, st.NetNS, "POST", "http://127.0.0.1:8080/ready?v=false", ""); code != 200 {
		t.Fatalf("POST /ready?v=false: %d %s", code, body)
	}
	waitGroup(t, a, "web", 10*time.Second, "not ready", func(st *api.GroupStatus) bool { return !st.Ready })
	// The event may be counted just after the status changed.
	waitFor(t, 5*time.Second, "berth_probe_failures_total{kind=readiness} to count the ContainerNotReady event", func() (bool, error) {
		s = scrapeMetrics(t, a)
		if _, ok := s["berth_probe_failures_total"]; !ok {
			return false, fmt.Errorf("no berth_probe_failures_total family")
		}
		return len(s.find(t, "berth_probe_failures_total", counter, readiness)) == 1, nil
	})
	if got := s.value(t, "berth_group_ready", gauge, map[string]string{"group": "web"}); got != 0 {
		t.Errorf("not ready: berth_group_ready{group=web} = %v, want 0", got)
	}
	if got := s.value(t, "berth_probe_success", gauge, readiness); got != 0 {
		t.Errorf("not ready: berth_probe_success{kind=readiness} = %v, want 0", got)
	}
	if got := s.value(t, "berth_probe_failures_total", counter, readiness); got != 1 {
		t.Errorf("not ready: berth_probe_failures_total{kind=readiness} = %v, want 1", got)
	}
}
