package supervisor

import "time"

// StateStore keeps what containerd labels cannot hold across agent
// restarts: restart counts and the restart backoff (its failure count and
// the deadline of a pending restart), so timers resume where they were.
// The agent implements it with bbolt; nil disables it.
//
// Calls come from a group's runner goroutine; implementations must be
// safe for concurrent use by different groups. Save is called on every
// restart decision, so it must be quick (one small write).
type StateStore interface {
	LoadGroup(group string) (GroupRecord, bool)
	SaveGroup(group string, rec GroupRecord) error
	DeleteGroup(group string) error
}

// GroupRecord is a group's runtime state as persisted.
type GroupRecord struct {
	SpecHash string         `json:"spec_hash"`
	Restarts map[string]int `json:"restarts,omitempty"`
	Failures int            `json:"failures,omitempty"`
	RetryAt  time.Time      `json:"retry_at,omitzero"`
	// Ready and StartupOK are the probe verdicts of running containers, so
	// a reattached container keeps them instead of flapping to NotReady.
	Ready     map[string]bool `json:"ready,omitempty"`
	StartupOK map[string]bool `json:"startup_ok,omitempty"`
}

// saveState persists the runner's restart state (no-op without a store).
func (r *runner) saveState() {
	st := r.s.cfg.State
	if st == nil || r.applied == nil {
		return
	}
	rec := GroupRecord{SpecHash: r.applied.SpecHash, Restarts: map[string]int{}, Failures: r.tracker.failures, RetryAt: r.retryAt,
		Ready: map[string]bool{}, StartupOK: map[string]bool{}}
	for n, c := range r.ctrs {
		if c.restarts > 0 {
			rec.Restarts[n] = c.restarts
		}
		if c.running && c.stopProbe != nil { // supervised: the verdicts are real
			rec.Ready[n], rec.StartupOK[n] = c.ready, c.startupOK
		}
	}
	if err := st.SaveGroup(r.name, rec); err != nil {
		r.log.Warn("save runtime state", "err", err)
	}
}

// loadState restores restart counts and backoff after a reattach.
func (r *runner) loadState() {
	st := r.s.cfg.State
	if st == nil || r.applied == nil {
		return
	}
	rec, ok := st.LoadGroup(r.name)
	if !ok || rec.SpecHash != r.applied.SpecHash {
		return
	}
	for n, k := range rec.Restarts {
		if c, ok := r.ctrs[n]; ok {
			c.restarts = k
		}
	}
	r.tracker.failures = rec.Failures
	if rec.RetryAt.After(time.Now()) {
		r.retryAt = rec.RetryAt
	}
	r.restored = rec
}
