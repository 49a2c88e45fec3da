package main

import (
	"context"
	"fmt"
	"time"

	"github.com/berth-project/berth/api"
)

// followEvents follows the agent's events (of one group, or all for "")
// until ctx ends.
func followEvents(ctx context.Context, c *api.Client, group string) *eventWaiter {
	w := &eventWaiter{ch: make(chan api.Event, 1024)}
	go func() {
		_ = c.Events(ctx, api.EventOptions{Group: group, Follow: true}, func(e api.Event) error {
			select {
			case w.ch <- e:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	return w
}

// eventWaiter reads one followed event stream.
type eventWaiter struct {
	ch      chan api.Event
	lastSeq uint64
}

// started waits for group's Started event (the group's, not a
// container's: every container runs) and returns the event's time.
func (w *eventWaiter) started(ctx context.Context, group string) (time.Time, error) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e := <-w.ch:
			if e.Seq <= w.lastSeq {
				continue
			}
			w.lastSeq = e.Seq
			if e.Group != group {
				continue
			}
			switch e.Reason {
			case "Started":
				if e.Container == "" {
					return e.Time, nil
				}
			case "StartFailed", "ImageUnavailable", "Unschedulable":
				return time.Time{}, fmt.Errorf("group %s: %s: %s", group, e.Reason, e.Message)
			}
		case <-timeout:
			return time.Time{}, fmt.Errorf("no Started event of %s within 30s", group)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
