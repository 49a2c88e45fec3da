package raftstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
)

func recv(t *testing.T, ch <-chan uint64) (uint64, bool) {
	t.Helper()
	select {
	case v, ok := <-ch:
		return v, ok
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a watch value")
		return 0, false
	}
}

// TestWatchCoalescesAndNeverBlocksApply: a watcher that stops reading
// does not hold up a thousand applies, and when it reads again it gets the
// newest index within two receives, not a backlog.
func TestWatchCoalescesAndNeverBlocksApply(t *testing.T) {
	f := NewFSM()
	ctx := testContext(t)
	w := f.Watch(ctx)
	if v, _ := recv(t, w); v != 0 {
		t.Fatalf("first value = %d, want the current index 0", v)
	}

	const n = 1000
	data := []byte(mustJSON(t, putGroup(t, "web", "web:1")))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); i <= n; i++ {
			if res, ok := f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: data}).(Result); !ok {
				t.Errorf("apply at %d: %v", i, res)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("Apply blocked on a watcher that does not read")
	}

	v, _ := recv(t, w)
	if v != n {
		// The watcher's goroutine may hold an index it read mid-way; the
		// pending change then delivers the newest.
		if v, _ = recv(t, w); v != n {
			t.Fatalf("second value = %d, want %d", v, n)
		}
	}
}

func TestWatchManyWatchers(t *testing.T) {
	f := NewFSM()
	ctx := testContext(t)
	const watchers, n = 8, 50
	var wg sync.WaitGroup
	for range watchers {
		w := f.Watch(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range w {
				if v == n {
					return
				}
			}
			t.Error("watch closed before the last index")
		}()
	}
	cmd := putGroup(t, "web", "web:1")
	for i := uint64(1); i <= n; i++ {
		mustApply(t, f, i, cmd)
	}
	wg.Wait()
}

func TestWatchEndsWithContextOrClose(t *testing.T) {
	f := NewFSM()
	ctx, cancel := context.WithCancel(context.Background())
	w1 := f.Watch(ctx)
	w2 := f.Watch(context.Background())
	recv(t, w1)

	cancel()
	for {
		if _, ok := recv(t, w1); !ok {
			break
		}
	}
	f.close()
	for {
		if _, ok := recv(t, w2); !ok {
			break
		}
	}
	if _, ok := recv(t, f.Watch(context.Background())); ok {
		t.Fatal("a watch started after close is open")
	}
}

func TestWaitIndex(t *testing.T) {
	f := NewFSM()
	ctx := testContext(t)
	errc := make(chan error, 1)
	go func() { errc <- f.WaitIndex(ctx, 5) }()
	cmd := putGroup(t, "web", "web:1")
	for i := uint64(1); i <= 5; i++ {
		mustApply(t, f, i, cmd)
	}
	if err := <-errc; err != nil {
		t.Fatalf("WaitIndex(5) = %v", err)
	}
	if err := f.WaitIndex(ctx, 3); err != nil {
		t.Fatalf("WaitIndex of a past index = %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.WaitIndex(cctx, 6); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitIndex with a cancelled context = %v", err)
	}

	go func() { errc <- f.WaitIndex(ctx, 6) }()
	f.close()
	if err := <-errc; !errors.Is(err, ErrClosed) || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("WaitIndex after close = %v, want ErrClosed", err)
	}
}
