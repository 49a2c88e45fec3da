// Command agentctl controls agentd, the Berth node agent, over its admin
// socket (api.Client): apply group files, inspect groups, read logs and
// events, manage images.
//
// It owns the command line only: parsing, printing and exit codes (listed
// in root.go). Everything it knows about agentd comes through package api;
// it holds no state of its own.
//
// Layout: main.go only runs the root command; root.go has the global flags
// (--socket, -o, --timeout) and maps errors to exit codes; each noun has
// its own file (apply.go, get.go, describe.go, delete.go, stop.go,
// start.go, logs.go, events.go, image.go, version.go). Tests run the
// commands in-process against a fake agent on a unix socket.
package main
