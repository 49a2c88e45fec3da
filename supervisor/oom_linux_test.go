//go:build linux

package supervisor

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/oci"

	"github.com/berth-project/berth/api"
)

// memoryHog allocates 64 MiB in busybox: tail buffers its whole input
// while it looks for the last lines, and /dev/zero has none. When tail is
// killed, sh exits with its status, 137.
var memoryHog = []string{"sh", "-c", "head -c 64m /dev/zero | tail"}

// withHogLimit limits memory to 16 MiB, swap included where the kernel
// accounts swap, so that the hog is OOM-killed rather than swapped out.
func withHogLimit() oci.SpecOpts {
	const limit = 16 << 20
	opts := []oci.SpecOpts{oci.WithMemoryLimit(limit)}
	for _, swapFile := range []string{
		"/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", // cgroup v1
		"/sys/fs/cgroup/cgroup.controllers",                 // cgroup v2: memory.swap.max
	} {
		if _, err := os.Stat(swapFile); err == nil {
			opts = append(opts, oci.WithMemorySwap(limit))
			break
		}
	}
	return oci.Compose(opts...)
}

// awaitExit returns the exit code from exitC, failing the test after d.
func awaitExit(t *testing.T, exitC <-chan containerd.ExitStatus, d time.Duration) uint32 {
	t.Helper()
	select {
	case st := <-exitC:
		code, _, err := st.Result()
		if err != nil {
			t.Fatal(err)
		}
		return code
	case <-time.After(d):
		t.Fatalf("task still running after %s", d)
		return 0
	}
}

func TestOOMEventsReportContainerOOMKilledInNamespace(t *testing.T) {
	tc := startTestContainerd(t, "berth-oom")
	other := tc.newNamespace(t, "berth-oom-other")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids, errs := tc.rt.OOMEvents(ctx)

	// An OOM in another namespace of the same containerd comes first and
	// must not be reported.
	elsewhere := tc.runTask(t, ctx, other, "elsewhere-hog", memoryHog, withHogLimit())
	if code := awaitExit(t, elsewhere, 10*time.Second); code != 137 {
		t.Fatalf("hog in namespace %s exited with %d, want 137 (OOM-killed)", other, code)
	}

	exitC := tc.runTask(t, ctx, tc.ns, "hog", memoryHog, withHogLimit())
	select {
	case id, ok := <-ids:
		if !ok {
			t.Fatalf("ids closed: %v", <-errs)
		}
		if id != "hog" {
			t.Fatalf("OOM event for %q, want hog", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OOM event within 10s")
	}
	if code := awaitExit(t, exitC, 10*time.Second); code != 137 {
		t.Fatalf("hog exited with %d, want 137 (OOM-killed)", code)
	}
	// The kernel may report one OOM more than once; never another container.
	for drained := false; !drained; {
		select {
		case id := <-ids:
			if id != "hog" {
				t.Fatalf("OOM event for %q, want hog only", id)
			}
		default:
			drained = true
		}
	}
}

func TestOOMEventsEndWithSubscription(t *testing.T) {
	tc := startTestContainerd(t, "berth-oom-end")

	t.Run("end of ctx closes both channels without an error", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		ids, errs := tc.rt.OOMEvents(ctx)
		cancel()
		awaitClosed(t, ids)
		if err, ok := <-errs; ok {
			t.Fatalf("errs gave %v, want closed without a value", err)
		}
	})
	t.Run("containerd going away is an error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ids, errs := tc.rt.OOMEvents(ctx)
		if err := tc.daemon.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		awaitClosed(t, ids)
		err, ok := <-errs
		if !ok || !errors.Is(err, api.ErrUnavailable) {
			t.Fatalf("errs gave %v (open %v), want an api.ErrUnavailable", err, ok)
		}
	})
}

// awaitClosed fails the test unless ids is closed, with nothing left in
// it, within 10s.
func awaitClosed(t *testing.T, ids <-chan string) {
	t.Helper()
	select {
	case id, ok := <-ids:
		if ok {
			t.Fatalf("ids gave %q, want closed", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ids still open after 10s")
	}
}

func TestOOMSendDropsOldestWhenFull(t *testing.T) {
	ch := make(chan string, 2)
	for _, tt := range []struct {
		send, wantDropped string
	}{
		{"a", ""},
		{"b", ""},
		{"c", "a"},
		{"d", "b"},
	} {
		dropped, ok := sendDropOldest(ch, tt.send)
		if dropped != tt.wantDropped || ok != (tt.wantDropped != "") {
			t.Fatalf("send %s: dropped %q, %v; want %q", tt.send, dropped, ok, tt.wantDropped)
		}
	}
	if got := []string{<-ch, <-ch}; got[0] != "c" || got[1] != "d" {
		t.Fatalf("channel holds %v, want [c d]", got)
	}
}
