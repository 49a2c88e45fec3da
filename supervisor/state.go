package supervisor

import (
	"fmt"
	"time"

	"github.com/berth-project/berth/api"
)

// Group states and the transitions between them. Every change of state goes
// through runner.transition, which checks it against this table and emits
// an event carrying the reason.
//
//	           Set(run)              sandbox, images, containers started
//	(new) ──► Pending ──► Starting ─────────────────────────────► Running
//	             ▲           │ a step failed (rolled back)          │ a container exited
//	             │           ▼                                      ▼
//	             │        BackOff ◄──────────── restart policy says restart
//	             │           │ delay over → Starting
//	             │           │
//	  Set(run)   │           │     restart policy says no more:
//	  ┌──────────┴─┐         │     all exited 0 → Stopped (Completed), else Failed
//	  │  Stopped   │◄── Stopping ◄── stop / replace / evict / delete, from any state
//	  │  Failed    │        │
//	  │  Evicted   │        └──► Deleting → (gone)
//	  └────────────┘
var transitions = map[api.GroupState][]api.GroupState{
	"":                {api.GroupPending, api.GroupRunning, api.GroupStopping, api.GroupStopped, api.GroupDeleting},
	api.GroupPending:  {api.GroupStarting, api.GroupBackOff, api.GroupStopping, api.GroupStopped, api.GroupDeleting, api.GroupFailed},
	api.GroupStarting: {api.GroupRunning, api.GroupBackOff, api.GroupStopping, api.GroupFailed, api.GroupStopped, api.GroupDeleting},
	api.GroupRunning:  {api.GroupBackOff, api.GroupStopping, api.GroupStopped, api.GroupFailed, api.GroupStarting, api.GroupDeleting},
	api.GroupBackOff:  {api.GroupStarting, api.GroupRunning, api.GroupStopping, api.GroupStopped, api.GroupFailed, api.GroupDeleting},
	api.GroupStopping: {api.GroupStopped, api.GroupEvicted, api.GroupDeleting, api.GroupPending, api.GroupStarting, api.GroupFailed},
	api.GroupStopped:  {api.GroupPending, api.GroupStarting, api.GroupStopping, api.GroupDeleting},
	api.GroupFailed:   {api.GroupPending, api.GroupStarting, api.GroupStopping, api.GroupStopped, api.GroupDeleting},
	api.GroupEvicted:  {api.GroupPending, api.GroupStarting, api.GroupStopping, api.GroupDeleting},
	api.GroupDeleting: {},
}

// canTransition reports whether from → to is allowed. Staying in a state
// (with a new reason) is always allowed.
func canTransition(from, to api.GroupState) bool {
	if from == to {
		return true
	}
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// transition moves the group to state with a reason (CamelCase) and a
// message, and emits the event. An illegal transition is a bug: it is
// reported as a Warning event and applied anyway, so the status never lies.
func (r *runner) transition(to api.GroupState, reason, msg string) {
	from := r.state()
	// Persist first, so that a state others can see is never lost by a
	// kill -9 in between; then publish containers and state together.
	if to == api.GroupBackOff || (to == api.GroupRunning && from != to) {
		r.saveState()
	}
	r.publish()
	r.mu.Lock()
	same := from == to && r.status.Reason == reason && r.status.Message == msg
	r.status.State, r.status.Reason, r.status.Message = to, reason, msg
	r.status.NextRestart = time.Time{}
	if to == api.GroupBackOff {
		r.status.NextRestart = r.retryAt
	}
	r.mu.Unlock()
	if same {
		return
	}
	if !canTransition(from, to) {
		r.event(api.EventWarning, "", "IllegalTransition", fmt.Sprintf("%s → %s (%s)", from, to, reason))
	}
	typ := api.EventNormal
	switch to {
	case api.GroupBackOff, api.GroupFailed, api.GroupEvicted:
		typ = api.EventWarning
	}
	text := string(to)
	if msg != "" {
		text += ": " + msg
	}
	r.event(typ, "", reason, text)
}
