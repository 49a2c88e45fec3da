// Package containerdproc starts and stops a private containerd daemon as a
// child process: the agent's "managed containerd" mode and the integration
// tests' throwaway daemon.
//
// It owns the daemon's process and its generated config.toml (version 2: its
// own root, state and gRPC socket, the CRI plugin disabled). It does not talk
// to containerd beyond asking whether it answers (Answers); creating
// containers is the supervisor's job.
//
// The daemon runs in its own process group, so a ^C on the parent's terminal
// does not reach it, and it is not tied to the parent's life: containers keep
// running when the agent dies, and the next agent finds the daemon with
// Answers and connects instead of starting another.
//
// Use:
//
//	cfg := containerdproc.DefaultConfig("/run/berth/containerd")
//	p, err := containerdproc.Start(ctx, cfg) // returns once the daemon answers
//	...
//	err = p.Stop(10 * time.Second) // SIGTERM, then SIGKILL
//
// Two daemons on one host still share runc's state directory
// (/run/containerd/runc/<namespace>) and the cgroup paths
// /<namespace>/<container>, so two daemons must never serve the same
// namespace.
package containerdproc
