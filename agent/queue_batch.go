package agent

import (
	"context"
	"errors"
	"sync"

	"github.com/berth-project/berth/api"
)

// groupCommit coalesces concurrent writes of one kind (pushes, acks, …)
// to one queue into one Raft command: group commit. While a command for a
// queue is in flight, the requests that arrive join the next one, which is
// proposed as soon as the one in flight returns; so under load each
// command carries every request of the last round trip, and when idle a
// request is proposed at once. A request that would make the next command
// larger than the limits is proposed on its own.
//
// The FSM applies a batch all or nothing. Callers check their own part
// against the local state first (sizes, tokens); should a shared command
// still be refused, each request of it is proposed again on its own, so
// that one bad request never fails the others. A command whose outcome is
// unknown (api.ErrUnavailable) is not retried.
//
// A groupCommit is safe for concurrent use.
type groupCommit[T any] struct {
	// propose writes one command carrying items and returns its index.
	propose func(ctx context.Context, queue string, items []T) (uint64, error)
	// size is an item's weight against maxBytes.
	size               func(T) int
	maxItems, maxBytes int

	mu     sync.Mutex
	queues map[string]*commitQueue[T]
}

type commitQueue[T any] struct {
	inflight bool
	next     *commitBatch[T]
}

type commitBatch[T any] struct {
	items []T
	bytes int
	parts int // requests in the batch
	done  chan struct{}
	index uint64
	err   error
}

func newGroupCommit[T any](maxItems, maxBytes int, size func(T) int,
	propose func(ctx context.Context, queue string, items []T) (uint64, error)) *groupCommit[T] {
	return &groupCommit[T]{propose: propose, size: size, maxItems: maxItems, maxBytes: maxBytes, queues: map[string]*commitQueue[T]{}}
}

// submit writes items to queue, alone or with others, and returns the
// index of the command that carried them and where the first of them is
// among its items.
func (g *groupCommit[T]) submit(ctx context.Context, queue string, items []T) (index uint64, offset int, err error) {
	bytes := 0
	for _, it := range items {
		bytes += g.size(it)
	}
	g.mu.Lock()
	cq := g.queues[queue]
	if cq == nil {
		cq = &commitQueue[T]{}
		g.queues[queue] = cq
	}
	if !cq.inflight {
		cq.inflight = true
		g.mu.Unlock()
		b := &commitBatch[T]{items: items, bytes: bytes, parts: 1, done: make(chan struct{})}
		g.run(queue, b)
		return b.index, 0, b.err
	}
	if n := cq.next; n != nil && (len(n.items)+len(items) > g.maxItems || n.bytes+bytes > g.maxBytes) {
		g.mu.Unlock()
		index, err := g.propose(ctx, queue, items)
		return index, 0, err
	}
	if cq.next == nil {
		cq.next = &commitBatch[T]{done: make(chan struct{})}
	}
	b := cq.next
	offset = len(b.items)
	b.items = append(b.items, items...)
	b.bytes += bytes
	b.parts++
	g.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return 0, 0, context.Cause(ctx)
	}
	if b.err != nil && b.parts > 1 && !errors.Is(b.err, api.ErrUnavailable) {
		index, err := g.propose(ctx, queue, items) // its own verdict
		return index, 0, err
	}
	return b.index, offset, b.err
}

// run proposes b, then hands the batch that gathered meanwhile to a new
// goroutine.
func (g *groupCommit[T]) run(queue string, b *commitBatch[T]) {
	b.index, b.err = g.propose(context.Background(), queue, b.items)
	close(b.done)
	g.mu.Lock()
	cq := g.queues[queue]
	next := cq.next
	cq.next = nil
	if next == nil {
		cq.inflight = false
		delete(g.queues, queue)
	}
	g.mu.Unlock()
	if next != nil {
		go g.run(queue, next)
	}
}
