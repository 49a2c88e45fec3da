package supervisor

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
)

// grace returns the group's grace period: from the applied spec, else from
// the labels of a recovered container, else DefaultGrace.
func (r *runner) grace() time.Duration {
	if r.applied != nil {
		return r.applied.Spec.GracePeriod.D()
	}
	for _, c := range r.ctrs {
		if d, err := time.ParseDuration(c.labels[LabelGrace]); err == nil {
			return d
		}
	}
	return DefaultGrace
}

func (r *runner) stopSignal(c *ctr) syscall.Signal {
	for _, s := range []string{string(specSignal(c)), c.labels[LabelStopSignal]} {
		if s == "" {
			continue
		}
		if sig, err := api.ParseSignal(s); err == nil {
			return sig
		}
	}
	return syscall.SIGTERM
}

func specSignal(c *ctr) api.Signal {
	if c.spec == nil {
		return ""
	}
	return c.spec.StopSignal
}

// stopAll runs the stop sequence on every running container of the group
// within one grace period, in reverse start order: main containers first,
// then sidecars once the mains are gone. Each container gets its pre_stop
// hook, then its stop signal; whatever still runs at the deadline gets
// SIGKILL. It returns false if supervision ended before it was done (the
// containers are then left as they are).
func (r *runner) stopAll(ctx context.Context, reason string) bool {
	return r.stopAllWithin(ctx, reason, r.grace())
}

// stopAllWithin is stopAll with a given grace period.
func (r *runner) stopAllWithin(ctx context.Context, reason string, grace time.Duration) bool {
	deadline := time.Now().Add(grace)
	var mains, sidecars []*ctr
	for _, n := range r.order {
		c := r.ctrs[n]
		if !c.running {
			continue
		}
		c.done = true // whatever the policy, a stopped container stays stopped
		if c.role() == api.RoleSidecar {
			sidecars = append(sidecars, c)
		} else {
			mains = append(mains, c)
		}
	}
	if !r.stopContainers(ctx, mains, deadline, reason, true) {
		return false
	}
	return r.stopContainers(ctx, sidecars, deadline, reason, true)
}

// stopContainers stops cs by the deadline: pre_stop hooks and stop
// signals at once, then the wait, then SIGKILL at the deadline no matter
// what a hook is still doing.
func (r *runner) stopContainers(ctx context.Context, cs []*ctr, deadline time.Time, reason string, markDone bool) bool {
	var pending []*ctr
	grace := time.Until(deadline).Round(time.Millisecond)
	for _, c := range cs {
		if !c.running {
			continue
		}
		if markDone {
			c.done = true
		}
		sig := r.stopSignal(c)
		r.event(api.EventNormal, c.name, "Killing", fmt.Sprintf("stopping container %s with %s, grace period %s (%s)", c.name, unixSignalName(sig), grace, reason))
		pending = append(pending, c)
		var hook *api.Hook
		if c.spec != nil {
			hook = c.spec.PreStop
		}
		id, env, name := c.id, r.actionEnv(c), c.name
		go func() {
			if hook != nil {
				hd := deadline
				if hook.Timeout > 0 && time.Now().Add(hook.Timeout.D()).Before(hd) {
					hd = time.Now().Add(hook.Timeout.D())
				}
				hctx, cancel := context.WithDeadline(ctx, hd)
				st, err := runHook(hctx, "pre_stop", env, hook)
				cancel()
				select {
				case r.health <- healthMsg{container: name, gen: -1, hook: &st, hookErr: err}:
				default:
				}
			}
			if time.Now().Before(deadline) {
				if err := r.s.cfg.Runtime.Kill(ctx, id, sig, false); err != nil && !errors.Is(err, api.ErrNotFound) {
					r.log.Warn("stop signal", "container", name, "err", err)
				}
			}
		}()
	}
	if r.waitExits(ctx, pending, deadline) {
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	for _, c := range pending {
		if !c.running {
			continue
		}
		if err := r.s.cfg.Runtime.Kill(ctx, c.id, syscall.SIGKILL, true); err != nil && !errors.Is(err, api.ErrNotFound) {
			r.log.Warn("SIGKILL", "container", c.name, "err", err)
		}
		r.event(api.EventWarning, c.name, "KilledAtGrace", fmt.Sprintf("container %s did not exit within %s; sent SIGKILL", c.name, grace))
	}
	if !r.waitExits(ctx, pending, time.Now().Add(r.s.cfg.KillWait)) && ctx.Err() != nil {
		return false
	}
	return ctx.Err() == nil
}

// waitExits consumes exits until every container in cs has stopped or the
// deadline passes. Exits of other containers are recorded as well.
func (r *runner) waitExits(ctx context.Context, cs []*ctr, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		left := 0
		for _, c := range cs {
			if c.running {
				left++
			}
		}
		if left == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case ex := <-r.exits:
			r.recordExit(ctx, ex)
			r.publish()
		case h := <-r.health:
			r.recordHook(h)
		case <-timer.C:
			return false
		}
	}
}

// deleteContainers deletes every container of the group with its snapshot.
func (r *runner) deleteContainers(ctx context.Context) bool {
	ok := true
	for name, c := range r.ctrs {
		if err := r.s.cfg.Runtime.DeleteContainer(ctx, c.id); err != nil && !errors.Is(err, api.ErrNotFound) {
			r.event(api.EventWarning, name, "DeleteFailed", fmt.Sprintf("delete container %s: %v", name, err))
			ok = false
			continue
		}
		delete(r.ctrs, name)
	}
	if ok {
		r.order = nil
	}
	return ok
}

// rollback undoes a failed first start: whatever started is killed at
// once, and containers and sandbox are deleted.
func (r *runner) rollback(ctx context.Context) {
	var pending []*ctr
	for _, c := range r.ctrs {
		if c.running {
			_ = r.s.cfg.Runtime.Kill(ctx, c.id, syscall.SIGKILL, true)
			pending = append(pending, c)
		}
	}
	r.waitExits(ctx, pending, time.Now().Add(r.s.cfg.KillWait))
	for _, c := range r.ctrs {
		if c.created {
			if err := r.s.cfg.Runtime.DeleteContainer(ctx, c.id); err == nil || errors.Is(err, api.ErrNotFound) {
				c.created = false
			}
		}
		c.running, c.pid = false, 0
	}
	if err := r.s.destroySandbox(ctx, r.name); err != nil {
		r.log.Warn("rollback sandbox", "err", err)
	}
	r.sandbox = nil
}

// removeAll stops the group and deletes everything it had. It returns
// true once nothing is left.
func (r *runner) removeAll(ctx context.Context) bool {
	if r.state() != api.GroupDeleting {
		r.transition(api.GroupDeleting, "DeleteRequested", "deleting")
	}
	if !r.stopAll(ctx, "DeleteRequested") {
		return false
	}
	if !r.deleteContainers(ctx) {
		r.retryAt = time.Now().Add(time.Second)
		return false
	}
	if err := r.s.destroySandbox(ctx, r.name); err != nil {
		r.event(api.EventWarning, "", "DeleteFailed", err.Error())
		r.retryAt = time.Now().Add(time.Second)
		return false
	}
	if st := r.s.cfg.State; st != nil {
		if err := st.DeleteGroup(r.name); err != nil {
			r.log.Warn("delete runtime state", "err", err)
		}
	}
	if err := r.s.removeLogs(r.name); err != nil {
		r.log.Warn("remove logs", "err", err)
	}
	r.event(api.EventNormal, "", "Deleted", "group deleted")
	return true
}

func unixSignalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	}
	return fmt.Sprintf("signal %d", int(sig))
}
