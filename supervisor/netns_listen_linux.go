//go:build linux

package supervisor

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/berth-project/berth/api"
)

// ListenInNetns opens a TCP listener on addr inside the network namespace
// pinned at nsPath (a group's sandbox), so that a proxy run by the agent
// (an ambassador) serves the group's own loopback: "127.0.0.1:6379" is the
// group's localhost, not the host's. network is "tcp", "tcp4" or "tcp6".
//
// The socket is made on a fresh goroutine that locks its OS thread and
// joins the namespace with setns, exactly as netnsDialer does: the thread
// is never unlocked, so the runtime destroys it when the goroutine ends and
// no thread is ever handed back to the scheduler in a foreign namespace;
// it also returns to its own namespace after the listen, in case it is the
// main thread (which the runtime parks instead of destroying). A socket
// keeps the namespace it was created in, so the listener accepts from any
// goroutine, and its connections are ordinary *net.TCPConn.
//
// addr's host must be an IP literal or empty (every address of the
// namespace): a name would be resolved on other threads, in the host's
// namespace. The listener keeps the namespace alive while it is open;
// close it before the group's sandbox is removed.
func ListenInNetns(nsPath, network, addr string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("listen on %s in netns %s: network %q is not tcp, tcp4 or tcp6: %w", addr, nsPath, network, api.ErrInvalid)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s in netns %s: %v: %w", addr, nsPath, err, api.ErrInvalid)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("listen on %s in netns %s: host must be an IP address: %w", addr, nsPath, api.ErrInvalid)
		}
	}
	return inNetns(nsPath, func() (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s in netns %s: %w", addr, nsPath, err)
		}
		return ln, nil
	})
}
