package supervisor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// scriptedExec answers exec probes from a script: true is exit 0, false
// exit 1. Past the end of the script it repeats the last answer.
type scriptedExec struct {
	mu     sync.Mutex
	script []bool
	calls  int
}

func (s *scriptedExec) exec(ctx context.Context, id string, args []string) (int, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := s.script[min(s.calls, len(s.script)-1)]
	s.calls++
	if ok {
		return 0, "ok", nil
	}
	return 1, "bad", nil
}

// probeCollector receives a prober's results without ever blocking it.
type probeCollector struct {
	t  *testing.T
	ch chan probeResult
}

func newProbeCollector(t *testing.T) *probeCollector {
	return &probeCollector{t: t, ch: make(chan probeResult, 1000)}
}

func (c *probeCollector) out(r probeResult) {
	select {
	case c.ch <- r:
	default:
		c.t.Error("probe collector full")
	}
}

// next waits for the next result.
func (c *probeCollector) next() probeResult {
	c.t.Helper()
	select {
	case r := <-c.ch:
		return r
	case <-time.After(10 * time.Second):
		c.t.Fatal("no probe result within 10s")
		return probeResult{}
	}
}

// runProber runs p until the test ends and reports when Run returned.
func runProber(t *testing.T, p *prober) (cancel func(), done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	d := make(chan struct{})
	go func() {
		defer close(d)
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-d
	})
	return cancel, d
}

func fastProbe(success, failure int) *api.Probe {
	return &api.Probe{
		Exec:             &api.ExecAction{Command: []string{"check"}},
		Period:           api.Duration(2 * time.Millisecond),
		Timeout:          api.Duration(time.Second),
		SuccessThreshold: success,
		FailureThreshold: failure,
	}
}

func TestProbeThresholdsFlipVerdict(t *testing.T) {
	const S, F = true, false
	for _, tc := range []struct {
		name             string
		kind             probeKind
		success, failure int
		script           []bool
		wantHealthy      []bool
		wantChanged      []bool
	}{
		{
			name: "readiness starts unknown, fails at the failure threshold, recovers at once",
			kind: probeReadiness, success: 1, failure: 3,
			script:      []bool{F, F, F, S, F, F, F},
			wantHealthy: []bool{F, F, F, S, S, S, F},
			wantChanged: []bool{F, F, S, S, F, F, S},
		},
		{
			name: "readiness needs success_threshold successes in a row",
			kind: probeReadiness, success: 2, failure: 1,
			script:      []bool{S, F, S, S, F, S, S},
			wantHealthy: []bool{F, F, F, S, F, F, S},
			wantChanged: []bool{F, S, F, S, S, F, S},
		},
		{
			name: "liveness starts healthy and fails only at the failure threshold",
			kind: probeLiveness, success: 1, failure: 3,
			script:      []bool{F, F, S, F, F, F, S},
			wantHealthy: []bool{S, S, S, S, S, F, S},
			wantChanged: []bool{F, F, F, F, F, S, S},
		},
		{
			name: "startup fails at the failure threshold",
			kind: probeStartup, success: 1, failure: 2,
			script:      []bool{F, F, F},
			wantHealthy: []bool{F, F, F},
			wantChanged: []bool{F, S, F},
		},
		{
			name: "startup passes on the first success",
			kind: probeStartup, success: 1, failure: 2,
			script:      []bool{F, S},
			wantHealthy: []bool{F, S},
			wantChanged: []bool{F, S},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := &scriptedExec{script: tc.script}
			col := newProbeCollector(t)
			p := newProber(tc.kind, fastProbe(tc.success, tc.failure), actionEnv{ContainerID: "g.c", Exec: ex.exec}, col.out)
			if init := p.Initial(); init.Healthy != (tc.kind == probeLiveness) || init.Status.Result != "unknown" {
				t.Errorf("Initial() = healthy %v, result %q", init.Healthy, init.Status.Result)
			}
			runProber(t, p)
			succ, fail := 0, 0
			for i, ok := range tc.script {
				r := col.next()
				if ok {
					succ, fail = succ+1, 0
				} else {
					succ, fail = 0, fail+1
				}
				wantResult := map[bool]string{true: "success", false: "failure"}[ok]
				if r.Kind != tc.kind || r.Healthy != tc.wantHealthy[i] || r.Changed != tc.wantChanged[i] ||
					r.Status.Result != wantResult || r.Status.Successes != succ || r.Status.Failures != fail {
					t.Errorf("probe %d: kind %s healthy %v changed %v result %s successes %d failures %d; want %s %v %v %s %d %d",
						i+1, r.Kind, r.Healthy, r.Changed, r.Status.Result, r.Status.Successes, r.Status.Failures,
						tc.kind, tc.wantHealthy[i], tc.wantChanged[i], wantResult, succ, fail)
				}
			}
		})
	}
}

