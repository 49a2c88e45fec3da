package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-project/berth/api"
)

// probeKind names what a probe decides.
type probeKind string

const (
	// probeStartup gates liveness and readiness until it first passes;
	// failing failure_threshold times in a row restarts the container.
	probeStartup probeKind = "startup"
	// probeLiveness failing restarts the container.
	probeLiveness probeKind = "liveness"
	// probeReadiness drives the container's Ready condition.
	probeReadiness probeKind = "readiness"
)

func (k probeKind) String() string { return string(k) }

// Results of one probe in api.ProbeStatus.
const (
	probeSuccess = "success"
	probeFailure = "failure"
	probeUnknown = "unknown"
)

// verdict is a prober's judgement after thresholds. Readiness and
// startup probes start unknown; liveness starts healthy (a container is
// alive until proven otherwise). The transitions, all in probeState.record:
//
//	              S
//	unknown ─────────────► healthy
//	   │                    │   ▲
//	   │ F                F │   │ S
//	   │                    ▼   │
//	   └─────────────────► unhealthy
//
//	S: success_threshold successes in a row
//	F: failure_threshold failures in a row
type verdict int

const (
	verdictUnknown verdict = iota
	verdictHealthy
	verdictUnhealthy
)

func (v verdict) String() string {
	switch v {
	case verdictHealthy:
		return "healthy"
	case verdictUnhealthy:
		return "unhealthy"
	}
	return "unknown"
}

// probeState is a verdict with the consecutive counts that move it.
type probeState struct {
	verdict             verdict
	successes, failures int
}

// record counts one probe and applies the transitions drawn above. It
// reports whether the verdict changed.
func (s *probeState) record(ok bool, successThreshold, failureThreshold int) bool {
	prev := s.verdict
	if ok {
		s.successes, s.failures = s.successes+1, 0
		if s.successes >= successThreshold {
			s.verdict = verdictHealthy
		}
	} else {
		s.successes, s.failures = 0, s.failures+1
		if s.failures >= failureThreshold {
			s.verdict = verdictUnhealthy
		}
	}
	return s.verdict != prev
}

// probeResult is what a prober reports after each probe.
type probeResult struct {
	Kind probeKind
	// Healthy is the verdict after thresholds: it becomes true after
	// success_threshold successes in a row and false after
	// failure_threshold failures in a row. Before either, it is the
	// initial verdict: false for readiness and startup (unknown), true for
	// liveness.
	Healthy bool
	// Changed is set on the probe that changed the verdict, including the
	// first one of a readiness or startup probe (unknown to healthy, or
	// unknown to unhealthy after failure_threshold failures).
	Changed bool
	// Status is the probe's state for the API.
	Status api.ProbeStatus
}

// prober runs one probe of one container. Make it with newProber and run
// it with Run; it lives as long as the ctx given to Run (the container's
// task).
type prober struct {
	kind   probeKind
	action string // describeProbe, computed once
	spec   api.Probe
	env    actionEnv
	out    func(probeResult)

	initialDelay, period, timeout      time.Duration
	successThreshold, failureThreshold int
}

// newProber returns a prober for spec, with zero fields set to the
// defaults (api.DefaultProbePeriod, …).
//
// out is called from Run's goroutine after every probe, one call at a
// time. It must not block: hand the result to a channel (with a select on
// the runner's ctx) and return. While out runs, no probe is made.
func newProber(kind probeKind, spec *api.Probe, env actionEnv, out func(probeResult)) *prober {
	p := &prober{
		kind:             kind,
		action:           describeProbe(spec),
		spec:             *spec,
		env:              env,
		out:              out,
		initialDelay:     spec.InitialDelay.D(),
		period:           spec.Period.D(),
		timeout:          spec.Timeout.D(),
		successThreshold: spec.SuccessThreshold,
		failureThreshold: spec.FailureThreshold,
	}
	if p.initialDelay < 0 {
		p.initialDelay = 0
	}
	if p.period <= 0 {
		p.period = api.DefaultProbePeriod.D()
	}
	if p.timeout <= 0 {
		p.timeout = api.DefaultProbeTimeout.D()
	}
	if p.successThreshold < 1 {
		p.successThreshold = api.DefaultSuccessThreshold
	}
	if p.failureThreshold < 1 {
		p.failureThreshold = api.DefaultFailureThreshold
	}
	return p
}

// initialVerdict is the verdict before any probe.
func (p *prober) initialVerdict() verdict {
	if p.kind == probeLiveness {
		return verdictHealthy
	}
	return verdictUnknown
}

// Initial is the result before the first probe (Result "unknown"), for
// showing the probe in a status as soon as it is started. It is safe to
// call at any time.
func (p *prober) Initial() probeResult {
	return probeResult{
		Kind:    p.kind,
		Healthy: p.initialVerdict() == verdictHealthy,
		Status:  api.ProbeStatus{Kind: p.kind.String(), Action: p.action, Result: probeUnknown},
	}
}

// Run waits initial_delay, then probes every period, each probe bounded
// by timeout, and reports every probe to out. It returns nil when ctx
// ends; a probe cut short by ctx is not reported.
func (p *prober) Run(ctx context.Context) error {
	if p.initialDelay > 0 {
		t := time.NewTimer(p.initialDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	tick := time.NewTicker(p.period)
	defer tick.Stop()
	state := probeState{verdict: p.initialVerdict()}
	for {
		start := time.Now()
		msg, err := p.probeOnce(ctx)
		took := time.Since(start)
		if ctx.Err() != nil {
			return nil
		}
		changed := state.record(err == nil, p.successThreshold, p.failureThreshold)
		st := api.ProbeStatus{
			Kind:      p.kind.String(),
			Action:    p.action,
			Result:    probeSuccess,
			Message:   msg,
			LastProbe: start,
			Failures:  state.failures,
			Successes: state.successes,
			Duration:  took,
		}
		if err != nil {
			st.Result, st.Message = probeFailure, err.Error()
		}
		p.out(probeResult{Kind: p.kind, Healthy: state.verdict == verdictHealthy, Changed: changed, Status: st})
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// probeOnce runs the action once under the probe's timeout.
func (p *prober) probeOnce(ctx context.Context) (string, error) {
	actx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	msg, err := runProbeAction(actx, p.env, &p.spec)
	if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		// The action's own error would only say "context deadline exceeded".
		err = fmt.Errorf("%s: timed out after %s", p.action, p.timeout)
	}
	return msg, err
}
