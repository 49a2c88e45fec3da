package main

import (
	"os"

	"github.com/berth-project/berth/agent"
	"github.com/berth-project/berth/supervisor"
)

func main() {
	// The runc shim runs this same binary as the tasks' log driver.
	if len(os.Args) > 1 && os.Args[1] == supervisor.LogDriverArg {
		supervisor.RunLogDriver(os.Args[2:])
	}
	os.Exit(agent.Main(os.Args[1:]))
}
