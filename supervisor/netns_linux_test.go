//go:build linux

package supervisor

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needRootForNetns skips the test without root, or fails it when CI=true.
func needRootForNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root (CI=true: a missing prerequisite is a failure)")
	}
	t.Skip("needs root")
}

// listenInNetns listens on addr inside the namespace pinned at nsPath.
func listenInNetns(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer self.Close()
		f, err := os.Open(nsPath)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: err}
			return
		}
		ln, err := net.Listen("tcp", addr)
		done <- result{ln, err}
		// Back home, in case this is the main thread (which the runtime
		// parks instead of destroying).
		_ = unix.Setns(int(self.Fd()), unix.CLONE_NEWNET)
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("listen in netns: %v", r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

func TestNetnsDialerReachesOnlyTheNamespacesLoopback(t *testing.T) {
	needRootForNetns(t)
	nsPath := filepath.Join(t.TempDir(), "net")
	if err := pinNamespace(nsPath, unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unpin(nsPath); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})

	// Port 0 inside the namespace: the host's loopback is a different
	// stack, so the same port number is free there (unless something
	// happens to hold it; the host dial below would then not be refused,
	// and the test checks what it reached).
	ln := listenInNetns(t, nsPath, "127.0.0.1:0")
	addr := ln.Addr().String()
	const greeting = "hello from the netns"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greeting)
			c.Close()
		}
	}()

	var ns unix.Stat_t
	if err := unix.Stat(nsPath, &ns); err != nil {
		t.Fatal(err)
	}
	// pinNamespace's thread may be parked in the namespace for good (when
	// it was the main thread); the dialer's threads must not be.
	before := threadsInNetns(t, ns.Ino)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dial := netnsDialer(nsPath)
	for i := range 3 { // several dials: each on a fresh, discarded thread
		conn, err := dial(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("dial %d through the netns: %v", i, err)
		}
		// Read on this goroutine, not the one that dialed.
		got, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || string(got) != greeting {
			t.Fatalf("dial %d: read %q, %v; want %q", i, got, err, greeting)
		}
	}

	if conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr); err == nil {
		got, _ := io.ReadAll(conn)
		conn.Close()
		if string(got) == greeting {
			t.Fatalf("a plain dial of %s from the host namespace reached the netns listener", addr)
		}
	}

	// Every thread that joined the namespace to dial left it or died.
	deadline := time.Now().Add(5 * time.Second)
	for {
		extra := threadsNotIn(threadsInNetns(t, ns.Ino), before)
		if len(extra) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads %v (pid %d) are still in the netns after dialing", extra, os.Getpid())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func threadsNotIn(list, drop []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(drop, s) {
			out = append(out, s)
		}
	}
	return out
}

// threadsInNetns lists this process's threads whose network namespace
// has inode ino.
func threadsInNetns(t *testing.T, ino uint64) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, task := range tasks {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc/self/task", task.Name(), "ns", "net"), &st) == nil && st.Ino == ino {
			in = append(in, task.Name())
		}
	}
	return in
}

func TestNetnsDialerRefusesHostNames(t *testing.T) {
	_, err := netnsDialer("/nonexistent")(context.Background(), "tcp", "localhost:80")
	if err == nil {
		t.Fatal("dial of a host name succeeded; want an error (names resolve outside the namespace)")
	}
}

func TestNetnsDialerReportsMissingNamespace(t *testing.T) {
	_, err := netnsDialer(filepath.Join(t.TempDir(), "none"))(context.Background(), "tcp", "127.0.0.1:1")
	if err == nil {
		t.Fatal("dial into a missing netns succeeded")
	}
}
