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
		// A negative FallbackDelay keeps every attempt on this goroutine
		// (no parallel dual-stack racers on other threads).
		return inNetns(nsPath, func() (net.Conn, error) {
			d := net.Dialer{FallbackDelay: -1}
			return d.DialContext(ctx, network, addr) // honours ctx
		})
	}
}

// inNetns runs fn inside the network namespace at nsPath and returns its
// result: on a fresh goroutine whose OS thread is locked, joins the
// namespace with setns, and is never unlocked, so the runtime destroys
// the thread when the goroutine ends (no thread goes back to the scheduler
// in a foreign namespace). The thread also returns to its own namespace
// afterwards, in case it is the main thread, which the runtime parks
// instead of destroying. Sockets keep the namespace they were made in, so
// what fn returns can be used from any goroutine.
func inNetns[T any](nsPath string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		v, err := joinNetns(nsPath, fn)
		done <- result{v, err}
	}()
	r := <-done
	return r.v, r.err
}

// joinNetns joins the namespace at nsPath on the calling (locked, to be
// discarded) thread, runs fn there and goes back.
func joinNetns[T any](nsPath string, fn func() (T, error)) (T, error) {
	var zero T
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return zero, fmt.Errorf("own netns: %w", err)
	}
	defer self.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return zero, fmt.Errorf("open netns: %w", err)
	}
	err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
	target.Close()
	if err != nil {
		return zero, fmt.Errorf("join netns %s: %w", nsPath, err)
	}
	// Best effort: the thread is discarded whether or not this works.
	defer func() { _ = unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) }()
	return fn()
}
