package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/berth-project/berth/api"
)

// healthMsg carries a probe result or a hook outcome to the run loop.
type healthMsg struct {
	container string
	gen       int // the task it belongs to
	probe     *probeResult
	hook      *api.HookStatus
	hookErr   error
	oom       bool // the kernel OOM-killed a process of the container
}

// noteOOM records an OOM kill reported for a container. Safe from any
// goroutine; never blocks.
func (r *runner) noteOOM(container string) {
	select {
	case r.health <- healthMsg{container: container, oom: true}:
	default:
	}
}

// backoffOf returns the group's restart backoff, defaults filled in.
func backoffOf(spec *api.GroupSpec, def Backoff) Backoff {
	b := def
	rb := spec.RestartBackoff
	if rb.Initial > 0 {
		b.Initial = rb.Initial.D()
	}
	if rb.Max > 0 {
		b.Max = rb.Max.D()
	}
	if rb.Factor >= 1 {
		b.Factor = rb.Factor
	}
	if rb.ResetAfter > 0 {
		b.ResetAfter = rb.ResetAfter.D()
	}
	return b
}

// execer is implemented by runtimes that can run a command in a running
// container (exec probes and hooks).
type execer interface {
	Exec(ctx context.Context, id string, args []string) (int, string, error)
}

func (r *runner) actionEnv(c *ctr) actionEnv {
	env := actionEnv{ContainerID: c.id}
	if r.sandbox != nil {
		env.NetNS = r.sandbox.NetNSPath
	}
	if ex, ok := r.s.cfg.Runtime.(execer); ok {
		env.Exec = ex.Exec
	} else {
		env.Exec = func(context.Context, string, []string) (int, string, error) {
			return -1, "", fmt.Errorf("exec is not supported by this runtime")
		}
	}
	return env
}

// superviseTask starts the health checks of a running task: the
// post_start hook (fresh starts only), then the startup probe, then
// liveness and readiness. Everything ends with the task (endTask).
func (r *runner) superviseTask(ctx context.Context, c *ctr, fresh bool) {
	if c.spec == nil {
		return
	}
	r.endTask(c)
	c.running = true
	pctx, cancel := context.WithCancel(ctx)
	c.stopProbe = cancel
	c.probes = map[probeKind]*api.ProbeStatus{}
	c.ready = c.spec.Readiness == nil
	c.startupOK = c.spec.Startup == nil
	if !fresh {
		// Reattached: resume with the verdicts the probes had reached.
		// Only verdicts of probes the spec has: a container without one
		// keeps the defaults above.
		if v, ok := r.restored.Ready[c.name]; ok && c.spec.Readiness != nil {
			c.ready = v
		}
		if v, ok := r.restored.StartupOK[c.name]; ok && c.spec.Startup != nil {
			c.startupOK = v
		}
	}
	c.postStart = c.spec.PostStart == nil || !fresh
	if !c.postStart {
		c.ready = false
		gen, env, hook := c.taskGen, r.actionEnv(c), c.spec.PostStart
		go func() {
			hctx, hcancel := context.WithTimeout(pctx, hookTimeout(hook))
			defer hcancel()
			st, err := runHook(hctx, "post_start", env, hook)
			select {
			case r.health <- healthMsg{container: c.name, gen: gen, hook: &st, hookErr: err}:
			case <-pctx.Done():
			}
		}()
		return
	}
	r.startProbes(pctx, c)
}

// startProbes runs the probes the container's state calls for: the
// startup probe until it passes, then liveness and readiness.
func (r *runner) startProbes(pctx context.Context, c *ctr) {
	gen, env := c.taskGen, r.actionEnv(c)
	run := func(kind probeKind, spec *api.Probe) {
		var p *prober
		p = newProber(kind, spec, env, func(res probeResult) {
			select {
			case r.health <- healthMsg{container: c.name, gen: gen, probe: &res}:
			case <-pctx.Done():
			}
		})
		init := p.Initial().Status
		c.probes[kind] = &init
		go func() { _ = p.Run(pctx) }()
	}
	if !c.startupOK && c.spec.Startup != nil {
		run(probeStartup, c.spec.Startup)
		return
	}
	if c.spec.Liveness != nil {
		run(probeLiveness, c.spec.Liveness)
	}
	if c.spec.Readiness != nil {
		run(probeReadiness, c.spec.Readiness)
	}
}

// endTask stops the health checks of a container's task.
func (r *runner) endTask(c *ctr) {
	if c.stopProbe != nil {
		c.stopProbe()
		c.stopProbe = nil
	}
	c.ready = false
}

