// Package supervisor is everything on one node that touches containerd:
// group sandboxes (a network namespace pinned by a bind mount, an optional
// shared IPC namespace, volumes, /etc files), containers and their tasks,
// the stop sequence (stop signal, grace period, SIGKILL), restart decisions
// and backoff, reattach to live tasks after an agent restart, image pull and
// import, and container logs (agentd's own binary runs as the shim's
// binary:// log driver, so logs never pass through agentd).
//
// One runner goroutine owns each group and is the only code that changes
// it; the group's state machine is in state.go. The containerd client is
// used only by the adapter behind the Runtime interface
// (NewContainerdRuntime), and host namespaces and mounts only behind
// Sandboxes (NewSandboxes), so the logic is tested with fakes.
//
// It does not know about the cluster, priorities or where a desired state
// came from: the agent says what should run (Set, Remove) and reads status
// (Status, List) and events (Config.Events).
//
// Use:
//
//	sup := supervisor.New(supervisor.Config{Runtime: rt, Sandboxes: sb, Events: sink, LogDir: dir})
//	names, _ := sup.Recover(ctx)     // what an earlier agent left running
//	go sup.Run(ctx)                   // ending ctx stops supervising, never the containers
//	sup.Set(supervisor.Group{Spec: spec, Generation: 1, SpecHash: h, Run: true})
//	<-sup.Remove("web")               // stop, then delete everything of the group
package supervisor
