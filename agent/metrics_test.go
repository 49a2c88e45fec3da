package agent

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/berth-project/berth/api"
)

// requestSamples returns how many requests berth_api_request_duration_seconds
// recorded with exactly these labels.
func requestSamples(t *testing.T, m *metrics, labels map[string]string) uint64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "berth_api_request_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if labelsEqual(mt.GetLabel(), labels) {
				return mt.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func labelsEqual(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
			return false
		}
	}
	return true
}

// TestMetricsInstrumentLabelsRouteMethodAndCode proves that each request is
// recorded once under its route, its method and the status code the
// handler wrote (200 when it wrote none).
func TestMetricsInstrumentLabelsRouteMethodAndCode(t *testing.T) {
	m := newMetrics(nil)
	get := m.Instrument("GET /v1/groups/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("missing") != "" {
			writeError(w, notFound("x"))
			return
		}
		io.WriteString(w, "ok") // no WriteHeader: 200
	})
	post := m.Instrument("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
	})
	for _, req := range []struct {
		h      http.HandlerFunc
		method string
		target string
	}{
		{get, "GET", "/v1/groups/a"},
		{get, "GET", "/v1/groups/b"},
		{get, "GET", "/v1/groups/x?missing=1"},
		{post, "POST", "/v1/apply"},
	} {
		req.h(httptest.NewRecorder(), httptest.NewRequest(req.method, req.target, nil))
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   uint64
	}{
		{"implicit 200", map[string]string{"route": "GET /v1/groups/{name}", "method": "get", "code": "200"}, 2},
		{"error class to 404", map[string]string{"route": "GET /v1/groups/{name}", "method": "get", "code": "404"}, 1},
		{"explicit 400", map[string]string{"route": "POST /v1/apply", "method": "post", "code": "400"}, 1},
		{"nothing else", map[string]string{"route": "POST /v1/apply", "method": "post", "code": "200"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := requestSamples(t, m, tc.labels); got != tc.want {
				t.Errorf("%v: %d samples, want %d", tc.labels, got, tc.want)
			}
		})
	}
}

