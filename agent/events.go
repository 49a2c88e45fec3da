package agent

import (
	"sync"

	"github.com/berth-project/berth/api"
)

// Events is the agent's event hub: a bounded history plus live
// subscribers. Publish never blocks: a subscriber that falls more than its
// buffer behind is dropped (its stream ends) rather than slowing the agent.
type Events struct {
	mu   sync.Mutex
	seq  uint64
	ring []api.Event
	next int
	full bool
	subs map[chan api.Event]struct{}
	// observe, when set, sees every event (metrics); it must not block.
	observe func(api.Event)
}

// NewEvents returns a hub that keeps the last size events.
func NewEvents(size int) *Events {
	return &Events{ring: make([]api.Event, size), subs: map[chan api.Event]struct{}{}}
}

// Publish stamps ev with a sequence number and hands it to everyone.
func (e *Events) Publish(ev api.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	ev.Seq = e.seq
	if e.observe != nil {
		e.observe(ev)
	}
	e.ring[e.next] = ev
	e.next = (e.next + 1) % len(e.ring)
	if e.next == 0 {
		e.full = true
	}
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
			delete(e.subs, ch)
			close(ch)
		}
	}
}

// History returns the kept events, oldest first; group "" means all.
func (e *Events) History(group string) []api.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.historyLocked(group)
}

func (e *Events) historyLocked(group string) []api.Event {
	var out []api.Event
	add := func(evs []api.Event) {
		for _, ev := range evs {
			if ev.Seq != 0 && (group == "" || ev.Group == group) {
				out = append(out, ev)
			}
		}
	}
	if e.full {
		add(e.ring[e.next:])
	}
	add(e.ring[:e.next])
	return out
}

// Subscribe returns the history and a channel of every later event. The
// channel is closed when cancel is called or the subscriber fell behind.
func (e *Events) Subscribe(group string) (history []api.Event, ch <-chan api.Event, cancel func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := make(chan api.Event, 256)
	e.subs[c] = struct{}{}
	return e.historyLocked(group), c, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := e.subs[c]; ok {
			delete(e.subs, c)
			close(c)
		}
	}
}