func TestProbeHTTPStatusReportsEveryProbe(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	dial, asked := redirectDial(srv.Listener.Addr().String())
	spec := &api.Probe{
		HTTP:             &api.HTTPAction{Path: "/health", Port: 8080},
		Period:           api.Duration(5 * time.Millisecond),
		FailureThreshold: 2,
	}
	col := newProbeCollector(t)
	runProber(t, newProber(probeReadiness, spec, actionEnv{Dial: dial}, col.out))

	r := col.next()
	if !r.Healthy || !r.Changed {
		t.Fatalf("first probe against a 200: healthy %v changed %v, want both", r.Healthy, r.Changed)
	}
	st := r.Status
	if st.Kind != "readiness" || st.Action != "http GET :8080/health" || st.Result != "success" ||
		!strings.Contains(st.Message, "200") || st.LastProbe.IsZero() || st.Duration <= 0 {
		t.Errorf("status %+v", st)
	}
	status.Store(http.StatusInternalServerError)
	// Results of probes already under way may still be successes; the
	// verdict must flip on the second failure in a row.
	for fails := 0; fails < 2; {
		r = col.next()
		if r.Status.Result == "failure" {
			fails++
			if !strings.Contains(r.Status.Message, "500") {
				t.Errorf("failure message %q does not carry the status code", r.Status.Message)
			}
		}
		if r.Healthy != (fails < 2) || r.Changed != (fails == 2) {
			t.Fatalf("after %d failures: healthy %v changed %v", fails, r.Healthy, r.Changed)
		}
	}
	if a := asked(); len(a) == 0 || a[0] != "tcp 127.0.0.1:8080" {
		t.Errorf("dialed %v, want tcp 127.0.0.1:8080", a)
	}
}

func TestProbeWaitsInitialDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	ex := &scriptedExec{script: []bool{true}}
	spec := fastProbe(1, 1)
	spec.InitialDelay = api.Duration(delay)
	col := newProbeCollector(t)
	start := time.Now()
	runProber(t, newProber(probeReadiness, spec, actionEnv{Exec: ex.exec}, col.out))
	r := col.next()
	if waited := r.Status.LastProbe.Sub(start); waited < delay {
		t.Errorf("first probe %s after Run, want at least the initial delay %s", waited, delay)
	}
}

func TestProbeEndsDuringInitialDelayWithoutProbing(t *testing.T) {
	ex := &scriptedExec{script: []bool{true}}
	spec := fastProbe(1, 1)
	spec.InitialDelay = api.Duration(time.Hour)
	col := newProbeCollector(t)
	cancel, done := runProber(t, newProber(probeLiveness, spec, actionEnv{Exec: ex.exec}, col.out))
	cancel()
	<-done
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.calls != 0 || len(col.ch) != 0 {
		t.Errorf("%d probes made, %d reported; want none", ex.calls, len(col.ch))
	}
}

func TestProbeTimeoutCountsAsFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}))
	defer srv.Close()
	dial, _ := redirectDial(srv.Listener.Addr().String())
	spec := &api.Probe{
		HTTP:             &api.HTTPAction{Path: "/slow", Port: 80},
		Period:           api.Duration(5 * time.Millisecond),
		Timeout:          api.Duration(20 * time.Millisecond),
		FailureThreshold: 1,
	}
	col := newProbeCollector(t)
	runProber(t, newProber(probeLiveness, spec, actionEnv{Dial: dial}, col.out))
	r := col.next()
	if r.Status.Result != "failure" || r.Healthy || !r.Changed {
		t.Fatalf("result %q healthy %v changed %v; want a failure that flips liveness", r.Status.Result, r.Healthy, r.Changed)
	}
	if want := "http GET :80/slow: timed out after 20ms"; r.Status.Message != want {
		t.Errorf("message %q, want %q", r.Status.Message, want)
	}
}

func TestProbeRunReturnsWhenContextEnds(t *testing.T) {
	started := make(chan struct{})
	var once sync.Once
	// An exec that blocks until its ctx ends: Run must not wait for the
	// probe's timeout, nor report the probe cut short.
	blocking := func(ctx context.Context, id string, args []string) (int, string, error) {
		once.Do(func() { close(started) })
		<-ctx.Done()
		return -1, "", ctx.Err()
	}
	spec := fastProbe(1, 1)
	spec.Timeout = api.Duration(time.Hour)
	col := newProbeCollector(t)
	cancel, done := runProber(t, newProber(probeReadiness, spec, actionEnv{Exec: blocking}, col.out))
	<-started
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its ctx ending")
	}
	if n := len(col.ch); n != 0 {
		t.Errorf("%d results reported for a probe cut short by the end of ctx", n)
	}
}

func TestProbeDefaults(t *testing.T) {
	p := newProber(probeReadiness, &api.Probe{TCP: &api.TCPAction{Port: 1}}, actionEnv{}, func(probeResult) {})
	if p.period != api.DefaultProbePeriod.D() || p.timeout != api.DefaultProbeTimeout.D() ||
		p.successThreshold != api.DefaultSuccessThreshold || p.failureThreshold != api.DefaultFailureThreshold ||
		p.initialDelay != 0 {
		t.Errorf("defaults: period %s timeout %s success %d failure %d delay %s",
			p.period, p.timeout, p.successThreshold, p.failureThreshold, p.initialDelay)
	}
}
