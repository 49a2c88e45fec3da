package api

// SchemaVersion is the only group file schema this build understands.
const SchemaVersion = 1

// GroupSpec is one group: a pod-like set of containers that share one
// network namespace (localhost) and the group's volumes. It is the decoded
// form of one TOML file (see Decode) and the "effective config" the API
// returns.
type GroupSpec struct {
	// Schema is the file schema version; 0 (absent) means SchemaVersion.
	Schema int `toml:"schema" json:"schema,omitempty"`
	// Name is a DNS label, unique on the node (local groups) or the cluster.
	Name string `toml:"name" json:"name"`
	// Priority decides admission and eviction; higher wins.
	Priority Priority `toml:"priority" json:"priority"`
	// GracePeriod bounds the whole stop sequence of the group: pre_stop
	// hooks, stop signal, wait. SIGKILL follows when it ends.
	GracePeriod Duration `toml:"grace_period" json:"grace_period"`
	// Restart is the restart policy for containers that exit.
	Restart RestartPolicy `toml:"restart" json:"restart"`
	// Labels are free-form key/value pairs, copied onto containerd objects
	// under the "berth.label." prefix.
	Labels map[string]string `toml:"labels" json:"labels,omitempty"`
	// SharePID puts every container of the group into one PID namespace
	// (the first container started owns it).
	SharePID bool `toml:"share_pid" json:"share_pid,omitempty"`
	// ShareIPC puts every container of the group into one IPC namespace.
	ShareIPC bool `toml:"share_ipc" json:"share_ipc,omitempty"`

	Volumes    []VolumeSpec    `toml:"volume" json:"volumes,omitempty"`
	Containers []ContainerSpec `toml:"container" json:"containers"`
}

// Restart policies.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// Volume types.
type VolumeType string

const (
	// VolumeEmpty is a directory under the agent's state dir, created with
	// the group and deleted with it.
	VolumeEmpty VolumeType = "empty"
	// VolumeHost binds a host path; only under prefixes the agent allows.
	VolumeHost VolumeType = "host"
	// VolumeTmpfs is one size-capped tmpfs shared by the group's containers.
	VolumeTmpfs VolumeType = "tmpfs"
)

// VolumeSpec is a volume shared by the containers of a group.
type VolumeSpec struct {
	Name string     `toml:"name" json:"name"`
	Type VolumeType `toml:"type" json:"type"`
	// Path is the host path of a host volume.
	Path string `toml:"path" json:"path,omitempty"`
	// Size caps a tmpfs volume (required for tmpfs).
	Size ByteSize `toml:"size" json:"size,omitempty"`
}

// ContainerSpec is one container of a group.
type ContainerSpec struct {
	Name  string `toml:"name" json:"name"`
	Image string `toml:"image" json:"image"`
	// Command replaces the image's entrypoint; Args replaces its cmd.
	Command    []string          `toml:"command" json:"command,omitempty"`
	Args       []string          `toml:"args" json:"args,omitempty"`
	Env        map[string]string `toml:"env" json:"env,omitempty"`
	WorkingDir string            `toml:"working_dir" json:"working_dir,omitempty"`
	// User is "uid", "uid:gid" (numeric).
	User string `toml:"user" json:"user,omitempty"`
	// StopSignal overrides the image's StopSignal; default SIGTERM.
	StopSignal Signal       `toml:"stop_signal" json:"stop_signal,omitempty"`
	Mounts     []MountSpec  `toml:"mount" json:"mounts,omitempty"`
	Resources  ResourceSpec `toml:"resources" json:"resources"`
}

// MountSpec mounts one of the group's volumes into a container.
type MountSpec struct {
	Volume   string `toml:"volume" json:"volume"`
	Path     string `toml:"path" json:"path"`
	ReadOnly bool   `toml:"read_only" json:"read_only,omitempty"`
}

// ResourceSpec holds a container's limits, applied to its cgroup.
// Zero means unlimited.
type ResourceSpec struct {
	CPU    MilliCPU `toml:"cpu" json:"cpu,omitempty"`
	Memory ByteSize `toml:"memory" json:"memory,omitempty"`
	Pids   int64    `toml:"pids" json:"pids,omitempty"`
}

// Container returns the container spec with the given name.
func (g *GroupSpec) Container(name string) (*ContainerSpec, bool) {
	for i := range g.Containers {
		if g.Containers[i].Name == name {
			return &g.Containers[i], true
		}
	}
	return nil, false
}

// Volume returns the volume spec with the given name.
func (g *GroupSpec) Volume(name string) (*VolumeSpec, bool) {
	for i := range g.Volumes {
		if g.Volumes[i].Name == name {
			return &g.Volumes[i], true
		}
	}
	return nil, false
}
