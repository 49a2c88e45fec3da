package agent

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// Admission on this node. Every group that wants to run is admitted,
// pending, or evicted:
//
//	            fits                        victims stopped
//	pending ───────────► admitted      pending ─────────────► admitted
//	   │  lower priorities can make room:   ▲
//	   └──► victims evicting (graceful) ────┘
//	admitted ──(preempted / node pressure)──► evicting ──(stopped)──► evicted
//	evicted ──(on_evict = "wait", room appears)──► admitted
//
// Groups that are evicting still hold their request until their stop has
// finished, so a preemptor starts as soon as the room is really free and
// nobody else takes it first (admission goes by priority).

// admission is a group's admission state.
type admission struct {
	admitted   bool
	admittedAt time.Time
	// askedAt orders pending groups of equal priority (oldest first).
	askedAt time.Time
	// pendingReason/pending say why a group that wants to run does not.
	pendingReason, pending string
	// preempting names the victims being stopped for this group.
	preempting []string
	// evicting is set while the group is being stopped to make room;
	// evicted once it has stopped.
	evicting, evicted *supervisor.StopCause
	// notBefore keeps a group evicted for node pressure down a while.
	notBefore time.Time
}

// capacityFromConfig returns the node's allocatable resources: the
// configured values, or the machine's totals minus the reserve.
func capacityFromConfig(n NodeConfig) api.Resources {
	c := api.Resources{CPU: n.CPU, Memory: n.Memory, Pids: n.Pids}
	if c.CPU == 0 {
		c.CPU = api.MilliCPU(runtime.NumCPU()*1000) - n.Reserved.CPU
	}
	if c.Memory == 0 {
		if total, err := meminfo("MemTotal"); err == nil {
			c.Memory = total - n.Reserved.Memory
		}
	}
	if c.Pids == 0 {
		if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				c.Pids = v - n.Reserved.Pids
			}
		}
	}
	return c
}

func (a *Agent) admitGroupOf(name string, g *groupEntry) admitGroup {
	prio, _ := a.priority(g.Spec)
	since := g.adm.admittedAt
	if !g.adm.admitted {
		since = g.adm.askedAt
	}
	return admitGroup{Name: name, Priority: prio, Request: g.Spec.Request(), Preemptible: g.Spec.IsPreemptible(), Since: since}
}

// admitLocked admits what fits, starts preemptions where lower priorities
// can make room, and records why the rest waits. It pushes every group
// whose admission changed. a.mu held.
func (a *Agent) admitLocked() {
	now := time.Now()
	changed := map[string]bool{}
	// Groups whose eviction finished give their room back.
	for name, g := range a.groups {
		if g.adm.evicting == nil {
			continue
		}
		// Finished means the supervisor reached the cause's state: a victim
		// that was still starting stops first, and only then frees its room.
		if st, ok := a.sup.Status(name); !ok || (st.Running() == 0 && st.State == g.adm.evicting.State) {
			g.adm.evicted, g.adm.evicting = g.adm.evicting, nil
			changed[name] = true
		}
	}
	var holding, pending []admitGroup
	for name, g := range a.groups {
		switch {
		case g.adm.admitted || g.adm.evicting != nil:
			holding = append(holding, a.admitGroupOf(name, g))
		case g.Stopped || a.holdLocked(g) != "":
		case g.adm.evicted != nil && (g.Spec.OnEvict == api.EvictStop || now.Before(g.adm.notBefore)):
		default:
			if g.adm.askedAt.IsZero() {
				g.adm.askedAt = now
			}
			pending = append(pending, a.admitGroupOf(name, g))
		}
	}
	for name, r := range a.releasing {
		holding = append(holding, admitGroup{Name: name + " (being deleted)", Request: r, Priority: 1 << 62})
	}
	admissionOrder(pending)
	for _, p := range pending {
		g := a.groups[p.Name]
		if a.stillPreempting(g) {
			// Its room is being made: reserve it, so lower priorities (its
			// own victims among them) cannot take what the first victims free.
			holding = append(holding, p)
			continue
		}
		plan := planAdmission(a.capacity, holding, p)
		switch {
		case plan.Fits:
			g.adm = admission{admitted: true, admittedAt: now}
			holding = append(holding, p)
			changed[p.Name] = true
			a.events.Publish(api.Event{Time: now, Type: api.EventNormal, Group: p.Name, Reason: "Admitted",
				Message: fmt.Sprintf("admitted: asks %s", p.Request)})
		case len(plan.Victims) > 0:
			for _, v := range plan.Victims {
				vg := a.groups[v]
				vp, _ := a.priority(vg.Spec)
				vg.adm.admitted = false
				vg.adm.evicting = &supervisor.StopCause{State: api.GroupEvicted, Reason: "Preempted",
					Message: fmt.Sprintf("preempted by %s (priority %d > %d)", p.Name, p.Priority, vp)}
				changed[v] = true
				a.events.Publish(api.Event{Time: now, Type: api.EventWarning, Group: v, Reason: "Preempted", Message: vg.adm.evicting.Message})
			}
			g.adm.preempting = plan.Victims
			g.adm.pendingReason, g.adm.pending = "Preempting", "waiting for "+strings.Join(plan.Victims, ", ")+" to stop"
			changed[p.Name] = true
			a.events.Publish(api.Event{Time: now, Type: api.EventNormal, Group: p.Name, Reason: "Preempting",
				Message: fmt.Sprintf("evicting %s to make room for %s", strings.Join(plan.Victims, ", "), p.Request)})
		default:
			if g.adm.pending != plan.Reason {
				g.adm.pendingReason, g.adm.pending = "Unschedulable", plan.Reason
				changed[p.Name] = true
				a.events.Publish(api.Event{Time: now, Type: api.EventWarning, Group: p.Name, Reason: "Unschedulable", Message: plan.Reason})
			}
		}
	}
	names := make([]string, 0, len(changed))
	for n := range changed {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, ok := a.groups[n]; ok {
			a.pushLocked(n)
		}
	}
}

// stillPreempting reports whether victims evicted for g are still stopping.
func (a *Agent) stillPreempting(g *groupEntry) bool {
	for _, v := range g.adm.preempting {
		if vg, ok := a.groups[v]; ok && vg.adm.evicting != nil {
			return true
		}
	}
	g.adm.preempting = nil
	return false
}

// nodeStatusLocked reports capacity and its use. a.mu held.
func (a *Agent) nodeStatusLocked() api.NodeStatus {
	ns := api.NodeStatus{Name: a.cfg.NodeName, Allocatable: a.capacity, MemoryAvailable: a.memAvailable, Pressure: a.pressure, Drained: a.drained}
	for _, g := range a.groups {
		switch {
		case g.adm.admitted || g.adm.evicting != nil:
			ns.Allocated = ns.Allocated.Add(g.Spec.Request())
			if g.adm.admitted {
				ns.Admitted++
			}
		case g.adm.evicted != nil:
			ns.Evicted++
		case !g.Stopped:
			ns.Pending++
		}
	}
	for _, r := range a.releasing {
		ns.Allocated = ns.Allocated.Add(r)
	}
	// Free is floored at zero: groups that ran before a restart are
	// admitted even if the node is now smaller.
	ns.Free = ns.Allocatable.Sub(ns.Allocated).Max(api.Resources{})
	return ns
}
