//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/pkg/cap"

	"github.com/berth-project/berth/api"
)

// ContainerdConfig configures the containerd adapter.
type ContainerdConfig struct {
	Namespace   string
	Snapshotter string
	Runtime     string
	// LogDriver is the absolute path of the binary:// log driver (agentd
	// itself) and LogDir where it writes; empty LogDriver discards output.
	LogDriver string
	LogDir    string
	LogOpts   LogOptions
	// FIFODir holds the FIFOs of exec probes and hooks; "" means the
	// system temp dir. The agent uses RUN_DIR/fifo and empties it at start,
	// so an agent killed mid-exec leaves nothing behind.
	FIFODir string
	// Images pulls and imports images.
	Images *Images
}

// containerdRuntime implements Runtime with the containerd v1.7 client.
type containerdRuntime struct {
	client *containerd.Client
	cfg    ContainerdConfig
}

var _ Runtime = (*containerdRuntime)(nil)

// NewContainerdRuntime returns the containerd adapter.
func NewContainerdRuntime(client *containerd.Client, cfg ContainerdConfig) Runtime {
	return &containerdRuntime{client: client, cfg: cfg}
}

func (r *containerdRuntime) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}

// convertErr maps containerd's error classes onto ours.
func convertErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errdefs.IsAlreadyExists(err):
		return fmt.Errorf("%w: %w", api.ErrAlreadyExists, err)
	case errdefs.IsUnavailable(err):
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return err
}

func (r *containerdRuntime) EnsureImage(ctx context.Context, ref string) (*ImageConfig, error) {
	img, err := r.cfg.Images.Ensure(r.ns(ctx), ref)
	if err != nil {
		return nil, err
	}
	return r.cfg.Images.Config(ctx, img)
}

func (r *containerdRuntime) CreateContainer(ctx context.Context, c *ContainerConfig) error {
	ctx = r.ns(ctx)
	img, err := r.client.GetImage(ctx, c.Spec.Image)
	if err != nil {
		return fmt.Errorf("image %s: %w", c.Spec.Image, convertErr(err))
	}
	s := c.Spec
	var opts []oci.SpecOpts
	if len(s.Command) > 0 {
		opts = append(opts, oci.WithImageConfig(img), oci.WithProcessArgs(append(append([]string{}, s.Command...), s.Args...)...))
	} else if len(s.Args) > 0 {
		opts = append(opts, oci.WithImageConfigArgs(img, s.Args))
	} else {
		opts = append(opts, oci.WithImageConfig(img))
	}
	env := make([]string, 0, len(s.Env)+len(c.Env))
	for k, v := range s.Env {
		env = append(env, k+"="+v)
	}
	env = append(env, c.Env...)
	opts = append(opts,
		oci.WithEnv(env),
		oci.WithHostname(c.Hostname),
		oci.WithMounts(c.Mounts),
		oci.WithNoNewPrivileges,
		seccomp.WithDefaultProfile(),
		oci.WithCapabilities(defaultCaps()),
		oci.WithAnnotations(map[string]string{ShimGroupAnnotation: c.ShimGroup}),
	)
	for _, n := range c.Namespaces {
		opts = append(opts, oci.WithLinuxNamespace(n))
	}
	if s.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(s.WorkingDir))
	}
	if s.User != "" {
		opts = append(opts, oci.WithUser(s.User))
	}
	if m := s.Resources.Memory; m > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(m)))
	}
	if cpu := s.Resources.CPU; cpu > 0 {
		const period = 100000
		opts = append(opts, oci.WithCPUCFS(int64(cpu)*period/1000, period))
	}
	if p := s.Resources.Pids; p > 0 {
		opts = append(opts, oci.WithPidsLimit(p))
	}
	_, err = r.client.NewContainer(ctx, c.ID,
		containerd.WithImage(img),
		containerd.WithSnapshotter(r.cfg.Snapshotter),
		containerd.WithNewSnapshot(c.ID, img),
		containerd.WithRuntime(r.cfg.Runtime, nil),
		containerd.WithContainerLabels(c.Labels),
		containerd.WithNewSpec(opts...),
	)
	if err != nil {
		return fmt.Errorf("create container %s: %w", c.ID, convertErr(err))
	}
	return nil
}

// defaultCaps is the capability set Docker and containerd give containers.
func defaultCaps() []string {
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
		"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
	known, err := cap.Current()
	if err != nil || len(known) == 0 {
		return caps
	}
	have := make(map[string]bool, len(known))
	for _, k := range known {
		have[k] = true
	}
	out := caps[:0:0]
	for _, c := range caps {
		if have[c] {
			out = append(out, c)
		}
	}
	return out
}

