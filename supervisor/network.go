package supervisor

import (
	"context"
	"net/netip"
	"slices"

	"github.com/berth-project/berth/api"
)

// Network connects a group's pinned network namespace to the node: an
// address on the node bridge and the group's published ports. The Linux
// implementation is NewCNI (go-cni with the standard CNI plugins).
//
// The sandbox calls Setup from Ensure, once the namespace is pinned, and
// Teardown from Destroy, before it unpins the namespace; a nil Network
// (Config.Network) leaves groups with loopback only.
//
// Setup and Teardown are safe for concurrent use on different groups; the
// calls for one group come from its runner, one at a time. Both are
// idempotent. Reconcile runs alone, at agent start, before any runner.
type Network interface {
	// Setup attaches the namespace pinned at netnsPath and publishes
	// spec's ports. An attachment that already exists for the group in the
	// same namespace with the same ports is returned as it is (a restart,
	// a reattach); one with other ports is replaced.
	Setup(ctx context.Context, group, netnsPath string, spec *api.GroupSpec) (*Attachment, error)
	// Teardown releases everything Setup made for group: its address, its
	// veth, its port rules, its records. netnsPath may be gone already.
	Teardown(ctx context.Context, group, netnsPath string) error
	// Reconcile tears down every attachment (record of an address, cache
	// entry) of a group for which keep returns false, and returns those
	// groups: what an agent that crashed, or a reboot, left behind.
	Reconcile(ctx context.Context, keep func(group string) bool) ([]string, error)
}

// Attachment is a group's place on the node network.
type Attachment struct {
	Group string
	// Interface is the group's interface in its namespace ("eth0").
	Interface string
	// Address is the group's IPv4 address on the node bridge, Gateway the
	// bridge's.
	Address, Gateway string
	Ports            []api.PortMapping
}

// Status is the attachment as GroupStatus shows it.
func (a *Attachment) Status() *api.NetworkStatus {
	return &api.NetworkStatus{Mode: api.NetworkBridge, Address: a.Address, Ports: slices.Clone(a.Ports)}
}

// netnsKeeper is implemented by sandboxes that can say whether a group's
// network namespace is still pinned (hostSandboxes).
type netnsKeeper interface {
	netnsPinned(group string) bool
}

// networkUser is implemented by sandboxes that attach groups to the node
// network (hostSandboxes): New hands them Config.Network.
type networkUser interface {
	useNetwork(Network)
}

// ReconcileNetwork releases the addresses and port rules of groups whose
// network namespace is gone: an agent killed between unpinning and
// tearing down, a reboot (the pinned namespaces lived in the run dir, the
// address records live in the state dir). Groups whose namespace is still
// pinned keep theirs; the ones the agent no longer wants are removed with
// Remove as usual. Call it after Recover and before Run. It returns the
// groups whose attachments were released.
func (s *Supervisor) ReconcileNetwork(ctx context.Context) ([]string, error) {
	k, ok := s.cfg.Sandboxes.(netnsKeeper)
	if s.cfg.Network == nil || !ok {
		return nil, nil
	}
	return s.cfg.Network.Reconcile(ctx, k.netnsPinned)
}

// PublishedOn returns ports with addr as the host IP of every port that
// has none: where a node with a publish address publishes them. An invalid
// or unspecified addr leaves ports as they are (every address).
func PublishedOn(ports []api.PortMapping, addr netip.Addr) []api.PortMapping {
	out := slices.Clone(ports)
	if !addr.IsValid() || addr.IsUnspecified() {
		return out
	}
	for i := range out {
		if out[i].HostIP == "" {
			out[i].HostIP = addr.String()
		}
	}
	return out
}
