// Command bench measures Berth against a baseline in one run on one
// containerd, and prints min/median/p95 and the ratios. `make bench` runs it
// as root; it starts its own private containerd and agentd and removes
// everything it made when it ends.
//
// Measured:
//
//   - apply: a 3-container group from the API apply call to the event that
//     says all three tasks run, through a real agentd;
//   - direct: the same three containers (same image, same spec options: one
//     shim per group, default seccomp, agentd's binary log driver) created
//     and started with the containerd client into a shared network
//     namespace, concurrently, as the agent does; and the plain way, one
//     after another with default options, for reference;
//   - grace: the error of SIGKILL at the end of the grace period, against
//     the deadline, as containerd records the exit.
package main
