// Package integration holds Berth's end-to-end tests: a TestMain starts a
// private containerd (own root, state, socket, CRI disabled, a namespace
// unique to the run), builds the test images (busybox and testapp) and the
// agentd and agentctl binaries, and the tests drive real agentd processes
// and real containers. Nothing here uses fakes. Run as root:
//
//	go test -count=1 -v ./integration/
//
// Under CI=true a missing prerequisite (root, containerd, runc, busybox)
// fails the run; elsewhere the package prints SKIP and passes.
//
// bench/ is the benchmark program (make bench); testapp/ is the test app.
package integration
