// Package api holds Berth's wire and file types: the group file schema
// (GroupSpec and its unit types), decoding and validation of group TOML with
// file:line:col positions (Decode), the status, event and log types the
// agent reports, the error classes (ErrInvalid, ErrNotFound, …) and the HTTP
// client agentctl uses (Client).
//
// It does not talk to containerd or Raft. Everything here is plain data and
// pure functions, so the agent, agentctl and tests all share one definition.
//
// Use:
//
//	spec, err := api.Decode("web.toml", data) // err is an api.ErrorList with positions
//	c := api.NewClient("/run/berth/agent.sock")
//	res, err := c.Apply(ctx, api.ApplyRequest{Files: ...})
package api
