package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/containerd"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

// managedConfig is where a managed (private) containerd lives: data under
// the state dir, socket and state under the run dir.
func (a *Agent) managedConfig() containerdproc.Config {
	return containerdproc.Config{
		Binary:       a.cfg.Containerd.Binary,
		Root:         filepath.Join(a.cfg.StateDir, "containerd"),
		State:        filepath.Join(a.cfg.RunDir, "containerd"),
		Address:      filepath.Join(a.cfg.RunDir, "containerd", "containerd.sock"),
		LogPath:      filepath.Join(a.cfg.StateDir, "containerd.log"),
		StartTimeout: 20 * time.Second,
	}
}

// ManagedPIDFile is where the PID of a managed containerd is written.
func ManagedPIDFile(runDir string) string {
	return filepath.Join(runDir, "containerd", "containerd.pid")
}

// connectContainerd connects to the configured containerd or, as the
// managed mode says, to a private one it starts (or finds still running
// from an earlier agent run: it outlives agentd like the shims do).
func (a *Agent) connectContainerd(ctx context.Context) (*containerd.Client, error) {
	addr := a.cfg.Containerd.Address
	mode := a.cfg.Containerd.Managed
	if mode != ManagedAlways {
		if containerdproc.Answers(ctx, addr) {
			return a.dial(addr)
		}
		if mode == ManagedNever {
			return nil, fmt.Errorf("containerd does not answer at %s (containerd.managed = \"never\"): start containerd, or set containerd.managed = \"auto\": %w", addr, api.ErrUnavailable)
		}
	}
	mc := a.managedConfig()
	if containerdproc.Answers(ctx, mc.Address) {
		a.log.Info("using the managed containerd left by an earlier run", "address", mc.Address)
		a.cfg.Containerd.Address = mc.Address
		return a.dial(mc.Address)
	}
	a.log.Info("starting a managed containerd", "address", mc.Address, "root", mc.Root, "log", mc.LogPath)
	p, err := containerdproc.Start(ctx, mc)
	if err != nil {
		return nil, fmt.Errorf("start managed containerd: %w", err)
	}
	a.managed = p
	a.cfg.Containerd.Address = mc.Address
	if err := os.WriteFile(ManagedPIDFile(a.cfg.RunDir), []byte(strconv.Itoa(p.PID())+"\n"), 0o644); err != nil {
		a.log.Warn("write managed containerd pid file", "err", err)
	}
	return a.dial(mc.Address)
}

func (a *Agent) dial(addr string) (*containerd.Client, error) {
	c, err := containerd.New(addr, containerd.WithDefaultNamespace(a.cfg.Containerd.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w: %w", addr, err, api.ErrUnavailable)
	}
	return c, nil
}

// watchContainerd checks containerd every second. When it stops answering
// the agent keeps serving its API (version reports containerd_ok false)
// and emits ContainerdUnavailable; runners whose task watches broke
// reattach on their own once it is back. A managed containerd that died
// is started again, with backoff.
func (a *Agent) watchContainerd(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	ok := true
	backoff := time.Second
	var nextStart time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if a.managed != nil {
			select {
			case <-a.managed.Done():
				if time.Now().After(nextStart) {
					a.restartManaged(ctx)
					nextStart = time.Now().Add(backoff)
					backoff = min(2*backoff, time.Minute)
				}
			default:
				backoff = time.Second
			}
		}
		vctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := a.client.Version(vctx)
		cancel()
		now := err == nil
		a.containerdUp.Store(now)
		if now == ok {
			continue
		}
		ok = now
		if ok {
			a.log.Info("containerd answers again")
			a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Reason: "ContainerdAvailable", Message: "containerd answers again"})
		} else {
			a.log.Warn("containerd does not answer", "err", err)
			a.events.Publish(api.Event{Time: time.Now(), Type: api.EventWarning, Reason: "ContainerdUnavailable", Message: fmt.Sprintf("containerd does not answer: %v", err)})
		}
	}
}

// restartManaged starts the managed containerd again after it died.
func (a *Agent) restartManaged(ctx context.Context) {
	mc := a.managedConfig()
	a.log.Warn("managed containerd exited; starting it again", "err", a.managed.ExitErr())
	p, err := containerdproc.Start(ctx, mc)
	if err != nil {
		a.log.Error("restart managed containerd", "err", err)
		return
	}
	a.managed = p
	if err := os.WriteFile(ManagedPIDFile(a.cfg.RunDir), []byte(strconv.Itoa(p.PID())+"\n"), 0o644); err != nil {
		a.log.Warn("write managed containerd pid file", "err", err)
	}
	a.events.Publish(api.Event{Time: time.Now(), Type: api.EventWarning, Reason: "ContainerdRestarted", Message: fmt.Sprintf("managed containerd restarted (pid %d)", p.PID())})
}