// TestMetricsInstrumentKeepsStreamsFlowing proves that an instrumented
// stream still flushes: the client reads the first line while the handler
// is still running, and the request is recorded once it ends.
func TestMetricsInstrumentKeepsStreamsFlowing(t *testing.T) {
	m := newMetrics(nil)
	got := make(chan struct{})
	h := m.Instrument("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			t.Error("instrumented ResponseWriter is not an http.Flusher")
			return
		}
		w.Header().Set("Content-Type", api.ContentTypeNDJSON)
		io.WriteString(w, "{\"seq\":1}\n")
		f.Flush()
		select {
		case <-got: // the client read the line before the handler returned
		case <-time.After(10 * time.Second):
			t.Error("the client did not get the flushed line within 10s")
		}
		io.WriteString(w, "{\"seq\":2}\n")
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "?follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "{\"seq\":1}\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(got)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "{\"seq\":2}\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	// The handler has returned once the body ended; the observation is
	// made right after, in the server's goroutine.
	labels := map[string]string{"route": "GET /v1/events", "method": "get", "code": "200"}
	deadline := time.Now().Add(5 * time.Second)
	for requestSamples(t, m, labels) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no sample %v after the stream ended", labels)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMetricsObserveEventCounts proves which events count: each eviction
// and preemption once (from the agent's decision, not from the supervisor's
// transitions that repeat its reason), exits by code class, OOM kills,
// probe verdicts turning to failure; and that deleting a group drops its
// per-container series.
func TestMetricsObserveEventCounts(t *testing.T) {
	m := newMetrics(nil)
	now := time.Now()
	ev := func(typ, group, container, reason, msg string) api.Event {
		return api.Event{Time: now, Type: typ, Group: group, Container: container, Reason: reason, Message: msg}
	}
	const W, N = api.EventWarning, api.EventNormal
	for _, e := range []api.Event{
		// Preemption of lo by hi, as the agent and the supervisor report it.
		ev(W, "lo", "", "Preempted", "preempted by hi (priority 10 > 1)"),
		ev(N, "hi", "", "Preempting", "evicting lo to make room for cpu=1"),
		ev(N, "hi", "", "Preempting", "Pending: waiting for lo to stop"),
		ev(N, "lo", "", "Preempted", "Stopping: stopping: preempted by hi (priority 10 > 1)"),
		ev(W, "lo", "", "Preempted", "Evicted: preempted by hi (priority 10 > 1)"),
		// Eviction for node pressure.
		ev(W, "big", "", "NodePressure", "evicted for node pressure: memory.available<100Mi"),
		ev(N, "big", "", "NodePressure", "Stopping: stopping: evicted for node pressure: memory.available<100Mi"),
		ev(W, "big", "", "NodePressure", "Evicted: evicted for node pressure: memory.available<100Mi"),
		// Containers.
		ev(N, "web", "app", "Started", "started container app (pid 10)"),
		ev(N, "web", "app", "Exited", "container app exited with code 0"),
		ev(W, "web", "app", "Exited", "container app exited with code 137"),
		ev(W, "web", "app", "OOMKilled", "container app was killed for using more memory than its limit"),
		ev(W, "web", "app", "Exited", "container app exited with code 1"),
		ev(W, "web", "app", "LivenessProbeFailed", "liveness probe of app failed 3 times: exit code 1"),
		ev(W, "web", "app", "StartupProbeFailed", "startup probe of app failed 5 times: refused"),
		ev(W, "web", "app", "ContainerNotReady", "container app is not ready: 503"),
		ev(N, "web", "app", "ContainerReady", "container app is ready"),
		ev(W, "web", "app", "ContainerNotReady", "container app is not ready: 503"),
		ev(W, "db", "pg", "OOMKilled", "container pg was killed for using more memory than its limit"),
		// Not about a group: ignored.
		ev(N, "", "", "ImageImported", "berth.local/x sha256:…"),
	} {
		m.ObserveEvent(e)
	}
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"evictions Preempted", testutil.ToFloat64(m.evictions.WithLabelValues("Preempted")), 1},
		{"evictions NodePressure", testutil.ToFloat64(m.evictions.WithLabelValues("NodePressure")), 1},
		{"preemptions", testutil.ToFloat64(m.preemptions), 1},
		{"exits zero", testutil.ToFloat64(m.exits.WithLabelValues("web", "app", "zero")), 1},
		{"exits nonzero", testutil.ToFloat64(m.exits.WithLabelValues("web", "app", "nonzero")), 2},
		{"oom web/app", testutil.ToFloat64(m.oomKills.WithLabelValues("web", "app")), 1},
		{"oom db/pg", testutil.ToFloat64(m.oomKills.WithLabelValues("db", "pg")), 1},
		{"probe liveness", testutil.ToFloat64(m.probeFailures.WithLabelValues("web", "app", "liveness")), 1},
		{"probe startup", testutil.ToFloat64(m.probeFailures.WithLabelValues("web", "app", "startup")), 1},
		{"probe readiness", testutil.ToFloat64(m.probeFailures.WithLabelValues("web", "app", "readiness")), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
			}
		})
	}

	m.ObserveEvent(ev(N, "web", "", "Deleted", "group deleted"))
	if n := testutil.CollectAndCount(m.exits); n != 0 {
		t.Errorf("after web was deleted: %d exit series left, want 0", n)
	}
	if n := testutil.CollectAndCount(m.probeFailures); n != 0 {
		t.Errorf("after web was deleted: %d probe failure series left, want 0", n)
	}
	if n := testutil.CollectAndCount(m.oomKills); n != 1 {
		t.Errorf("after web was deleted: %d OOM series left, want 1 (db/pg)", n)
	}
	if got := testutil.ToFloat64(m.evictions.WithLabelValues("Preempted")); got != 1 {
		t.Errorf("deleting a group changed berth_evictions_total{reason=Preempted} to %v", got)
	}
}

// TestMetricsHandlerServesRecordedAndRuntimeFamilies proves that the
// handler serves the text format with the Go runtime's families, the
// eviction reasons at zero before any eviction, and reconcile durations.
func TestMetricsHandlerServesRecordedAndRuntimeFamilies(t *testing.T) {
	m := newMetrics(nil)
	m.ObserveReconcile(30 * time.Millisecond)
	m.ObserveReconcile(2 * time.Second)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{
		"\ngo_goroutines ",
		"\nprocess_start_time_seconds ",
		"\nberth_evictions_total{reason=\"NodePressure\"} 0\n",
		"\nberth_evictions_total{reason=\"Preempted\"} 0\n",
		"\nberth_preemptions_total 0\n",
		"\nberth_reconcile_duration_seconds_count 2\n",
		"\nberth_reconcile_duration_seconds_bucket{le=\"0.05\"} 1\n",
		"\nberth_reconcile_duration_seconds_sum 2.03\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics has no %q", strings.TrimSpace(want))
		}
	}
	if t.Failed() {
		t.Logf("body:\n%s", body)
	}
}
