//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// dialFunc dials like net.Dialer.DialContext.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// netnsDialer returns a dial function whose connections are made from
// inside the network namespace pinned at nsPath (a group's sandbox), so
// that 127.0.0.1 is the group's loopback, not the host's.
//
// Each dial runs on a fresh goroutine that locks its OS thread and joins
// the namespace with setns. It never unlocks the thread: when the
// goroutine ends, the Go runtime destroys the thread, so no thread is ever
// handed back to the scheduler while it is in a foreign namespace. The
// thread also goes back to its own namespace after the dial, because the
// runtime does not destroy the main thread but parks it for good, which
// would keep a group's namespace alive after the group is gone. A socket
// keeps the namespace it was created in, so the returned conn can be used
// from any goroutine.
//
// addr's host must be an IP literal: a name would be resolved, and
// possibly dialed, on other threads, in the host's namespace.
func netnsDialer(nsPath string) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s in netns %s: %w", addr, nsPath, err)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("dial %s in netns %s: host must be an IP address", addr, nsPath)
		}
		type result struct {
			conn net.Conn
			err  error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			// No UnlockOSThread: this thread leaves the host namespace for
			// good and must die with the goroutine.
			conn, err := dialInNetns(ctx, nsPath, network, addr)
			done <- result{conn, err}
		}()
		r := <-done // the dial itself honours ctx
		return r.conn, r.err
	}
}

// dialInNetns joins the namespace at nsPath on the calling thread, which
// must be locked and thrown away afterwards, dials addr from there, and
// returns the thread to the namespace it was in.
func dialInNetns(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("dial %s: own netns: %w", addr, err)
	}
	defer self.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("dial %s: open netns: %w", addr, err)
	}
	err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
	target.Close()
	if err != nil {
		return nil, fmt.Errorf("dial %s: join netns %s: %w", addr, nsPath, err)
	}
	// Best effort: the thread is discarded whether or not this works.
	defer func() { _ = unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) }()
	// A negative FallbackDelay keeps every attempt on this goroutine (no
	// parallel dual-stack racers on other threads).
	d := net.Dialer{FallbackDelay: -1}
	return d.DialContext(ctx, network, addr)
}
