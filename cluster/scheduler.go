package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// Defaults of the Options that tune Scheduler.Run.
const (
	// DefaultCoalesce is how long Run lets a burst of state changes
	// settle before one pass.
	DefaultCoalesce = 20 * time.Millisecond
	// DefaultLeaderPoll is how often a follower checks whether it became
	// the leader (raft has one leadership channel, and the agent owns it).
	DefaultLeaderPoll = 250 * time.Millisecond
	// DefaultRetryBackoff is the first wait after a failed proposal; it
	// doubles up to maxRetryBackoff and resets after a success.
	DefaultRetryBackoff = 100 * time.Millisecond
	maxRetryBackoff     = 5 * time.Second
)

// Store is what the scheduler needs of the replicated state.
// *raftstore.Store satisfies it; so does a fake in tests.
//
// State returns a consistent copy of the state. Watch delivers the applied
// index after every change (coalesced, never blocking the FSM) until ctx
// ends. Apply proposes a command on the leader and returns the index at
// which it was applied (the leader's FSM has applied it when Apply
// returns), or an error wrapping api.ErrNotLeader on a follower. IsLeader
// says whether this member leads now. All methods are safe for concurrent
// use.
type Store interface {
	State() raftstore.State
	Watch(ctx context.Context) <-chan uint64
	Apply(ctx context.Context, cmd raftstore.Command) (uint64, error)
	IsLeader() bool
}

var _ Store = (*raftstore.Store)(nil)

// barrierStore is the optional part of Store: a new leader waits with it
// until its FSM has applied everything its predecessor committed, so that
// its first pass does not undo what the old leader decided.
// *raftstore.Store has it.
type barrierStore interface {
	Barrier(ctx context.Context) error
}

// Scheduler runs Schedule on the Raft leader and proposes its decisions.
// Every agent runs one for its whole life; only the leader's does work.
type Scheduler struct {
	// OnDecision, when set before Run, is called from Run's goroutine after
	// each decision that proposed something, with the error of the first
	// command that failed (nil when all applied): for events and metrics.
	// It must not block.
	OnDecision func(d Decision, err error)

	store Store
	opts  Options
	log   *slog.Logger

	passes   atomic.Int64
	proposed atomic.Int64
}

// NewScheduler returns a scheduler over store. opts tune the planning (see
// Options; the zero value is the default) and the run loop (Coalesce,
// LeaderPoll, RetryBackoff). A nil log means slog.Default().
func NewScheduler(store Store, opts Options, log *slog.Logger) *Scheduler {
	if log == nil {
		log = slog.Default()
	}
	if opts.Coalesce <= 0 {
		opts.Coalesce = DefaultCoalesce
	}
	if opts.LeaderPoll <= 0 {
		opts.LeaderPoll = DefaultLeaderPoll
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = DefaultRetryBackoff
	}
	return &Scheduler{store: store, opts: opts.withDefaults(), log: log.With("component", "scheduler")}
}

// Passes is the number of scheduling passes Run has made; Proposed the
// number of commands it proposed successfully. For tests and metrics.
func (s *Scheduler) Passes() int64   { return s.passes.Load() }
func (s *Scheduler) Proposed() int64 { return s.proposed.Load() }

