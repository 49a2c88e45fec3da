package api

import (
	"strconv"
	"time"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

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
	// After names local groups that must be Ready before this one starts.
	After []string `toml:"after" json:"after,omitempty"`
	// RestartBackoff tunes the delay between restarts.
	RestartBackoff BackoffSpec `toml:"restart_backoff" json:"restart_backoff"`
	// Preemptible false protects the group from eviction by higher
	// priorities (node pressure may still evict it). Default true.
	Preemptible *bool `toml:"preemptible" json:"preemptible,omitempty"`
	// OnEvict: "wait" (default) returns the group when room appears;
	// "stop" leaves it stopped.
	OnEvict EvictPolicy `toml:"on_evict" json:"on_evict,omitempty"`

	// Placement makes the group cluster-scoped (placement.go).
	Placement *PlacementSpec `toml:"placement" json:"placement,omitempty"`
	// Network is the group's network mode: "bridge" (default), "host" or
	// "none" (network.go).
	Network NetworkMode `toml:"network" json:"network,omitempty"`
	// Ports publishes group ports on the node: "8080:80",
	// "127.0.0.1:9000:9000/udp" (network.go).
	Ports []string `toml:"ports" json:"ports,omitempty"`
	// Ambassadors are localhost proxies the agent runs inside the group's
	// network namespace to the endpoints of a service (ambassador.go).
	Ambassadors []AmbassadorSpec `toml:"ambassador" json:"ambassadors,omitempty"`
	// Leases are the leases the group's containers may campaign for
	// (leader election with fencing tokens; lease.go).
	Leases []LeaseSpec `toml:"lease" json:"leases,omitempty"`
	// Queue defines a work queue the group works on (queue.go).
	Queue *QueueSpec `toml:"queue" json:"queue,omitempty"`

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
	// Role orders start and stop: init containers run one at a time to
	// exit 0, then sidecars start and must be ready, then main containers.
	Role Role `toml:"role" json:"role,omitempty"`
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

	// Startup gates Liveness and Readiness until it first passes.
	Startup *Probe `toml:"startup" json:"startup,omitempty"`
	// Liveness failing restarts the container.
	Liveness *Probe `toml:"liveness" json:"liveness,omitempty"`
	// Readiness drives the container's and the group's Ready condition.
	Readiness *Probe `toml:"readiness" json:"readiness,omitempty"`
	// PostStart runs right after the container starts; failing restarts it.
	PostStart *Hook `toml:"post_start" json:"post_start,omitempty"`
	// PreStop runs before the stop signal, within the grace period.
	PreStop *Hook `toml:"pre_stop" json:"pre_stop,omitempty"`
}

// Role of a container in its group.
type Role string

const (
	RoleMain    Role = "main"
	RoleSidecar Role = "sidecar"
	RoleInit    Role = "init"
)

// Probe checks a container: exactly one of HTTP, TCP, Exec. HTTP and TCP
// probes are made by the agent from inside the group's network namespace.
type Probe struct {
	HTTP *HTTPAction `toml:"http" json:"http,omitempty"`
	TCP  *TCPAction  `toml:"tcp" json:"tcp,omitempty"`
	Exec *ExecAction `toml:"exec" json:"exec,omitempty"`
	// Defaults as kubelet's: no initial delay, period 10s, timeout 1s,
	// success threshold 1, failure threshold 3.
	InitialDelay     Duration `toml:"initial_delay" json:"initial_delay,omitempty"`
	Period           Duration `toml:"period" json:"period,omitempty"`
	Timeout          Duration `toml:"timeout" json:"timeout,omitempty"`
	SuccessThreshold int      `toml:"success_threshold" json:"success_threshold,omitempty"`
	FailureThreshold int      `toml:"failure_threshold" json:"failure_threshold,omitempty"`
}

// Hook is an action run at a point of a container's life: exactly one of
// HTTP or Exec.
type Hook struct {
	HTTP *HTTPAction `toml:"http" json:"http,omitempty"`
	Exec *ExecAction `toml:"exec" json:"exec,omitempty"`
	// Timeout bounds a post_start hook (default 30s); a pre_stop hook is
	// bounded by the grace period.
	Timeout Duration `toml:"timeout" json:"timeout,omitempty"`
}

// HTTPAction is a GET to 127.0.0.1:Port/Path in the group's network
// namespace; a status 200-399 is success.
type HTTPAction struct {
	Path    string            `toml:"path" json:"path"`
	Port    int               `toml:"port" json:"port"`
	Headers map[string]string `toml:"headers" json:"headers,omitempty"`
}

// TCPAction succeeds when 127.0.0.1:Port accepts a connection.
type TCPAction struct {
	Port int `toml:"port" json:"port"`
}

