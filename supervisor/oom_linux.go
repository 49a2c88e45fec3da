//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/typeurl/v2"
)

// oomBuffer is how many OOM events OOMEvents holds for a slow reader
// before it drops the oldest.
const oomBuffer = 64

// OOMEvents subscribes to containerd's /tasks/oom events in the runtime's
// namespace and sends the container ID of each: the container's cgroup
// hit its memory limit and the kernel killed a process in it. (Whether
// the task then exits is told by its exit channel: code 137 when its init
// process was the one killed.)
//
// The subscription lasts until ctx ends or fails. Either way ids is then
// closed; after a failure (containerd went away: api.ErrUnavailable, or
// another error) errs holds the error, and it is closed in both cases, so
// a caller ranges over ids and then reads errs once. After an error the
// caller may subscribe again; OOMs between the two subscriptions, or
// before this one reaches containerd, are not reported.
//
// Concurrency: ids is buffered (64) and the event stream is never held up
// by its reader. When the buffer is full, the oldest ID is dropped to make
// room for the newest, and the drop is logged (slog.Default, warning):
// a reader that falls behind loses the stalest events, not the latest.
func (r *containerdRuntime) OOMEvents(ctx context.Context) (<-chan string, <-chan error) {
	ids := make(chan string, oomBuffer)
	errs := make(chan error, 1)
	// Our own cancel ends the client's stream goroutine when we stop
	// reading it for a reason other than ctx.
	sctx, cancel := context.WithCancel(r.ns(ctx))
	filter := fmt.Sprintf("topic==%q,namespace==%q", runtime.TaskOOMEventTopic, r.cfg.Namespace)
	envelopes, streamErrs := r.client.EventService().Subscribe(sctx, filter)
	go func() {
		defer cancel()
		defer close(errs)
		defer close(ids)
		for {
			select {
			case <-sctx.Done():
				return
			case err, ok := <-streamErrs:
				if sctx.Err() != nil {
					return // ended by ctx, not a failure
				}
				if !ok || err == nil {
					err = errors.New("event stream closed")
				}
				errs <- fmt.Errorf("oom events in namespace %s: %w", r.cfg.Namespace, convertErr(errdefs.FromGRPC(err)))
				return
			case env := <-envelopes:
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					slog.Warn("oom event: cannot decode", "namespace", env.Namespace, "error", err)
					continue
				}
				oom, ok := v.(*apievents.TaskOOM)
				if !ok {
					slog.Warn("oom event: unexpected type", "namespace", env.Namespace, "type", fmt.Sprintf("%T", v))
					continue
				}
				if dropped, ok := sendDropOldest(ids, oom.ContainerID); ok {
					slog.Warn("oom event dropped: reader too slow", "namespace", r.cfg.Namespace, "container", dropped)
				}
			}
		}
	}()
	return ids, errs
}

// sendDropOldest sends v on ch without blocking, first taking the oldest
// value out when ch is full; it returns that value and true if it did.
// Only one goroutine may send on ch.
func sendDropOldest(ch chan string, v string) (dropped string, ok bool) {
	for {
		select {
		case ch <- v:
			return dropped, ok
		default:
		}
		select {
		case dropped = <-ch:
			ok = true
		default: // the reader made room meanwhile
		}
	}
}