// Run schedules until ctx ends, then returns nil; it returns an error only
// when the store's watch ends before ctx (the store was closed).
//
// While this member is not the leader Run only notes changes and checks for
// leadership every LeaderPoll. As leader it makes a pass when the state
// changes (a burst of changes within Coalesce gives one pass) and at the
// Decision.Next of the last pass, and proposes the decision's commands in
// order. A pass is made only on a state that includes the last command Run
// proposed, so nothing is proposed twice. A failed proposal (leadership
// lost, a conflict with a concurrent change, a timeout) is logged and the
// pass is made again after a backoff that starts at RetryBackoff and
// doubles up to 5 s, never in a tight loop.
func (s *Scheduler) Run(ctx context.Context) error {
	watch := s.store.Watch(ctx)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	var (
		leader     bool
		dirty      = true // a pass is due once the state settles
		dirtySince = time.Now()
		next       time.Time // the last decision's Next
		retryAt    time.Time // no pass before, after a failure
		backoff    = s.opts.RetryBackoff
		minIndex   uint64 // the index of the last command proposed
		lastIndex  uint64 // the newest index Watch delivered
	)
	for {
		now := time.Now()
		if isLeader := s.store.IsLeader(); isLeader != leader {
			leader = isLeader
			if leader {
				s.log.Info("leading: scheduling")
				if err := s.barrier(ctx); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					s.log.Warn("waiting for the log to be applied before the first pass", "err", err)
					leader = false // try again at the next poll
				} else {
					dirty, dirtySince, retryAt = true, now, time.Time{}
				}
			} else {
				s.log.Info("not leading any more: scheduling stops")
				next = time.Time{}
			}
		}

		if leader && lastIndex >= minIndex && !now.Before(retryAt) &&
			((dirty && !now.Before(dirtySince.Add(s.opts.Coalesce))) || (!next.IsZero() && !now.Before(next))) {
			dirty = false
			var err error
			next, minIndex, err = s.pass(ctx, now, minIndex)
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, api.ErrNotLeader):
				s.log.Info("lost leadership while proposing", "err", err)
				leader, next = false, time.Time{}
				dirty, dirtySince = true, now
			case err != nil:
				s.log.Warn("proposing the scheduler's decision failed; retrying", "err", err, "retry_in", backoff)
				retryAt = now.Add(backoff)
				backoff = min(2*backoff, maxRetryBackoff)
				dirty, dirtySince = true, now
			default:
				backoff = s.opts.RetryBackoff
			}
			continue // re-check leadership and whether a pass is due
		}

		// Sleep until the next reason to look.
		var wake time.Time
		switch {
		case !leader:
			wake = now.Add(s.opts.LeaderPoll)
		case lastIndex < minIndex:
			// Wait for the watch to catch up with our own command.
		case dirty:
			wake = latest(dirtySince.Add(s.opts.Coalesce), retryAt)
		case !next.IsZero():
			wake = latest(next, retryAt)
		}
		var timerC <-chan time.Time
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(now), 0))
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case idx, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("scheduler: the store's watch ended (store closed?): %w", api.ErrUnavailable)
			}
			lastIndex = max(lastIndex, idx)
			if !dirty {
				dirty, dirtySince = true, time.Now()
			}
		case <-timerC:
		}
	}
}

// pass schedules once on the current state and proposes the decision. It
// returns the decision's Next and the index of the last command applied
// (minIndex when none was).
func (s *Scheduler) pass(ctx context.Context, now time.Time, minIndex uint64) (time.Time, uint64, error) {
	st := s.store.State()
	if st.Index < minIndex {
		// Not yet applied here: never plan on a state without our last
		// command. The watch wakes us when it is.
		return time.Time{}, minIndex, nil
	}
	s.passes.Add(1)
	d := Schedule(st, now, s.opts)
	if d.Empty() {
		return d.Next, minIndex, nil
	}
	s.logActions(d)
	var err error
	for _, cmd := range d.Commands {
		var idx uint64
		idx, err = s.store.Apply(ctx, cmd)
		if idx > minIndex {
			minIndex = idx
		}
		if err != nil {
			err = fmt.Errorf("scheduler: proposing %s (decided at index %d): %w", cmd.Type, st.Index, err)
			break
		}
		s.proposed.Add(1)
	}
	if s.OnDecision != nil {
		s.OnDecision(d, err)
	}
	if err != nil {
		return time.Time{}, minIndex, err
	}
	return d.Next, minIndex, nil
}

// maxActionLogs is how many action lines one pass logs at Info; the rest
// go to Debug after a summary (a new group of 1000 replicas is one line,
// not a thousand).
const maxActionLogs = 20

func (s *Scheduler) logActions(d Decision) {
	for i, line := range d.Actions {
		switch {
		case i < maxActionLogs:
			s.log.Info(line, "index", d.Index)
		case i == maxActionLogs:
			s.log.Info(fmt.Sprintf("… and %d more actions (debug level shows them)", len(d.Actions)-maxActionLogs),
				"index", d.Index, "puts", len(d.Plan.Put), "deletes", len(d.Plan.Delete))
			fallthrough
		default:
			s.log.Debug(line, "index", d.Index)
		}
	}
}

// barrier waits, when the store can, until the FSM has applied every entry
// committed before this member became the leader.
func (s *Scheduler) barrier(ctx context.Context) error {
	b, ok := s.store.(barrierStore)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return b.Barrier(ctx)
}

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