// ExecAction runs Command in the container (through containerd); exit 0
// is success.
type ExecAction struct {
	Command []string `toml:"command" json:"command"`
}

// BackoffSpec is the restart delay: Initial, times Factor per failure, at
// most Max; ResetAfter of running without a failure resets it.
type BackoffSpec struct {
	Initial    Duration `toml:"initial" json:"initial,omitempty"`
	Max        Duration `toml:"max" json:"max,omitempty"`
	Factor     float64  `toml:"factor" json:"factor,omitempty"`
	ResetAfter Duration `toml:"reset_after" json:"reset_after,omitempty"`
}

// Probe, hook and backoff defaults (kubelet's for probes).
const (
	DefaultProbePeriod      = Duration(10 * time.Second)
	DefaultProbeTimeout     = Duration(time.Second)
	DefaultFailureThreshold = 3
	DefaultSuccessThreshold = 1
	DefaultHookTimeout      = Duration(30 * time.Second)
	DefaultBackoffInitial   = Duration(time.Second)
	DefaultBackoffMax       = Duration(5 * time.Minute)
	DefaultBackoffFactor    = 2.0
	DefaultBackoffReset     = Duration(10 * time.Minute)
)

// EffectiveRole is the container's role, main when unset.
func (c *ContainerSpec) EffectiveRole() Role {
	if c.Role == "" {
		return RoleMain
	}
	return c.Role
}

// MountSpec mounts one of the group's volumes into a container.
type MountSpec struct {
	Volume   string `toml:"volume" json:"volume"`
	Path     string `toml:"path" json:"path"`
	ReadOnly bool   `toml:"read_only" json:"read_only,omitempty"`
}

// ResourceSpec holds a container's limits, applied to its cgroup (zero
// means unlimited), and its requests, which admission counts.
type ResourceSpec struct {
	CPU    MilliCPU `toml:"cpu" json:"cpu,omitempty"`
	Memory ByteSize `toml:"memory" json:"memory,omitempty"`
	Pids   int64    `toml:"pids" json:"pids,omitempty"`
	// Requests default to the limits.
	Requests RequestSpec `toml:"requests" json:"requests"`
}

// RequestSpec is what a container asks of the node.
type RequestSpec struct {
	CPU    MilliCPU `toml:"cpu" json:"cpu,omitempty"`
	Memory ByteSize `toml:"memory" json:"memory,omitempty"`
}

// Resources is an amount of node resources.
type Resources struct {
	CPU    MilliCPU `json:"cpu"`
	Memory ByteSize `json:"memory"`
	Pids   int64    `json:"pids"`
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{CPU: r.CPU + o.CPU, Memory: r.Memory + o.Memory, Pids: r.Pids + o.Pids}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{CPU: r.CPU - o.CPU, Memory: r.Memory - o.Memory, Pids: r.Pids - o.Pids}
}

// Fits reports whether r fits in free.
func (r Resources) Fits(free Resources) bool {
	return r.CPU <= free.CPU && r.Memory <= free.Memory && r.Pids <= free.Pids
}

// Max returns the larger of r and o in each resource.
func (r Resources) Max(o Resources) Resources {
	return Resources{CPU: max(r.CPU, o.CPU), Memory: max(r.Memory, o.Memory), Pids: max(r.Pids, o.Pids)}
}

func (r Resources) String() string {
	return "cpu " + r.CPU.String() + ", memory " + r.Memory.String() + ", pids " + itoa(r.Pids)
}

// Request is what the container asks: its requests, else its limits.
func (c *ContainerSpec) Request() Resources {
	r := Resources{CPU: c.Resources.Requests.CPU, Memory: c.Resources.Requests.Memory, Pids: c.Resources.Pids}
	if r.CPU == 0 {
		r.CPU = c.Resources.CPU
	}
	if r.Memory == 0 {
		r.Memory = c.Resources.Memory
	}
	return r
}

// Request is what the group asks of the node: the sum over its long
// running containers, or an init container's ask if that is larger (init
// containers run one at a time, before the others).
func (g *GroupSpec) Request() Resources {
	var sum, initMax Resources
	for i := range g.Containers {
		c := &g.Containers[i]
		if c.EffectiveRole() == RoleInit {
			initMax = initMax.Max(c.Request())
		} else {
			sum = sum.Add(c.Request())
		}
	}
	return sum.Max(initMax)
}

// IsPreemptible says whether higher priorities may evict the group.
func (g *GroupSpec) IsPreemptible() bool { return g.Preemptible == nil || *g.Preemptible }

// EvictPolicy says what happens to an evicted group.
type EvictPolicy string

const (
	EvictWait EvictPolicy = "wait"
	EvictStop EvictPolicy = "stop"
)

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
