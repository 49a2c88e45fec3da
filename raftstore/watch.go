package raftstore

import (
	"context"
	"fmt"
	"sync"

	"github.com/berth-project/berth/api"
)

// ErrClosed is returned by WaitIndex once the store is closed.
var ErrClosed = fmt.Errorf("raftstore closed: %w", api.ErrUnavailable)

// notifier tells watchers the FSM's applied index. notify is called by the
// FSM from raft's apply goroutine and never blocks: it records the index,
// wakes WaitIndex callers by closing a channel, and kicks each watcher's
// goroutine through a one-slot channel, so a slow watcher misses
// intermediate indexes (it gets the latest) but never holds raft up.
type notifier struct {
	mu       sync.Mutex
	index    uint64
	changed  chan struct{} // closed and replaced on every notify
	watchers map[*watcher]struct{}
	closed   bool
	done     chan struct{} // closed by close
}

type watcher struct {
	kick chan struct{} // one slot: pending change
}

func newNotifier() *notifier {
	return &notifier{
		changed:  make(chan struct{}),
		watchers: map[*watcher]struct{}{},
		done:     make(chan struct{}),
	}
}

// notify records index as applied. It never blocks.
func (n *notifier) notify(index uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.index = index
	close(n.changed)
	n.changed = make(chan struct{})
	for w := range n.watchers {
		select {
		case w.kick <- struct{}{}:
		default: // already pending: the watcher will read the newest index
		}
	}
}

// current returns the applied index and a channel closed at the next
// change.
func (n *notifier) current() (uint64, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.index, n.changed
}

// close ends every watch and WaitIndex. Idempotent.
func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		close(n.done)
	}
}

// Watch returns a channel that receives the applied index: first the
// current one, then the latest one after each change. Changes coalesce: a
// receiver that falls behind gets only the newest index, and a receiver
// that stops reading never slows raft down. The channel is closed when ctx
// is done or the store closes. Typical use: re-read the state on every
// receive.
func (n *notifier) Watch(ctx context.Context) <-chan uint64 {
	out := make(chan uint64)
	w := &watcher{kick: make(chan struct{}, 1)}
	w.kick <- struct{}{} // deliver the current index first

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		close(out)
		return out
	}
	n.watchers[w] = struct{}{}
	n.mu.Unlock()

	go func() {
		defer func() {
			n.mu.Lock()
			delete(n.watchers, w)
			n.mu.Unlock()
			close(out)
		}()
		for {
			select {
			case <-w.kick:
			case <-ctx.Done():
				return
			case <-n.done:
				return
			}
			idx, _ := n.current()
			select {
			case out <- idx:
			case <-ctx.Done():
				return
			case <-n.done:
				return
			}
		}
	}()
	return out
}

// WaitIndex blocks until the FSM has applied index idx (an index returned
// by Apply or received from Watch), ctx is done (ctx.Err()) or the store
// closes (ErrClosed).
func (n *notifier) WaitIndex(ctx context.Context, idx uint64) error {
	for {
		cur, changed := n.current()
		if cur >= idx {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d (applied %d): %w", idx, cur, ctx.Err())
		case <-n.done:
			return ErrClosed
		}
	}
}
