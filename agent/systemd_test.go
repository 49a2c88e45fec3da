package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket stands in for systemd: it listens on a unix datagram socket
// in a temporary directory, points NOTIFY_SOCKET at it (and clears any
// watchdog settings the test process inherited) and returns the
// notifications it receives, one per datagram.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 { // sun_path holds 108 bytes
		var err error
		if dir, err = os.MkdirTemp("/tmp", "notify"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")

	ch := make(chan string, 10000)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

// awaitNotification reads notifications until one equals want and returns
// those that came before it.
func awaitNotification(t *testing.T, ch <-chan string, want string) []string {
	t.Helper()
	var before []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %q; got %q", want, before)
			}
			if got == want {
				return before
			}
			before = append(before, got)
		case <-timeout:
			t.Fatalf("no %q within 10s; got %q", want, before)
		}
	}
}

func testNotifier(t *testing.T) *notifier {
	n := newNotifier(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	n.statusEvery = 10 * time.Millisecond
	return n
}

// runNotifier runs n.Run until the test ends or the returned stop is
// called; stop returns Run's error.
func runNotifier(t *testing.T, n *notifier, status func() string, healthy func() bool) (stop func() error) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, status, healthy) }()
	stopped := false
	var err error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("notifier.Run did not return within 10s of its context's end")
			}
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func setWatchdog(t *testing.T, usec string, pid int) {
	t.Setenv("WATCHDOG_USEC", usec)
	t.Setenv("WATCHDOG_PID", strconv.Itoa(pid))
}

func TestNotifierSendsReadyStatusOnlyWhenChangedAndStopping(t *testing.T) {
	ch := notifySocket(t)
	n := testNotifier(t)

	n.Ready()
	n.Status("starting")
	n.Status("starting")
	n.Status("2 groups: 2 running; containerd ok")
	n.Status("2 groups: 2 running; containerd ok")
	n.Status("bad\nREADY=1") // a newline would start an assignment of its own
	n.Stopping()

	got := append(awaitNotification(t, ch, "STOPPING=1"), "STOPPING=1")
	want := []string{
		"READY=1",
		"STATUS=starting",
		"STATUS=2 groups: 2 running; containerd ok",
		"STATUS=bad READY=1",
		"STOPPING=1",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("notifications:\n got %q\nwant %q", got, want)
	}
}

func TestNotifierRunRefreshesStatusAndPingsWatchdog(t *testing.T) {
	ch := notifySocket(t)
	setWatchdog(t, "200000", os.Getpid())
	n := testNotifier(t)
	if n.watchdog != 200*time.Millisecond {
		t.Fatalf("watchdog = %v, want 200ms from WATCHDOG_USEC", n.watchdog)
	}

	var status atomic.Value
	status.Store("12 groups: 10 running, 1 pending, 1 evicted; containerd ok")
	stop := runNotifier(t, n, func() string { return status.Load().(string) }, func() bool { return true })

	awaitNotification(t, ch, "STATUS=12 groups: 10 running, 1 pending, 1 evicted; containerd ok")
	for range 3 {
		awaitNotification(t, ch, "WATCHDOG=1")
	}
	status.Store("12 groups: 11 running, 1 evicted; containerd down")
	awaitNotification(t, ch, "STATUS=12 groups: 11 running, 1 evicted; containerd down")

	if err := stop(); err != nil {
		t.Errorf("Run returned %v after its context ended, want nil", err)
	}
}

func TestNotifierWithholdsWatchdogWhileUnhealthy(t *testing.T) {
	ch := notifySocket(t)
	setWatchdog(t, "200000", os.Getpid())
	n := testNotifier(t)

	var healthy atomic.Bool
	checks := make(chan bool, 100)
	runNotifier(t, n, func() string { return "running" }, func() bool {
		ok := healthy.Load()
		checks <- ok
		return ok
	})

	// Three watchdog intervals' worth of failed health checks...
	for range 3 {
		select {
		case <-checks:
		case <-time.After(10 * time.Second):
			t.Fatal("healthy was not called within 10s")
		}
	}
	// ...then a marker, and the agent recovers.
	n.Status("marker: healthy from here")
	healthy.Store(true)

	for _, m := range awaitNotification(t, ch, "STATUS=marker: healthy from here") {
		if m == "WATCHDOG=1" {
			t.Fatal("WATCHDOG=1 sent while the agent was unhealthy")
		}
	}
	awaitNotification(t, ch, "WATCHDOG=1")
}

func TestNotifierPingsOnlyTheWatchdogMeantForThisProcess(t *testing.T) {
	tests := []struct {
		name, usec string
		pid        int
	}{
		{"no WATCHDOG_USEC", "", os.Getpid()},
		{"another process's watchdog", "200000", os.Getpid() + 1},
		{"bad WATCHDOG_USEC", "soon", os.Getpid()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := notifySocket(t)
			setWatchdog(t, tt.usec, tt.pid)
			n := testNotifier(t)
			if n.watchdog != 0 {
				t.Errorf("watchdog = %v, want off", n.watchdog)
			}
			var checks, refreshes atomic.Int32
			runNotifier(t, n,
				func() string { return fmt.Sprintf("refresh %d", refreshes.Add(1)) },
				func() bool { checks.Add(1); return true })

			// A watchdog would have been pinged before the first status.
			for _, m := range awaitNotification(t, ch, "STATUS=refresh 3") {
				if m == "WATCHDOG=1" {
					t.Error("WATCHDOG=1 sent without a watchdog for this process")
				}
			}
			if c := checks.Load(); c != 0 {
				t.Errorf("healthy called %d times without a watchdog", c)
			}
		})
	}
}

func TestNotifierIsANoOpWithoutNotifySocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	setWatchdog(t, "20000", os.Getpid())
	n := testNotifier(t)
	if n.enabled || n.watchdog != 0 {
		t.Fatalf("enabled = %v, watchdog = %v; want off without NOTIFY_SOCKET", n.enabled, n.watchdog)
	}
	n.Ready()
	n.Status("ignored")
	n.Stopping()

	var calls atomic.Int32
	// Long enough for a dozen watchdog intervals and thirty status refreshes.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := n.Run(ctx,
		func() string { calls.Add(1); return "ignored" },
		func() bool { calls.Add(1); return true })
	if err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if ctx.Err() == nil {
		t.Error("Run returned before its context ended")
	}
	if c := calls.Load(); c != 0 {
		t.Errorf("status/healthy called %d times without NOTIFY_SOCKET", c)
	}
}
