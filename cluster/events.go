package cluster

import (
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/berth-project/berth/raftstore"
)

// EventType is what happened to a member.
type EventType int

const (
	// EventJoin: a member is new or came back (alive again after dead or left).
	EventJoin EventType = iota + 1
	// EventLeave: a member left gracefully (Leave, or Run's ctx ended).
	EventLeave
	// EventUpdate: a member changed its Meta (UpdateMeta) or its address.
	EventUpdate
	// EventFailed: failure detection declared a member dead.
	EventFailed
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	case EventFailed:
		return "failed"
	}
	return "unknown"
}

// MemberEvent is one membership change, as seen by the local member.
// Suspicion is not an event: a suspect member is still a member until it
// is declared dead (EventFailed) or refutes it; Members reports it.
type MemberEvent struct {
	Type   EventType
	Member Member
	Time   time.Time
}

// eventDelegate is memberlist's EventDelegate. memberlist calls it with its
// node table locked, so it must neither block nor call back into
// memberlist: it decodes the node, records it in the member table and
// hands the event to the buffered events channel without waiting. When the
// channel is full (the consumer stalled for Config.EventBuffer events) the
// event is dropped and logged; a consumer that must not miss a change
// reconciles from Members, which is always current.
type eventDelegate struct {
	ch    chan MemberEvent
	table *memberTable
	log   *slog.Logger
}

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) { d.alive(EventJoin, n) }

func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { d.alive(EventUpdate, n) }

func (d *eventDelegate) alive(t EventType, n *memberlist.Node) {
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil {
		d.log.Warn("member has unreadable metadata", "member", n.Name, "err", err)
		meta = Meta{Name: n.Name}
	}
	mem := Member{Name: n.Name, Addr: n.Address(), Meta: meta, State: raftstore.NodeAlive}
	d.table.set(mem, leaving)
	if leaving { // the leave itself follows; see NotifyLeave
		return
	}
	d.send(t, mem)
}

// NotifyLeave is called alike for a member that left and for one that
// failure detection declared dead (memberlist knows which, but does not
// say). A member leaving through Leave first broadcasts its metadata with
// the Leaving flag and waits for the broadcast to go out; a member whose
// last metadata carried the flag is reported as EventLeave, any other as
// EventFailed. If the announcement is lost the leave is reported as a
// failure: the safe mistake.
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	mem, leaving := d.table.get(n.Name)
	mem.Name, mem.Addr = n.Name, n.Address()
	t := EventFailed
	mem.State = raftstore.NodeDead
	if leaving {
		t, mem.State = EventLeave, raftstore.NodeLeft
	}
	d.table.set(mem, false)
	d.send(t, mem)
}

func (d *eventDelegate) send(t EventType, mem Member) {
	select {
	case d.ch <- MemberEvent{Type: t, Member: mem, Time: time.Now()}:
	default:
		d.log.Warn("membership event dropped: consumer is not keeping up; reconcile from Members",
			"event", t.String(), "member", mem.Name, "buffer", cap(d.ch))
	}
}

// memberTable is the members as the events left them; see Members.
type memberTable struct {
	mu      sync.Mutex
	members map[string]Member
	leaving map[string]bool
}

func newMemberTable() *memberTable {
	return &memberTable{members: map[string]Member{}, leaving: map[string]bool{}}
}

func (t *memberTable) set(m Member, leaving bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.members[m.Name] = m
	t.leaving[m.Name] = leaving
}

func (t *memberTable) get(name string) (Member, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.members[name], t.leaving[name]
}

func (t *memberTable) list() []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := slices.Collect(maps.Values(t.members))
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}
