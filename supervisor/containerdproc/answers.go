package containerdproc

import (
	"context"
	"net"
	"strings"
	"time"

	containerd "github.com/containerd/containerd"
)

// Answers reports whether a containerd answers a Version call at address (a
// unix socket path, optionally "unix://"-prefixed) before ctx ends; without
// a deadline on ctx it waits at most one second.
func Answers(ctx context.Context, address string) bool {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Second)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	timeout := time.Until(deadline)
	if timeout <= 0 {
		return false
	}
	// A plain connect first: it fails at once when nothing listens, where
	// the gRPC dial would retry until the timeout.
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		return false
	}
	conn.Close()

	client, err := containerd.New(address, containerd.WithTimeout(timeout))
	if err != nil {
		return false
	}
	defer client.Close()
	_, err = client.Version(ctx)
	return err == nil
}
