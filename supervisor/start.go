package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sync/errgroup"

	"github.com/berth-project/berth/api"
)

// Start order. Each call of start does the next step and returns; exits,
// probe results and timers bring the runner back for the one after:
//
//  1. init containers, one at a time in file order, each to exit 0;
//  2. sidecars, all at once;
//  3. once every sidecar is ready (readiness probe, or running if none),
//     the main containers, all at once.
//
// Until the group first reaches Running, a failure rolls the attempt back
// whole (containers killed and deleted, sandbox destroyed) before BackOff.

// startStep is what start does next.
type startStep int

const (
	stepNone startStep = iota
	stepInit
	stepWaitInit
	stepSidecars
	stepWaitSidecars
	stepMains
)

// nextStep decides the next start step and the containers it concerns.
func (r *runner) nextStep() (startStep, []*ctr) {
	var inits, sidecars, mains []*ctr
	for _, n := range r.order {
		c := r.ctrs[n]
		switch c.role() {
		case api.RoleInit:
			inits = append(inits, c)
		case api.RoleSidecar:
			sidecars = append(sidecars, c)
		default:
			mains = append(mains, c)
		}
	}
	for _, c := range inits {
		if c.initDone {
			continue
		}
		if c.running {
			return stepWaitInit, []*ctr{c}
		}
		if c.unknown {
			return stepWaitInit, nil
		}
		return stepInit, []*ctr{c}
	}
	var todo, waiting []*ctr
	for _, c := range sidecars {
		if !c.running && !c.done && !c.unknown {
			todo = append(todo, c)
		} else if c.running && !c.ready {
			waiting = append(waiting, c)
		}
	}
	if len(todo) > 0 {
		return stepSidecars, todo
	}
	todo = todo[:0]
	for _, c := range mains {
		if !c.running && !c.done && !c.unknown {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return stepNone, nil
	}
	// A sidecar restarting on its own does not hold back running mains, but
	// mains that (re)start wait for every sidecar to be ready.
	if len(waiting) > 0 {
		return stepWaitSidecars, waiting
	}
	return stepMains, todo
}

// start moves the group's start sequence on, step after step, until a
// step has to wait: for an init container to exit, or a sidecar to be
// ready. Exits and probe results bring the runner back.
func (r *runner) start(ctx context.Context) {
	for i := 0; i < 4 && r.startStep(ctx); i++ {
	}
}

// startStep does the next start step and reports whether the one after
// can follow at once.
func (r *runner) startStep(ctx context.Context) bool {
	step, cs := r.nextStep()
	switch step {
	case stepNone:
		return false
	case stepWaitInit:
		return false
	case stepWaitSidecars:
		names := make([]string, len(cs))
		for i, c := range cs {
			names[i] = c.name
		}
		r.transition(api.GroupStarting, "WaitingForSidecars", "waiting for "+strings.Join(names, ", ")+" to be ready")
		return false
	}
	if r.countRunning() == 0 && !r.everRunning {
		r.attemptFresh = true
	}
	reason := "Starting"
	if r.everRunning {
		reason = "Restarting"
	}
	switch step {
	case stepInit:
		r.transition(api.GroupStarting, "InitContainer", "running init container "+cs[0].name)
	case stepSidecars:
		r.transition(api.GroupStarting, reason, "starting sidecars")
	default:
		r.transition(api.GroupStarting, reason, "")
	}
	err := r.startContainers(ctx, cs)
	if ctx.Err() != nil {
		return false
	}
	if err != nil {
		r.startFailed(ctx, err)
		return false
	}
	next, _ := r.nextStep()
	if next == stepNone {
		r.everRunning, r.attemptFresh = true, false
		r.mu.Lock()
		if r.status.StartedAt.IsZero() || reason == "Starting" {
			r.status.StartedAt = time.Now()
		}
		r.mu.Unlock()
		r.transition(api.GroupRunning, "Started", fmt.Sprintf("%d/%d containers running", r.countRunning(), r.countLongRunning()))
		return false
	}
	return next == stepSidecars || next == stepMains
}

// startFailed rolls back a fresh attempt and schedules the next one.
func (r *runner) startFailed(ctx context.Context, err error) {
	if r.attemptFresh {
		r.rollback(ctx)
		r.attemptFresh = false
	}
	d := r.tracker.onStartFailure(!errors.Is(err, api.ErrInvalid))
	if d.Restart {
		r.retryAt = time.Now().Add(d.Delay)
		r.transition(api.GroupBackOff, failureReason(err), fmt.Sprintf("%v; retrying in %s", err, d.Delay.Round(time.Millisecond)))
	} else {
		r.transition(api.GroupFailed, failureReason(err), err.Error())
	}
}

// countLongRunning counts the containers that are meant to keep running.
func (r *runner) countLongRunning() int {
	n := 0
	for _, c := range r.ctrs {
		if c.role() != api.RoleInit {
			n++
		}
	}
	return n
}

func failureReason(err error) string {
	var ie *imageError
	switch {
	case errors.As(err, &ie):
		return "ImageUnavailable"
	case errors.Is(err, api.ErrInvalid):
		return "InvalidSpec"
	}
	return "StartFailed"
}

type imageError struct{ err error }

func (e *imageError) Error() string { return e.err.Error() }
func (e *imageError) Unwrap() error { return e.err }

// startContainers creates what is missing of todo and starts them all.
func (r *runner) startContainers(ctx context.Context, todo []*ctr) error {
	g := r.applied
	sb, err := r.s.cfg.Sandboxes.Ensure(ctx, g.Spec)
	if err != nil {
		return err
	}
	r.sandbox = sb
	r.s.sandboxReady(g.Spec, sb)
	images := map[string]*ImageConfig{}
	for _, c := range todo {
		if c.created || images[c.spec.Image] != nil {
			continue
		}
		ic, err := r.s.cfg.Runtime.EnsureImage(ctx, c.spec.Image)
		if err != nil {
			return &imageError{fmt.Errorf("container %q: %w", c.name, err)}
		}
		images[c.spec.Image] = ic
	}
	// A shared PID namespace belongs to the first container: it must run
	// before the others are created, as they join /proc/PID/ns/pid.
	if g.Spec.SharePID && len(todo) > 0 && todo[0] == r.ctrs[r.order[0]] {
		if err := r.create(ctx, todo[0], images[todo[0].spec.Image]); err != nil {
			return err
		}
		info, exitC, err := r.s.cfg.Runtime.StartTask(ctx, todo[0].id)
		if err != nil {
			return err
		}
		r.started(ctx, todo[0], info, exitC)
		todo = todo[1:]
	}
	for _, c := range todo {
		if err := r.create(ctx, c, images[c.spec.Image]); err != nil {
			return err
		}
	}
	// Start the rest at once. The tasks' exit channels live as long as
	// supervision (ctx), not as long as this errgroup.
	var eg errgroup.Group
	var mu sync.Mutex
	for _, c := range todo {
		eg.Go(func() error {
			info, exitC, err := r.s.cfg.Runtime.StartTask(ctx, c.id)
			if err != nil {
				return err
			}
			mu.Lock()
			r.started(ctx, c, info, exitC)
			mu.Unlock()
			return nil
		})
	}
	return eg.Wait()
}

// create makes the containerd container of c unless it exists.
func (r *runner) create(ctx context.Context, c *ctr, ic *ImageConfig) error {
	if c.created {
		return nil
	}
	cfg, err := r.containerConfig(c, ic)
	if err != nil {
		return err
	}
	if err := r.s.cfg.Runtime.CreateContainer(ctx, cfg); err != nil {
		if !errors.Is(err, api.ErrAlreadyExists) {
			return err
		}
		// Left over from an attempt that died: replace it.
		if err := r.s.cfg.Runtime.DeleteContainer(ctx, c.id); err != nil {
			return err
		}
		if err := r.s.cfg.Runtime.CreateContainer(ctx, cfg); err != nil {
			return err
		}
	}
	c.created, c.labels = true, cfg.Labels
	return nil
}

// started records a started task and sets its supervision going: exit
// watch, post_start hook, probes.
func (r *runner) started(ctx context.Context, c *ctr, info TaskInfo, exitC <-chan ExitStatus) {
	c.running, c.pid, c.startedAt, c.reason = true, info.PID, info.StartedAt, ""
	c.exitCode, c.finishedAt, c.oom = nil, time.Time{}, false
	c.taskGen++
	r.watch(ctx, c.name, c.taskGen, exitC)
	r.event(api.EventNormal, c.name, "Started", fmt.Sprintf("started container %s (pid %d)", c.name, c.pid))
	r.superviseTask(ctx, c, true)
}

func (r *runner) containerConfig(c *ctr, ic *ImageConfig) (*ContainerConfig, error) {
	g := r.applied
	sig := string(c.spec.StopSignal)
	if sig == "" && ic != nil && ic.StopSignal != "" {
		sig = ic.StopSignal
	}
	if sig == "" {
		sig = "SIGTERM"
	}
	labels := map[string]string{
		LabelGroup:      r.name,
		LabelContainer:  c.name,
		LabelGeneration: strconv.FormatInt(g.Generation, 10),
		LabelSpecHash:   g.SpecHash,
		LabelStopSignal: sig,
		LabelGrace:      g.Spec.GracePeriod.D().String(),
	}
	for k, v := range g.Spec.Labels {
		labels[LabelUserPrefix+k] = v
	}
	mounts, err := r.sandbox.Mounts(c.spec)
	if err != nil {
		return nil, err
	}
	ns := r.sandbox.Namespaces()
	if g.Spec.SharePID {
		if first := r.ctrs[r.order[0]]; first != c && first.running {
			ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", first.pid)})
		}
	}
	env := append([]string{"BERTH_GROUP=" + r.name}, g.Env...)
	return &ContainerConfig{ID: c.id, Group: r.name, Spec: c.spec, Labels: labels, Hostname: r.name,
		Namespaces: ns, Mounts: mounts, Env: env, ShimGroup: r.name}, nil
}
