package agent

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

var drainCause = supervisor.StopCause{State: api.GroupStopped, Reason: "Drained", Message: "node drained"}

// Drain stops every group in reverse priority order: the lowest priority
// level first, each group with its full graceful stop, and the next level
// only when the one before has stopped. The node stays drained (no group
// starts, new ones included) until Undrain, across restarts too.
func (a *Agent) Drain(ctx context.Context) error {
	a.mu.Lock()
	a.drained, a.draining = true, true
	if err := a.savePersistedLocked(); err != nil {
		a.log.Error("save agent state", "err", err)
	}
	levels := map[int64][]string{}
	for name, g := range a.groups {
		p, _ := a.priority(g.Spec)
		levels[p] = append(levels[p], name)
	}
	a.mu.Unlock()
	prios := make([]int64, 0, len(levels))
	for p := range levels {
		prios = append(prios, p)
	}
	sort.Slice(prios, func(i, j int) bool { return prios[i] < prios[j] })
	a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Reason: "Draining", Message: fmt.Sprintf("draining %d priority levels", len(prios))})
	for _, p := range prios {
		a.mu.Lock()
		for _, name := range levels[p] {
			if g, ok := a.groups[name]; ok {
				g.draining = true
				a.pushLocked(name)
			}
		}
		a.mu.Unlock()
		for _, name := range levels[p] {
			if err := a.waitState(ctx, name, func(st api.GroupStatus) bool {
				return st.Running() == 0 && st.State != api.GroupStopping
			}); err != nil {
				return fmt.Errorf("drain: group %s: %w", name, err)
			}
		}
	}
	a.mu.Lock()
	a.draining = false
	for name := range a.groups {
		a.pushLocked(name) // groups added during the drain stop too
	}
	a.mu.Unlock()
	a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Reason: "Drained", Message: "every group is stopped"})
	return nil
}

// Undrain lets groups run again.
func (a *Agent) Undrain() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.drained = false
	if err := a.savePersistedLocked(); err != nil {
		return err
	}
	for name, g := range a.groups {
		g.draining = false
		a.pushLocked(name)
	}
	a.admitLocked()
	a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Reason: "Undrained", Message: "groups may run again"})
	return nil
}
