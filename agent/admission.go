package agent

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// Admission and eviction decisions. Everything here is a pure function of
// its arguments: no I/O, no clock, no goroutines. The agent gathers what
// is admitted and what is asked, calls these, and carries out the plans
// (stopping victims gracefully, in the order given, within their grace
// periods).
//
// Two kinds of eviction are decided here:
//
//   - Preemption (planAdmission): a group that does not fit may evict
//     preemptible groups of strictly lower priority, never its equals.
//   - Memory pressure (pressureVictim): the node is short of memory now;
//     one group at a time is chosen, and preemptible=false only protects a
//     group until nothing else is left.

// maxBlockers bounds how many blocking groups a refusal names.
const maxBlockers = 5

// admitGroup is what admission knows of a group.
type admitGroup struct {
	Name        string
	Priority    int64
	Request     api.Resources
	Preemptible bool
	Since       time.Time // when it was admitted (or asked, for pending ones): "youngest" = latest
}

// admitPlan is the answer of planAdmission: exactly one of Fits, a
// non-empty Victims, or a non-empty Reason.
type admitPlan struct {
	Fits    bool     // fits in the free room as it is
	Victims []string // when !Fits and room can be made: the groups to evict, in the order to stop them
	Reason  string   // when it cannot be admitted even with evictions: what it asks, what is free, what blocks
}

// planAdmission decides whether g can run next to the admitted groups on
// a node with the given allocatable resources. admitted must not contain
// g itself.
//
// free = allocatable − Σ admitted requests. When g's request fits in free,
// the plan is Fits. Otherwise the candidates are the admitted groups that
// are preemptible and of strictly lower priority than g, ordered lowest
// priority first, then youngest (latest Since) first, then by name. They
// are taken greedily in that order until g fits; then a drop pass walks
// the chosen victims from the last taken back to the first (highest
// priority and oldest first) and spares each one whose removal keeps the
// fit. Victims come back in stop order: lowest priority first.
//
// The victim set is minimal by inclusion: sparing any single victim (and
// so any subset) would leave g without room. It is not the smallest set
// by count nor by amount evicted: lower priorities are preferred over
// fewer victims, so two small low-priority groups are evicted rather than
// one larger group of higher priority, and the greedy pass never looks
// past the point where g first fits.
//
// When g asks more than allocatable, or still does not fit with every
// candidate evicted, the plan carries a Reason naming the short resources
// and the groups that block.
func planAdmission(allocatable api.Resources, admitted []admitGroup, g admitGroup) admitPlan {
	if short := shortResources(g.Request, allocatable); len(short) > 0 {
		return admitPlan{Reason: "asks more than the node's allocatable: needs " +
			formatResources(g.Request, short) + "; allocatable " + formatResources(allocatable, short)}
	}

	free := allocatable
	for _, a := range admitted {
		free = free.Sub(a.Request)
	}
	if g.Request.Fits(free) {
		return admitPlan{Fits: true}
	}

	var candidates, blockers []admitGroup
	for _, a := range admitted {
		if a.Preemptible && a.Priority < g.Priority {
			candidates = append(candidates, a)
		} else {
			blockers = append(blockers, a)
		}
	}
	slices.SortFunc(candidates, evictionOrder)

	// Greedy: lowest priority, youngest first, until g fits.
	room, n := free, 0
	for n < len(candidates) && !g.Request.Fits(room) {
		room = room.Add(candidates[n].Request)
		n++
	}
	if !g.Request.Fits(room) {
		return admitPlan{Reason: noRoomReason(g, free, room, len(candidates) > 0, blockers)}
	}

	// Drop pass: spare whoever is not needed, trying the most valuable
	// (highest priority, oldest: taken last) first.
	chosen := candidates[:n]
	spared := make([]bool, n)
	for i := n - 1; i >= 0; i-- {
		if without := room.Sub(chosen[i].Request); g.Request.Fits(without) {
			room = without
			spared[i] = true
		}
	}
	victims := make([]string, 0, n)
	for i, c := range chosen {
		if !spared[i] {
			victims = append(victims, c.Name)
		}
	}
	return admitPlan{Victims: victims}
}

// evictionOrder orders preemption candidates: lowest priority first, then
// youngest (latest Since) first, then by name.
func evictionOrder(a, b admitGroup) int {
	if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
		return c
	}
	if c := b.Since.Compare(a.Since); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// noRoomReason explains why g cannot be admitted even with every
