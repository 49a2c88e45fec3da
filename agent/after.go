package agent

import (
	"context"
	"slices"
	"strings"
)

// holdLocked says why a group must wait before it starts: the groups of
// its `after` list that are not Ready, or not defined at all. "" means it
// may start. a.mu held.
func (a *Agent) holdLocked(g *groupEntry) string {
	var waits []string
	for _, dep := range g.Spec.After {
		if _, ok := a.groups[dep]; !ok {
			waits = append(waits, dep+" (not defined)")
			continue
		}
		if st, ok := a.sup.Status(dep); !ok || !st.Ready {
			waits = append(waits, dep)
		}
	}
	return strings.Join(waits, ", ")
}

// watchDependencies re-evaluates the groups that wait for others whenever
// a group becomes ready or not, appears or goes: event driven, no polling.
func (a *Agent) watchDependencies(ctx context.Context) error {
	for ctx.Err() == nil {
		_, ch, cancel := a.events.Subscribe("")
		for open := true; open; {
			select {
			case <-ctx.Done():
				cancel()
				return nil
			case ev, ok := <-ch:
				if !ok {
					open = false // fell behind: subscribe again and recheck all
					break
				}
				switch ev.Reason {
				case "Ready", "NotReady", "Deleted", "Accepted", "Applied":
					a.recheckDependents(ev.Group)
				}
				if strings.HasPrefix(ev.Message, "Evicted") || strings.HasPrefix(ev.Message, "Stopped") {
					a.mu.Lock()
					a.admitLocked() // an eviction or stop finished: room may be free
					a.mu.Unlock()
				}
			}
		}
		cancel()
		a.recheckDependents("")
	}
	return nil
}

// recheckDependents pushes every group that depends on group (all groups
// with dependencies when group is "") whose hold changed.
func (a *Agent) recheckDependents(group string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, g := range a.groups {
		if len(g.Spec.After) == 0 || (group != "" && !slices.Contains(g.Spec.After, group)) {
			continue
		}
		if a.holdLocked(g) != g.hold {
			a.pushLocked(name)
		}
	}
	a.admitLocked()
}
