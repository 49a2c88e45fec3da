package supervisor

import (
	"time"

	"github.com/berth-project/berth/api"
)

// Backoff configures restart delays: Initial, then ×Factor per failure up
// to Max; ResetAfter of healthy running forgets past failures.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	Factor     float64
	ResetAfter time.Duration
}

// DefaultBackoff is used when a group does not configure one.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 5 * time.Minute, Factor: 2, ResetAfter: 10 * time.Minute}

// restartTracker is the one place restart decisions are made (as Nomad's
// RestartTracker): fed with what happened, it says whether to restart and
// after how long.
type restartTracker struct {
	policy   api.RestartPolicy
	backoff  Backoff
	failures int // consecutive failures counted for the delay
}

func newRestartTracker(policy api.RestartPolicy, b Backoff) *restartTracker {
	return &restartTracker{policy: policy, backoff: b}
}

// Decision is what to do after a failure.
type Decision struct {
	Restart bool
	Delay   time.Duration
	Reason  string
}

// onExit decides for a container that exited with code after running
// since startedAt. recoverable=false (e.g. an invalid spec) never restarts.
func (t *restartTracker) onExit(code uint32, startedAt, now time.Time, recoverable bool) Decision {
	if !recoverable {
		return Decision{Reason: "not recoverable"}
	}
	switch t.policy {
	case api.RestartNever:
		return Decision{Reason: "restart policy is never"}
	case api.RestartOnFailure:
		if code == 0 {
			return Decision{Reason: "exited 0 and restart policy is on-failure"}
		}
	}
	if !startedAt.IsZero() && now.Sub(startedAt) >= t.backoff.ResetAfter {
		t.failures = 0
	}
	return Decision{Restart: true, Delay: t.next()}
}

// onStartFailure decides after the group could not be started.
func (t *restartTracker) onStartFailure(recoverable bool) Decision {
	if !recoverable {
		return Decision{Reason: "not recoverable"}
	}
	return Decision{Restart: true, Delay: t.next()}
}

func (t *restartTracker) next() time.Duration {
	d := t.backoff.Initial
	for i := 0; i < t.failures && d < t.backoff.Max; i++ {
		d = time.Duration(float64(d) * t.backoff.Factor)
	}
	if d > t.backoff.Max {
		d = t.backoff.Max
	}
	t.failures++
	return d
}

// reset forgets past failures (a new spec was applied, or the user started
// the group again).
func (t *restartTracker) reset() { t.failures = 0 }