// candidate evicted: free is the room now, room the room with every
// candidate gone.
func noRoomReason(g admitGroup, free, room api.Resources, hadCandidates bool, blockers []admitGroup) string {
	short := shortResources(g.Request, room)
	var b strings.Builder
	b.WriteString("needs " + formatResources(g.Request, short) + "; free " + formatResources(free, short) + "; ")
	if hadCandidates {
		b.WriteString("not enough even after evicting every lower-priority group (free then: " + formatResources(room, short) + ")")
	} else {
		b.WriteString("not enough, and no preemptible lower-priority group to evict")
	}

	// Only groups holding some of a short resource block; the ones closest
	// to being evictable (lowest priority) first.
	var holding []admitGroup
	for _, a := range blockers {
		if holdsAny(a.Request, short) {
			holding = append(holding, a)
		}
	}
	slices.SortFunc(holding, func(x, y admitGroup) int {
		if c := cmp.Compare(x.Priority, y.Priority); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
	if len(holding) == 0 {
		return b.String()
	}
	b.WriteString("; blocked by: ")
	for i, a := range holding {
		if i == maxBlockers {
			fmt.Fprintf(&b, ", and %d more", len(holding)-maxBlockers)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		switch {
		case a.Priority >= g.Priority && !a.Preemptible:
			fmt.Fprintf(&b, "%s (priority %d ≥ %d, not preemptible)", a.Name, a.Priority, g.Priority)
		case a.Priority >= g.Priority:
			fmt.Fprintf(&b, "%s (priority %d ≥ %d)", a.Name, a.Priority, g.Priority)
		default:
			fmt.Fprintf(&b, "%s (priority %d, not preemptible)", a.Name, a.Priority)
		}
	}
	return b.String()
}

// resourceKind names one of the resources admission counts.
type resourceKind int

const (
	resourceCPU resourceKind = iota
	resourceMemory
	resourcePids
)

// shortResources lists the resources in which need exceeds free, in the
// order cpu, memory, pids.
func shortResources(need, free api.Resources) []resourceKind {
	var short []resourceKind
	if need.CPU > free.CPU {
		short = append(short, resourceCPU)
	}
	if need.Memory > free.Memory {
		short = append(short, resourceMemory)
	}
	if need.Pids > free.Pids {
		short = append(short, resourcePids)
	}
	return short
}

// holdsAny reports whether r has a positive amount of any of kinds.
func holdsAny(r api.Resources, kinds []resourceKind) bool {
	for _, k := range kinds {
		switch k {
		case resourceCPU:
			if r.CPU > 0 {
				return true
			}
		case resourceMemory:
			if r.Memory > 0 {
				return true
			}
		case resourcePids:
			if r.Pids > 0 {
				return true
			}
		}
	}
	return false
}

// formatResources writes the given kinds of r: "cpu 2, memory 1GiB".
func formatResources(r api.Resources, kinds []resourceKind) string {
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		switch k {
		case resourceCPU:
			parts = append(parts, "cpu "+r.CPU.String())
		case resourceMemory:
			parts = append(parts, "memory "+r.Memory.String())
		case resourcePids:
			parts = append(parts, fmt.Sprintf("pids %d", r.Pids))
		}
	}
	return strings.Join(parts, ", ")
}

// admissionOrder sorts pending groups for admission: highest priority
// first, then oldest Since, then name.
func admissionOrder(pending []admitGroup) {
	slices.SortFunc(pending, func(a, b admitGroup) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

// usageGroup is an admitted group with its memory use.
type usageGroup struct {
	admitGroup
	MemoryUsage api.ByteSize // working set now
}

// pressureVictim picks the group to evict under memory pressure: among
// groups whose memory usage exceeds their memory request, the lowest
// priority, then the largest usage above request; if none exceeds its
// request, the lowest priority, then the largest usage. Non-preemptible
// groups are eligible only when nothing else is (node pressure overrides
// preemptible=false last). Ties left after that go to the first name.
// Returns "" for no groups.
func pressureVictim(groups []usageGroup) string {
	eligible := groups
	if slices.ContainsFunc(groups, func(u usageGroup) bool { return u.Preemptible }) {
		eligible = nil
		for _, u := range groups {
			if u.Preemptible {
				eligible = append(eligible, u)
			}
		}
	}

	var over []usageGroup
	for _, u := range eligible {
		if u.MemoryUsage > u.Request.Memory {
			over = append(over, u)
		}
	}
	// excess is what ranks groups of equal priority: usage above request
	// among the ones over it, plain usage when none is.
	excess := func(u usageGroup) api.ByteSize { return u.MemoryUsage }
	if len(over) > 0 {
		eligible = over
		excess = func(u usageGroup) api.ByteSize { return u.MemoryUsage - u.Request.Memory }
	}
	if len(eligible) == 0 {
		return ""
	}
	return slices.MinFunc(eligible, func(a, b usageGroup) int {
		if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
			return c
		}
		if c := cmp.Compare(excess(b), excess(a)); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	}).Name
}