func (r *containerdRuntime) logIO() cio.Creator {
	if r.cfg.LogDriver == "" {
		return cio.NullIO
	}
	return cio.BinaryIO(r.cfg.LogDriver, map[string]string{
		LogDriverArg: r.cfg.LogOpts.encode(r.cfg.LogDir),
	})
}

func (r *containerdRuntime) StartTask(ctx context.Context, id string) (TaskInfo, <-chan ExitStatus, error) {
	nctx := r.ns(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return TaskInfo{}, nil, fmt.Errorf("load container %s: %w", id, convertErr(err))
	}
	task, err := c.NewTask(nctx, r.logIO())
	if err != nil {
		return TaskInfo{}, nil, fmt.Errorf("create task %s: %w", id, convertErr(err))
	}
	exitC, err := task.Wait(nctx)
	if err != nil {
		_, _ = task.Delete(nctx, containerd.WithProcessKill)
		return TaskInfo{}, nil, fmt.Errorf("wait task %s: %w", id, convertErr(err))
	}
	if err := task.Start(nctx); err != nil {
		_, _ = task.Delete(nctx, containerd.WithProcessKill)
		return TaskInfo{}, nil, fmt.Errorf("start task %s: %w", id, convertErr(err))
	}
	return TaskInfo{PID: task.Pid(), StartedAt: time.Now()}, forwardExit(exitC), nil
}

func (r *containerdRuntime) AttachTask(ctx context.Context, id string) (TaskInfo, <-chan ExitStatus, error) {
	nctx := r.ns(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return TaskInfo{}, nil, fmt.Errorf("load container %s: %w", id, convertErr(err))
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return TaskInfo{}, nil, fmt.Errorf("task of %s: %w", id, convertErr(err))
	}
	exitC, err := task.Wait(nctx)
	if err != nil {
		return TaskInfo{}, nil, fmt.Errorf("wait task %s: %w", id, convertErr(err))
	}
	info := TaskInfo{PID: task.Pid()}
	if st, err := task.Status(nctx); err == nil && st.Status == containerd.Created {
		// Created but never started (agent died in between): start it now.
		if err := task.Start(nctx); err != nil {
			return TaskInfo{}, nil, fmt.Errorf("start task %s: %w", id, convertErr(err))
		}
	}
	if ts, err := processStartTime(info.PID); err == nil {
		info.StartedAt = ts
	}
	return info, forwardExit(exitC), nil
}

func forwardExit(in <-chan containerd.ExitStatus) <-chan ExitStatus {
	out := make(chan ExitStatus, 1)
	go func() {
		st, ok := <-in
		if !ok {
			out <- ExitStatus{Err: errors.New("exit channel closed")}
			return
		}
		code, at, err := st.Result()
		out <- ExitStatus{Code: code, ExitedAt: at, Err: err}
	}()
	return out
}

func (r *containerdRuntime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	nctx := r.ns(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return convertErr(err)
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return convertErr(err)
	}
	var opts []containerd.KillOpts
	if all {
		opts = append(opts, containerd.WithKillAll)
	}
	return convertErr(task.Kill(nctx, sig, opts...))
}

func (r *containerdRuntime) DeleteTask(ctx context.Context, id string) error {
	nctx := r.ns(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return convertErr(err)
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return convertErr(err)
	}
	_, err = task.Delete(nctx)
	return convertErr(err)
}

func (r *containerdRuntime) DeleteContainer(ctx context.Context, id string) error {
	nctx := r.ns(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return convertErr(err)
	}
	if task, err := c.Task(nctx, nil); err == nil {
		if _, err := task.Delete(nctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", id, convertErr(err))
		}
	}
	if err := c.Delete(nctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, convertErr(err))
	}
	return nil
}

func (r *containerdRuntime) ListContainers(ctx context.Context, labels map[string]string) ([]ContainerInfo, error) {
	var filters []string
	var parts []string
	for k, v := range labels {
		parts = append(parts, fmt.Sprintf("labels.%q==%q", k, v))
	}
	if len(parts) > 0 {
		filters = append(filters, strings.Join(parts, ","))
	}
	cs, err := r.client.Containers(r.ns(ctx), filters...)
	if err != nil {
		return nil, convertErr(err)
	}
	out := make([]ContainerInfo, 0, len(cs))
	for _, c := range cs {
		info, err := c.Info(r.ns(ctx), containerd.WithoutRefreshedMetadata)
		if err != nil {
			continue
		}
		out = append(out, ContainerInfo{ID: c.ID(), Labels: info.Labels})
	}
	return out, nil
}
