package agent

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

const (
	admitMiB = api.ByteSize(1 << 20)
	admitGiB = api.ByteSize(1 << 30)
)

var admitEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// rq builds a request: cpu in millicores, memory in bytes, pids.
func rq(cpu api.MilliCPU, mem api.ByteSize, pids int64) api.Resources {
	return api.Resources{CPU: cpu, Memory: mem, Pids: pids}
}

// ag is a preemptible group admitted (or asking) at admitEpoch + minutes.
func ag(name string, prio int64, req api.Resources, minutes int) admitGroup {
	return admitGroup{Name: name, Priority: prio, Request: req, Preemptible: true, Since: admitEpoch.Add(time.Duration(minutes) * time.Minute)}
}

// agPinned is ag with preemptible = false.
func agPinned(name string, prio int64, req api.Resources, minutes int) admitGroup {
	g := ag(name, prio, req, minutes)
	g.Preemptible = false
	return g
}

func TestPlanAdmission(t *testing.T) {
	node := rq(4000, 4*admitGiB, 1000)
	tests := []struct {
		name     string
		alloc    api.Resources
		admitted []admitGroup
		g        admitGroup
		want     admitPlan
	}{
		{
			name:  "fits without eviction on an empty node",
			alloc: node,
			g:     ag("new", 100, rq(2000, admitGiB, 10), 0),
			want:  admitPlan{Fits: true},
		},
		{
			name:     "fits without eviction next to others, higher-priority newcomer evicts nobody",
			alloc:    node,
			admitted: []admitGroup{ag("batch", 1, rq(1000, admitGiB, 100), 0)},
			g:        ag("new", 100, rq(3000, 3*admitGiB, 900), 0),
			want:     admitPlan{Fits: true},
		},
		{
			name:     "zero request fits a full node",
			alloc:    node,
			admitted: []admitGroup{ag("all", 1, node, 0)},
			g:        ag("new", 100, api.Resources{}, 0),
			want:     admitPlan{Fits: true},
		},
		{
			name:     "equal priority never preempts",
			alloc:    node,
			admitted: []admitGroup{ag("peer", 100, rq(4000, admitGiB, 0), 0)},
			g:        ag("new", 100, rq(1000, 0, 0), 1),
			want: admitPlan{Reason: "needs cpu 1; free cpu 0; not enough, and no preemptible lower-priority group to evict; " +
				"blocked by: peer (priority 100 ≥ 100)"},
		},
		{
			name:  "preemptible=false is never a victim, even when the lowest priority",
			alloc: node,
			admitted: []admitGroup{
				agPinned("db", 1, rq(2000, 0, 0), 0),
				ag("svc", 50, rq(2000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(2000, 0, 0), 1),
			want: admitPlan{Victims: []string{"svc"}},
		},
		{
			name:  "preemptible=false is never a victim, even when that leaves no room",
			alloc: node,
			admitted: []admitGroup{
				agPinned("db", 10, rq(3000, 0, 0), 0),
				ag("batch", 10, rq(1000, 0, 0), 0),
			},
			g: ag("new", 100, rq(2000, 0, 0), 1),
			want: admitPlan{Reason: "needs cpu 2; free cpu 0; not enough even after evicting every lower-priority group (free then: cpu 1); " +
				"blocked by: db (priority 10, not preemptible)"},
		},
		{
			name:  "exactly the lowest priority is chosen",
			alloc: node,
			admitted: []admitGroup{
				ag("p30", 30, rq(1000, 0, 0), 0),
				ag("p10", 10, rq(1000, 0, 0), 0),
				ag("p20", 20, rq(1000, 0, 0), 0),
				ag("p40", 40, rq(1000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(1000, 0, 0), 1),
			want: admitPlan{Victims: []string{"p10"}},
		},
		{
			name:  "victims come back in stop order, lowest priority first",
			alloc: node,
			admitted: []admitGroup{
				ag("p30", 30, rq(1000, 0, 0), 0),
				ag("p10", 10, rq(1000, 0, 0), 0),
				ag("p20", 20, rq(1000, 0, 0), 0),
				ag("p40", 40, rq(1000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(3000, 0, 0), 1),
			want: admitPlan{Victims: []string{"p10", "p20", "p30"}},
		},
		{
			// Not globally optimal by count, by design: lower priorities
			// are preferred over fewer victims.
			name:  "greedy takes two small low-priority groups, the larger higher one that alone would do is left alone",
			alloc: node,
			admitted: []admitGroup{
				ag("small1", 1, rq(1000, 0, 0), 0),
				ag("small2", 2, rq(1000, 0, 0), 0),
				ag("big", 3, rq(2000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(2000, 0, 0), 1),
			want: admitPlan{Victims: []string{"small1", "small2"}},
		},
		{
			name:  "greedy stops at the first fit: three small ones rather than the one large one it never reaches",
			alloc: rq(6000, 0, 0),
			admitted: []admitGroup{
				ag("a", 1, rq(1000, 0, 0), 0),
				ag("b", 2, rq(1000, 0, 0), 0),
				ag("c", 3, rq(1000, 0, 0), 0),
				ag("d", 4, rq(3000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(3000, 0, 0), 1),
			want: admitPlan{Victims: []string{"a", "b", "c"}},
		},
		{
			name:  "drop pass spares the small ones when the larger one greedy reached last suffices alone",
			alloc: node,
			admitted: []admitGroup{
				ag("small1", 1, rq(500, 0, 0), 0),
				ag("small2", 2, rq(500, 0, 0), 0),
				ag("big", 3, rq(3000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(3000, 0, 0), 1),
			want: admitPlan{Victims: []string{"big"}},
		},
		{
			name:  "drop pass tries the highest chosen first, so the lowest priority stays a victim",
			alloc: node,
			admitted: []admitGroup{
				ag("a", 1, rq(1000, 0, 0), 0),
				ag("b", 2, rq(1000, 0, 0), 0),
				ag("c", 3, rq(2000, 0, 0), 0),
			},
			// Greedy takes a, b, c (4 cpu); c is needed, b can be spared,
			// then a cannot: [a c] rather than the equally small [b c].
			g:    ag("new", 100, rq(3000, 0, 0), 1),
			want: admitPlan{Victims: []string{"a", "c"}},
		},
		{
			name:  "a candidate with a zero request is never a victim",
			alloc: node,
			admitted: []admitGroup{
				ag("empty", 1, api.Resources{}, 0),
				ag("real", 2, rq(4000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(1000, 0, 0), 1),
			want: admitPlan{Victims: []string{"real"}},
		},
		{
			name:  "youngest first among equal priority",
			alloc: node,
			admitted: []admitGroup{
				ag("old", 10, rq(2000, 0, 0), 0),
				ag("young", 10, rq(2000, 0, 0), 60),
			},
			g:    ag("new", 100, rq(1000, 0, 0), 120),
			want: admitPlan{Victims: []string{"young"}},
		},
		{
			name:  "equal priority victims stop youngest first",
			alloc: node,
			admitted: []admitGroup{
				ag("old", 10, rq(2000, 0, 0), 0),
				ag("young", 10, rq(2000, 0, 0), 60),
			},
			g:    ag("new", 100, rq(3000, 0, 0), 120),
			want: admitPlan{Victims: []string{"young", "old"}},
		},
		{
			name:  "priority outranks age: an old low-priority group goes before a young higher one",
			alloc: node,
			admitted: []admitGroup{
				ag("old-low", 10, rq(2000, 0, 0), 0),
				ag("young-high", 20, rq(2000, 0, 0), 60),
			},
			g:    ag("new", 100, rq(1000, 0, 0), 120),
			want: admitPlan{Victims: []string{"old-low"}},
		},
		{
			name:  "name breaks ties of equal priority and age",
			alloc: node,
			admitted: []admitGroup{
				ag("b", 10, rq(2000, 0, 0), 0),
				ag("a", 10, rq(2000, 0, 0), 0),
			},
			g:    ag("new", 100, rq(1000, 0, 0), 1),
			want: admitPlan{Victims: []string{"a"}},
		},
		{
			name:  "multi-resource: cpu fits but memory does not, only the memory holder is evicted",
			alloc: node,
			admitted: []admitGroup{
				ag("cpu-hog", 1, rq(2000, 0, 0), 0),
				ag("mem-hog", 2, rq(1000, 3*admitGiB, 0), 0),
				ag("svc", 50, rq(500, admitGiB, 0), 0),
			},
			g:    ag("new", 100, rq(500, 2*admitGiB, 0), 1),
			want: admitPlan{Victims: []string{"mem-hog"}},
		},
		{
			name:  "multi-resource: cpu from one victim, memory from another",
			alloc: node,
			admitted: []admitGroup{
				ag("cpu-hog", 1, rq(3000, 0, 0), 0),
				ag("mem-hog", 2, rq(0, 3*admitGiB, 0), 0),
				ag("svc", 50, rq(1000, admitGiB, 0), 0),
			},
			g:    ag("new", 100, rq(2000, 2*admitGiB, 0), 1),
			want: admitPlan{Victims: []string{"cpu-hog", "mem-hog"}},
		},
		{
			name:  "pids count like the other resources",
			alloc: node,
			admitted: []admitGroup{
				ag("forker", 1, rq(0, 0, 900), 0),
				ag("svc", 2, rq(100, 0, 50), 0),
			},
			g:    ag("new", 100, rq(0, 0, 500), 1),
			want: admitPlan{Victims: []string{"forker"}},
		},
		{
			name:  "request larger than allocatable is refused outright, with no victims",
			alloc: node,
			admitted: []admitGroup{
				ag("batch", 1, rq(1000, admitGiB, 0), 0),
			},
			g:    ag("new", 100, rq(1000, 8*admitGiB, 10), 1),
			want: admitPlan{Reason: "asks more than the node's allocatable: needs memory 8GiB; allocatable memory 4GiB"},
		},
		{
			name:  "request larger than allocatable names every short resource, even on an empty node",
			alloc: node,
			g:     ag("new", 100, rq(8000, 8*admitGiB, 10), 1),
			want:  admitPlan{Reason: "asks more than the node's allocatable: needs cpu 8, memory 8GiB; allocatable cpu 4, memory 4GiB"},
		},
		{
			name:  "reason names only the short resources and the blockers holding them",
			alloc: rq(4000, 4*admitGiB, 8000),
			admitted: []admitGroup{
				agPinned("db", 100, rq(1500, 2*admitGiB, 1000), 0),
				ag("web", 500, rq(1500, 1536*admitMiB, 0), 0),
				ag("batch", 10, rq(500, 256*admitMiB, 1000), 0),
				// Holds only pids, which are not short: not a blocker.
				ag("forker", 1000, rq(0, 0, 2000), 0),
			},
			g: ag("new", 500, rq(2000, admitGiB, 100), 1),
			want: admitPlan{Reason: "needs cpu 2, memory 1GiB; free cpu 500m, memory 256MiB; " +
				"not enough even after evicting every lower-priority group (free then: cpu 1, memory 512MiB); " +
				"blocked by: db (priority 100, not preemptible), web (priority 500 ≥ 500)"},
		},
		{
			name:  "reason marks a blocker both higher and pinned",
			alloc: node,
			admitted: []admitGroup{
				agPinned("ctl", 900, rq(0, 4*admitGiB, 0), 0),
			},
			g: ag("new", 100, rq(0, admitGiB, 0), 1),
			want: admitPlan{Reason: "needs memory 1GiB; free memory 0; not enough, and no preemptible lower-priority group to evict; " +
				"blocked by: ctl (priority 900 ≥ 100, not preemptible)"},
		},
		{
			name:  "reason lists at most five blockers, lowest priority first",
			alloc: rq(7000, 0, 0),
			admitted: []admitGroup{
				agPinned("g7", 7, rq(1000, 0, 0), 0),
				agPinned("g3", 3, rq(1000, 0, 0), 0),
				agPinned("g1", 1, rq(1000, 0, 0), 0),
				agPinned("g6", 6, rq(1000, 0, 0), 0),
				agPinned("g2", 2, rq(1000, 0, 0), 0),
				agPinned("g5", 5, rq(1000, 0, 0), 0),
				agPinned("g4", 4, rq(1000, 0, 0), 0),
			},
			g: ag("new", 100, rq(1000, 0, 0), 1),
			want: admitPlan{Reason: "needs cpu 1; free cpu 0; not enough, and no preemptible lower-priority group to evict; " +
				"blocked by: g1 (priority 1, not preemptible), g2 (priority 2, not preemptible), g3 (priority 3, not preemptible), " +
				"g4 (priority 4, not preemptible), g5 (priority 5, not preemptible), and 2 more"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := planAdmission(tt.alloc, tt.admitted, tt.g)
			if got.Fits != tt.want.Fits || !slices.Equal(got.Victims, tt.want.Victims) || got.Reason != tt.want.Reason {
				t.Errorf("planAdmission:\n got  %+v\n want %+v", got, tt.want)
			}
			if n := admitBtoi(got.Fits) + admitBtoi(len(got.Victims) > 0) + admitBtoi(got.Reason != ""); n != 1 {
				t.Errorf("plan %+v: want exactly one of Fits, Victims, Reason", got)
			}
		})
	}
}

func admitBtoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestPlanAdmissionLeavesItsInputAlone(t *testing.T) {
	admitted := []admitGroup{
		ag("c", 3, rq(1000, 0, 0), 0),
		ag("a", 1, rq(1000, 0, 0), 0),
		ag("b", 2, rq(1000, 0, 0), 0),
	}
	before := slices.Clone(admitted)
	plan := planAdmission(rq(3000, 0, 0), admitted, ag("new", 100, rq(2000, 0, 0), 1))
	if !slices.Equal(plan.Victims, []string{"a", "b"}) {
		t.Fatalf("victims %v, want [a b]", plan.Victims)
	}
	if !slices.Equal(admitted, before) {
		t.Errorf("admitted reordered or changed: %v, was %v", admitted, before)
	}
}

// TestPlanAdmissionInvariants checks, on many generated nodes, what every
// plan must hold: Fits exactly when the group fits in the free room;
// victims only preemptible lower-priority groups, in stop order, making
// room, and minimal (sparing any one of them breaks the fit); a Reason
// only when evicting every candidate would still not be enough.
func TestPlanAdmissionInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randRes := func() api.Resources {
		return rq(api.MilliCPU(r.IntN(5)*500), api.ByteSize(r.IntN(5))*256*admitMiB, int64(r.IntN(5)*100))
	}
	alloc := rq(4000, 2*admitGiB, 1000)
	for iter := range 3000 {
		var admitted []admitGroup
		for i := range r.IntN(8) {
			a := ag("g"+strconv.Itoa(i), int64(r.IntN(4)), randRes(), r.IntN(3))
			a.Preemptible = r.IntN(4) != 0
			admitted = append(admitted, a)
		}
		g := ag("new", int64(r.IntN(5)), randRes(), 10)
		plan := planAdmission(alloc, admitted, g)

		free := alloc
		byName := map[string]admitGroup{}
		for _, a := range admitted {
			free = free.Sub(a.Request)
			byName[a.Name] = a
		}
		allGone := free
		for _, a := range admitted {
			if a.Preemptible && a.Priority < g.Priority {
				allGone = allGone.Add(a.Request)
			}
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("iteration %d, admitted %+v, g %+v, plan %+v: "+format, append([]any{iter, admitted, g, plan}, args...)...)
		}

		switch {
		case plan.Fits:
			if !g.Request.Fits(free) {
				fail("Fits but the request does not fit in free %v", free)
			}
		case plan.Reason != "":
			if g.Request.Fits(allGone) && g.Request.Fits(alloc) {
				fail("refused but evicting every candidate would leave %v", allGone)
			}
		default:
			if g.Request.Fits(free) {
				fail("evicts though the request fits in free %v", free)
			}
			room := free
			var victims []admitGroup
			for _, name := range plan.Victims {
				v, ok := byName[name]
				if !ok || !v.Preemptible || v.Priority >= g.Priority {
					fail("victim %q is not a preemptible lower-priority group", name)
				}
				room = room.Add(v.Request)
				victims = append(victims, v)
			}
			if !g.Request.Fits(room) {
				fail("victims leave only %v", room)
			}
			for _, v := range victims {
				if g.Request.Fits(room.Sub(v.Request)) {
					fail("victim %q could be spared", v.Name)
				}
			}
			if !slices.IsSortedFunc(victims, evictionOrder) {
				fail("victims not in stop order")
			}
		}
	}
}

func TestAdmissionOrder(t *testing.T) {
	tests := []struct {
		name    string
		pending []admitGroup
		want    []string
	}{
		{
			name: "highest priority first",
			pending: []admitGroup{
				ag("low", 1, api.Resources{}, 0),
				ag("high", 100, api.Resources{}, 5),
				ag("mid", 50, api.Resources{}, 3),
			},
			want: []string{"high", "mid", "low"},
		},
		{
			name: "oldest first among equal priority",
			pending: []admitGroup{
				ag("young", 10, api.Resources{}, 9),
				ag("old", 10, api.Resources{}, 1),
				ag("middle", 10, api.Resources{}, 5),
			},
			want: []string{"old", "middle", "young"},
		},
		{
			name: "name breaks ties of equal priority and age",
			pending: []admitGroup{
				ag("c", 10, api.Resources{}, 1),
				ag("a", 10, api.Resources{}, 1),
				ag("b", 10, api.Resources{}, 1),
			},
			want: []string{"a", "b", "c"},
		},
		{
			name: "priority outranks age, age outranks name",
			pending: []admitGroup{
				ag("a-young-low", 1, api.Resources{}, 9),
				ag("z-old-high", 10, api.Resources{}, 1),
				ag("b-young-high", 10, api.Resources{}, 9),
				ag("a-old-low", 1, api.Resources{}, 1),
			},
			want: []string{"z-old-high", "b-young-high", "a-old-low", "a-young-low"},
		},
		{
			name:    "empty is fine",
			pending: nil,
			want:    nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			admissionOrder(tt.pending)
			var got []string
			for _, p := range tt.pending {
				got = append(got, p.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("order %v, want %v", got, tt.want)
			}
		})
	}
}

// ug is a preemptible group with a memory request, using usage now.
func ug(name string, prio int64, request, usage api.ByteSize) usageGroup {
	return usageGroup{admitGroup: ag(name, prio, rq(0, request, 0), 0), MemoryUsage: usage}
}

// ugPinned is ug with preemptible = false.
func ugPinned(name string, prio int64, request, usage api.ByteSize) usageGroup {
	u := ug(name, prio, request, usage)
	u.Preemptible = false
	return u
}

func TestPressureVictim(t *testing.T) {
	tests := []struct {
		name   string
		groups []usageGroup
		want   string
	}{
		{
			name: "no groups, no victim",
			want: "",
		},
		{
			name:   "a single group is the victim",
			groups: []usageGroup{ug("only", 10, admitGiB, 512*admitMiB)},
			want:   "only",
		},
		{
			name: "over request: the lowest priority, though another is further over",
			groups: []usageGroup{
				ug("high", 50, 0, 3*admitGiB),
				ug("low", 10, admitGiB, admitGiB+admitMiB),
			},
			want: "low",
		},
		{
			name: "over request, equal priority: the largest usage above request, not the largest usage",
			groups: []usageGroup{
				ug("big-within-margin", 10, 3*admitGiB, 3*admitGiB+100*admitMiB),
				ug("small-far-over", 10, 0, admitGiB),
			},
			want: "small-far-over",
		},
		{
			name: "a group over its request goes before a lower-priority one within it",
			groups: []usageGroup{
				ug("low-within", 1, 2*admitGiB, admitGiB),
				ug("high-over", 50, admitGiB, 2*admitGiB),
			},
			want: "high-over",
		},
		{
			name: "usage equal to the request is not over it",
			groups: []usageGroup{
				ug("at-request", 50, admitGiB, admitGiB),
				ug("low", 1, 2*admitGiB, admitGiB),
			},
			want: "low",
		},
		{
			name: "none over request: the lowest priority, though another uses more",
			groups: []usageGroup{
				ug("high", 50, 4*admitGiB, 3*admitGiB),
				ug("low", 10, 2*admitGiB, admitGiB),
			},
			want: "low",
		},
		{
			name: "none over request, equal priority: the largest usage",
			groups: []usageGroup{
				ug("small", 10, 4*admitGiB, admitGiB),
				ug("large", 10, 4*admitGiB, 3*admitGiB),
			},
			want: "large",
		},
		{
			name: "non-preemptible is skipped while a preemptible group remains, even lower and further over",
			groups: []usageGroup{
				ugPinned("db", 1, 0, 8*admitGiB),
				ug("web", 100, 2*admitGiB, admitGiB),
			},
			want: "web",
		},
		{
			name: "only non-preemptible groups left: pressure evicts them by the same rules",
			groups: []usageGroup{
				ugPinned("db", 10, admitGiB, 3*admitGiB),
				ugPinned("cache", 10, admitGiB, 2*admitGiB),
				ugPinned("ctl", 1, 4*admitGiB, admitGiB),
			},
			want: "db",
		},
		{
			name: "only non-preemptible groups, none over request: the lowest priority",
			groups: []usageGroup{
				ugPinned("db", 10, 4*admitGiB, 3*admitGiB),
				ugPinned("ctl", 1, 4*admitGiB, admitGiB),
			},
			want: "ctl",
		},
		{
			name: "name breaks exact ties",
			groups: []usageGroup{
				ug("b", 10, admitGiB, 2*admitGiB),
				ug("a", 10, admitGiB, 2*admitGiB),
			},
			want: "a",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pressureVictim(tt.groups); got != tt.want {
				t.Errorf("pressureVictim = %q, want %q", got, tt.want)
			}
		})
	}
}
