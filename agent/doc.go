// Package agent is agentd, the Berth node agent: its configuration
// (Config: DefaultConfig, LoadConfigFile, Validate), the desired state of
// this node (group files in groups_dir watched with fsnotify, groups applied
// through the API and persisted under the state dir), the admin HTTP API on
// a unix socket, the event hub, and the connection to containerd — or a
// private, managed containerd when none answers.
//
// The agent decides what should run on this node and hands it to the
// supervisor (supervisor.Supervisor.Set / Remove); the supervisor decides
// how. Later the agent also takes this node's allocations from the cluster
// state and applies admission and priorities: it is the one place where
// supervisor and cluster meet.
//
// It does not touch containerd objects itself (that is the supervisor's)
// and does not place work on other nodes (that is the cluster's).
//
// Use:
//
//	cfg := agent.DefaultConfig()
//	_ = agent.LoadConfigFile("/etc/berth/agent.toml", &cfg)
//	if err := cfg.Validate(); err != nil { … }
//	err := agent.New(cfg, slog.Default()).Run(ctx) // ctx's end stops supervision, not the groups
package agent