// onHealth applies a probe result or hook outcome.
func (r *runner) onHealth(ctx context.Context, h healthMsg) {
	if h.oom {
		r.onOOM(h.container)
		return
	}
	if h.gen < 0 {
		r.recordHook(h) // a pre_stop hook that finished after its stop
		return
	}
	c := r.ctrs[h.container]
	if c == nil || h.gen != c.taskGen || !c.running || c.stopProbe == nil {
		return // stale: the task it was about is gone
	}
	if h.hook != nil {
		if c.hooks == nil {
			c.hooks = map[string]api.HookStatus{}
		}
		c.hooks[h.hook.Kind] = *h.hook
		if h.hookErr != nil {
			r.event(api.EventWarning, c.name, "PostStartHookFailed", fmt.Sprintf("post_start hook of %s failed: %v", c.name, h.hookErr))
			r.restartContainer(ctx, c, "PostStartHookFailed")
			return
		}
		c.postStart = true
		c.ready = c.spec.Readiness == nil && c.startupOK
		c.stopProbe()
		pctx, cancel := context.WithCancel(ctx)
		c.stopProbe = cancel
		r.startProbes(pctx, c)
		return
	}
	res := h.probe
	st := res.Status
	c.probes[res.Kind] = &st
	switch res.Kind {
	case probeStartup:
		if res.Healthy && !c.startupOK {
			c.startupOK = true
			c.ready = c.spec.Readiness == nil
			r.saveState()
			r.event(api.EventNormal, c.name, "StartupProbeSucceeded", fmt.Sprintf("startup probe of %s passed", c.name))
			// The startup prober ends; liveness and readiness begin.
			c.stopProbe()
			pctx, cancel := context.WithCancel(ctx)
			c.stopProbe = cancel
			r.startProbes(pctx, c)
		} else if !res.Healthy && st.Failures >= failureThreshold(c.spec.Startup) {
			r.event(api.EventWarning, c.name, "StartupProbeFailed", fmt.Sprintf("startup probe of %s failed %d times: %s", c.name, st.Failures, st.Message))
			r.restartContainer(ctx, c, "StartupProbeFailed")
		}
	case probeLiveness:
		if res.Changed && !res.Healthy {
			r.event(api.EventWarning, c.name, "LivenessProbeFailed", fmt.Sprintf("liveness probe of %s failed %d times: %s", c.name, st.Failures, st.Message))
			r.restartContainer(ctx, c, "LivenessProbeFailed")
		}
	case probeReadiness:
		if res.Changed {
			c.ready = res.Healthy
			r.saveState()
			if res.Healthy {
				r.event(api.EventNormal, c.name, "ContainerReady", fmt.Sprintf("container %s is ready", c.name))
			} else {
				r.event(api.EventWarning, c.name, "ContainerNotReady", fmt.Sprintf("container %s is not ready: %s", c.name, st.Message))
			}
		}
	}
}

func failureThreshold(p *api.Probe) int {
	if p == nil || p.FailureThreshold < 1 {
		return api.DefaultFailureThreshold
	}
	return p.FailureThreshold
}

// restartContainer stops one container with its full stop sequence (its
// own grace period) and hands the exit to the restart policy, as if it had
// exited by itself.
func (r *runner) restartContainer(ctx context.Context, c *ctr, reason string) {
	c.reason = reason
	r.stopContainers(ctx, []*ctr{c}, time.Now().Add(r.grace()), reason, false)
	if ctx.Err() != nil || c.running || c.exitCode == nil {
		return
	}
	d := r.tracker.onExit(1, c.startedAt, time.Now(), true)
	c.reason = reason
	if !d.Restart {
		c.done = true
		r.transition(api.GroupFailed, reason, fmt.Sprintf("container %s stopped (%s), not restarted (%s)", c.name, reason, d.Reason))
		return
	}
	c.restarts++
	at := time.Now().Add(d.Delay)
	if r.retryAt.IsZero() || at.After(r.retryAt) {
		r.retryAt = at
	}
	r.transition(api.GroupBackOff, reason, fmt.Sprintf("container %s restarting in %s", c.name, d.Delay.Round(time.Millisecond)))
}

// runHook runs a hook and reports it as a HookStatus.
func runHook(ctx context.Context, kind string, env actionEnv, h *api.Hook) (api.HookStatus, error) {
	start := time.Now()
	msg, err := runHookAction(ctx, env, h)
	st := api.HookStatus{Kind: kind, Action: describeHook(h), Result: "success", Message: msg, At: start, Duration: time.Since(start)}
	if err != nil {
		st.Result, st.Message = "failure", err.Error()
	}
	return st, err
}

// recordHook keeps the result of a hook that ran during a stop.
func (r *runner) recordHook(h healthMsg) {
	c := r.ctrs[h.container]
	if c == nil || h.hook == nil {
		return
	}
	if c.hooks == nil {
		c.hooks = map[string]api.HookStatus{}
	}
	c.hooks[h.hook.Kind] = *h.hook
	if h.hookErr != nil {
		r.event(api.EventWarning, c.name, "PreStopHookFailed", fmt.Sprintf("pre_stop hook of %s: %v", c.name, h.hookErr))
	}
}

// onOOM marks the container's current task as OOM-killed; the OOM event
// and the exit come on different streams, so either may come first.
func (r *runner) onOOM(name string) {
	c := r.ctrs[name]
	if c == nil {
		return
	}
	if c.running {
		c.oomSeen = true
		return
	}
	if c.exitCode != nil && time.Since(c.finishedAt) < 5*time.Second && !c.oom {
		c.oom, c.reason = true, "OOMKilled"
		r.event(api.EventWarning, c.name, "OOMKilled", fmt.Sprintf("container %s was killed for using more memory than its limit", c.name))
		r.publish()
	}
}
