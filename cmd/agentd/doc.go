// Command agentd is the Berth node agent. It only builds and runs
// agent.Main; when the runc shim runs it as a task's log driver (first
// argument supervisor.LogDriverArg) it writes that task's logs instead.
package main
