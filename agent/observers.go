package agent

import "github.com/berth-project/berth/supervisor"

// sandboxObservers are the parts of the agent that live beside a group's
// sandbox and must come and go with it: the group's downward API socket
// (downward.go), its ambassadors' listeners (ambassadors.go) and its
// leases' leader-elector ports (lease_elector.go). Each is
// told when the sandbox is ready and before it is destroyed.
func (a *Agent) sandboxObservers() []supervisor.SandboxObserver {
	var out []supervisor.SandboxObserver
	out = append(out, a.downwardAPI())
	out = append(out, a.ambassadors())
	out = append(out, a.electors()) // lease_elector.go
	return out
}
