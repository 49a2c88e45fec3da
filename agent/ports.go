package agent

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"

	"github.com/berth-project/berth/api"
)

// A host port (address, port, protocol) is published by at most one group
// of the node: portmap would install both forwards without a word, and
// connections would go to whichever rule came first. So a group that asks
// for a port another group of this node already publishes is refused when
// it is applied, with the port and the group that has it, and nothing is
// applied. "Already publishes" means is defined here (running or not, a
// local group or an allocation of a cluster group): a stopped group keeps
// its ports, as it keeps its name.

// portOwner is a group that publishes ports on this node.
type portOwner struct {
	group string
	ports []api.PortMapping
}

// portOwnersLocked lists the groups of this node that publish ports, with
// replace standing in for the groups of the same name (the specs being
// applied), sorted by name. A group whose file was removed does not count:
// the sync that sees a file removed and another added in its place must
// not refuse the new one. a.mu is held.
func (a *Agent) portOwnersLocked(replace map[string]*api.GroupSpec) []portOwner {
	var out []portOwner
	for name, g := range a.groups {
		if _, ok := replace[name]; ok {
			continue
		}
		if g.Source != SourceAPI && g.Source != api.SourceCluster {
			if _, err := os.Stat(g.Source); err != nil {
				continue
			}
		}
		if ps := g.Spec.PortMappings(); len(ps) > 0 {
			out = append(out, portOwner{group: name, ports: ps})
		}
	}
	for name, spec := range replace {
		if ps := spec.PortMappings(); len(ps) > 0 {
			out = append(out, portOwner{group: name, ports: ps})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].group < out[j].group })
	return out
}

// portConflicts returns, for each published port of spec that one of
// owners (other than spec's group) already publishes, its index in
// spec.Ports and the message.
func portConflicts(spec *api.GroupSpec, owners []portOwner) map[int]string {
	out := map[int]string{}
	for i, s := range spec.Ports {
		p, err := api.ParsePort(s)
		if err != nil {
			continue // validation reported it
		}
	search:
		for _, o := range owners {
			if o.group == spec.Name {
				continue
			}
			for _, q := range o.ports {
				if !p.Overlaps(q) {
					continue
				}
				msg := fmt.Sprintf("port %s is already published by group %q", p.Key(), o.group)
				if q.Key() != p.Key() {
					msg += fmt.Sprintf(" (as %s)", q.Key())
				}
				out[i] = msg + "; pick another host port, or change or delete that group first"
				break search
			}
		}
	}
	return out
}

// checkPortsLocked refuses every spec of an apply that publishes a port
// another group of this node, or another spec of the same apply, already
// publishes. files and content map a group to the file that defines it
// and its text, to say where. a.mu is held.
func (a *Agent) checkPortsLocked(specs []*api.GroupSpec, files, content map[string]string) api.ErrorList {
	replace := make(map[string]*api.GroupSpec, len(specs))
	for _, s := range specs {
		replace[s.Name] = s
	}
	owners := a.portOwnersLocked(replace)
	var errs api.ErrorList
	for _, s := range specs {
		conflicts := portConflicts(s, owners)
		for _, i := range slices.Sorted(maps.Keys(conflicts)) {
			errs = append(errs, api.PortFieldError(files[s.Name], []byte(content[s.Name]), s, i, conflicts[i]))
		}
	}
	return errs
}

// checkFilePortsLocked refuses the spec of the group file at path if it
// publishes a port another group of this node already publishes; the
// error points at the entry of ports. a.mu is held.
func (a *Agent) checkFilePortsLocked(spec *api.GroupSpec, path string) error {
	conflicts := portConflicts(spec, a.portOwnersLocked(map[string]*api.GroupSpec{spec.Name: spec}))
	if len(conflicts) == 0 {
		return nil
	}
	data, _ := os.ReadFile(path) // only to say where; nil without a position
	var errs api.ErrorList
	for _, i := range slices.Sorted(maps.Keys(conflicts)) {
		errs = append(errs, api.PortFieldError(path, data, spec, i, conflicts[i]))
	}
	return errs
}

// An allocation of a cluster group arrives from the Raft state, not from
// an apply that could be refused: when it publishes a port that another
// group of this node already publishes, it waits, Pending with reason
// PortConflict and the port and group in its message (which its Raft
// status carries to `agentctl get` on every node), until the port is free.
// Ports are taken first come, first served: a local group, an allocation
// that was handed to the supervisor without waiting, or any group whose
// ports are published now holds its ports; an allocation that waits holds
// none, so two allocations never wait for each other.

// portHoldLocked returns why the allocation name (entry g) must wait for a
// published port, or "" when it may publish its ports. a.mu is held.
func (a *Agent) portHoldLocked(name string, g *groupEntry) string {
	if g.Source != api.SourceCluster || len(g.Spec.Ports) == 0 {
		return ""
	}
	var owners []portOwner
	for _, o := range a.portOwnersLocked(map[string]*api.GroupSpec{name: g.Spec}) {
		if og := a.groups[o.group]; o.group == name || og == nil || og.Source != api.SourceCluster || og.portHold == "" {
			owners = append(owners, o)
		}
	}
	if a.sup != nil {
		// Groups that publish ports now, whatever the agent wants of
		// them (a waiting allocation found running after a restart).
		for _, st := range a.sup.List() {
			if st.Name != name && st.Network != nil && len(st.Network.Ports) > 0 {
				owners = append(owners, portOwner{group: st.Name, ports: st.Network.Ports})
			}
		}
	}
	for i, s := range g.Spec.Ports {
		p, err := api.ParsePort(s)
		if err != nil {
			continue
		}
		for _, o := range owners {
			if o.group == name {
				continue
			}
			for _, q := range o.ports {
				if p.Overlaps(q) {
					return fmt.Sprintf("ports[%d] %q: port %s is already published by group %q on node %s; the allocation waits until the port is free (or give the cluster group another host port)",
						i, s, p.Key(), o.group, a.cfg.NodeName)
				}
			}
		}
	}
	return ""
}

// recheckPortHolds hands the supervisor again every allocation whose wait
// for a port changed: a group that published it is gone or changed.
func (a *Agent) recheckPortHolds() {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	for _, name := range slices.Sorted(maps.Keys(a.groups)) {
		g := a.groups[name]
		if g.Source != api.SourceCluster || g.portHold == "" {
			continue
		}
		if a.portHoldLocked(name, g) != g.portHold {
			a.pushLocked(name)
			changed = true
		}
	}
	if changed {
		a.admitLocked()
	}
}
