//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
)

// ipNetns makes a named network namespace with `ip netns add` (unique to
// this test process), brings its loopback up, deletes it in Cleanup and
// returns its path.
func ipNetns(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs ip(8) from iproute2 (CI=true: a missing prerequisite is a failure)")
		}
		t.Skip("needs ip(8) from iproute2")
	}
	name := fmt.Sprintf("berth-amb-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	ip("-n", name, "link", "set", "lo", "up")
	return filepath.Join("/run/netns", name)
}

// TestListenInNetnsServesTheNamespacesLoopback listens inside a netns the
// test makes, and proves that a connection made from inside that netns is
// accepted, that the host's loopback does not reach the listener, and that
// no thread of this process is left in the netns.
func TestListenInNetnsServesTheNamespacesLoopback(t *testing.T) {
	needRootForNetns(t)
	nsPath := ipNetns(t)
	var ns unix.Stat_t
	if err := unix.Stat(nsPath, &ns); err != nil {
		t.Fatal(err)
	}
	before := threadsInNetns(t, ns.Ino)

	ln, err := ListenInNetns(nsPath, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	const greeting = "hello from the listener in the netns"
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err
			return
		}
		_, err = io.WriteString(c, greeting)
		c.Close()
		accepted <- err
	}()

	// The listener's own thread left the namespace or died: only threads
	// that were there before (none, as ip(8) made it) may remain.
	waitThreadsLeave(t, ns.Ino, before, "listening")

	// From the host's loopback, the same address is another stack: the
	// dial is refused, or reaches something else, never our listener.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr); err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		got, _ := io.ReadAll(conn)
		conn.Close()
		if string(got) == greeting {
			t.Fatalf("a dial of %s from the host namespace reached the listener in the netns", addr)
		}
	}

	// From inside the namespace, it answers.
	conn, err := netnsDialer(nsPath)(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from inside the netns: %v", addr, err)
	}
	got, err := io.ReadAll(conn)
	conn.Close()
	if err != nil || string(got) != greeting {
		t.Fatalf("read %q, %v; want %q", got, err, greeting)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v", err)
	}
	waitThreadsLeave(t, ns.Ino, before, "dialing")
}

// waitThreadsLeave waits until no thread of this process other than
// before is in the netns with inode ino.
func waitThreadsLeave(t *testing.T, ino uint64, before []string, after string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		extra := threadsNotIn(threadsInNetns(t, ino), before)
		if len(extra) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads %v (pid %d) are still in the netns after %s", extra, os.Getpid(), after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestListenInNetnsRefusesBadAddresses(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "localhost:80"}, // a name would resolve in the host's netns
		{"tcp", "6379"},
		{"udp", "127.0.0.1:53"},
		{"unix", "/tmp/sock"},
	} {
		ln, err := ListenInNetns("/nonexistent", tc.network, tc.addr)
		if err == nil {
			ln.Close()
			t.Errorf("ListenInNetns(%s, %s) succeeded; want an error", tc.network, tc.addr)
			continue
		}
		if !errors.Is(err, api.ErrInvalid) {
			t.Errorf("ListenInNetns(%s, %s) = %v; want an ErrInvalid", tc.network, tc.addr, err)
		}
	}
}

func TestListenInNetnsReportsMissingNamespace(t *testing.T) {
	ln, err := ListenInNetns(filepath.Join(t.TempDir(), "none"), "tcp", "127.0.0.1:0")
	if err == nil {
		ln.Close()
		t.Fatal("listen in a missing netns succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v; want one that is fs.ErrNotExist", err)
	}
}
