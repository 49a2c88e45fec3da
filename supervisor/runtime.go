package supervisor

import (
	"context"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-project/berth/api"
)

// Labels put on every containerd object the supervisor creates. They are
// what reattach reads back after an agent restart.
const (
	LabelGroup      = "berth.group"
	LabelContainer  = "berth.container"
	LabelGeneration = "berth.generation"
	LabelSpecHash   = "berth.spec-hash"
	LabelUserPrefix = "berth.label."
)

// ShimGroupAnnotation makes the runc v2 shim serve every container of a
// group from one shim process.
const ShimGroupAnnotation = "io.containerd.runc.v2.group"

// Runtime is what the supervisor needs from containerd. The containerd
// adapter (NewContainerdRuntime) is the only implementation that imports
// the containerd client; unit tests use a fake.
//
// Methods are safe for concurrent use. The exit channels returned by
// StartTask and AttachTask deliver exactly one ExitStatus and live as long
// as the ctx given to them: cancelling it ends supervision, never the task.
type Runtime interface {
	// EnsureImage makes ref available and unpacked, pulling it when it is
	// missing, and returns what the supervisor needs of its config.
	EnsureImage(ctx context.Context, ref string) (*ImageConfig, error)
	// CreateContainer creates the container and its snapshot, no task.
	CreateContainer(ctx context.Context, c *ContainerConfig) error
	// StartTask creates and starts the container's task.
	StartTask(ctx context.Context, id string) (TaskInfo, <-chan ExitStatus, error)
	// AttachTask finds the container's existing task (api.ErrNotFound if
	// there is none). A task that already exited reports its exit at once.
	AttachTask(ctx context.Context, id string) (TaskInfo, <-chan ExitStatus, error)
	// Kill signals the task's init process (all: every process).
	Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error
	// DeleteTask deletes a stopped task; api.ErrNotFound if there is none.
	DeleteTask(ctx context.Context, id string) error
	// DeleteContainer deletes the container and its snapshot (and any task).
	DeleteContainer(ctx context.Context, id string) error
	// ListContainers lists containers whose labels match all of labels.
	ListContainers(ctx context.Context, labels map[string]string) ([]ContainerInfo, error)
}

// ImageConfig is what the supervisor reads from an image.
type ImageConfig struct {
	Ref        string
	StopSignal string
}

// ContainerConfig is everything needed to create one container.
type ContainerConfig struct {
	ID     string
	Group  string
	Spec   *api.ContainerSpec
	Labels map[string]string
	// Hostname is the group's name.
	Hostname string
	// Namespaces are joined by path (network, ipc, pid).
	Namespaces []specs.LinuxNamespace
	// Mounts are bind mounts prepared by the sandbox (volumes, /etc/hosts…).
	Mounts []specs.Mount
	// Env is added after the spec's env (BERTH_GROUP, BERTH_NODE, …).
	Env []string
	// ShimGroup shares one shim per group (the sandbox ID).
	ShimGroup string
}

// TaskInfo describes a live task.
type TaskInfo struct {
	PID       uint32
	StartedAt time.Time
}

// ExitStatus is how a task ended. Err is set when the exit is unknown
// (supervision ended, containerd went away): then Code means nothing.
type ExitStatus struct {
	Code     uint32
	ExitedAt time.Time
	Err      error
}

// ContainerInfo is a container found in containerd.
type ContainerInfo struct {
	ID     string
	Labels map[string]string
}
