package api

import "time"

// GroupState is the state of a group as the API reports it. The state
// machine itself lives in the supervisor; these are its names on the wire.
type GroupState string

const (
	GroupPending  GroupState = "Pending"  // accepted, not yet started (waiting for image, room, dependency)
	GroupStarting GroupState = "Starting" // sandbox and containers being created
	GroupRunning  GroupState = "Running"  // every container running
	GroupBackOff  GroupState = "BackOff"  // a container failed; waiting to restart
	GroupStopping GroupState = "Stopping" // stop sequence in progress
	GroupStopped  GroupState = "Stopped"  // stopped on request; definition kept
	GroupFailed   GroupState = "Failed"   // gave up (restart policy), or cannot be created
	GroupEvicted  GroupState = "Evicted"  // stopped to make room for higher priority
	GroupDeleting GroupState = "Deleting" // stop then remove everything
)

// ContainerState is the state of one container.
type ContainerState string

const (
	ContainerWaiting ContainerState = "Waiting" // not created yet, or between restarts
	ContainerRunning ContainerState = "Running"
	ContainerExited  ContainerState = "Exited"
	ContainerUnknown ContainerState = "Unknown"
)

// GroupStatus is what `agentctl get` and `describe` show of one group.
type GroupStatus struct {
	Name     string     `json:"name"`
	State    GroupState `json:"state"`
	Reason   string     `json:"reason,omitempty"`
	Message  string     `json:"message,omitempty"`
	Priority int64      `json:"priority"`
	// Request is what admission counts for the group.
	Request    Resources `json:"request"`
	Generation int64     `json:"generation"`
	// Source is the file that defines the group, or "api".
	Source string `json:"source"`
	// SpecError is set when the source file was changed into something
	// invalid; the group keeps running its last valid spec.
	SpecError string `json:"spec_error,omitempty"`
	Restarts  int    `json:"restarts"`
	// Ready: every init container completed, every other container runs
	// and passes its readiness probe.
	Ready bool `json:"ready"`
	// NextRestart is when a group in BackOff tries again.
	NextRestart time.Time         `json:"next_restart,omitzero"`
	CreatedAt   time.Time         `json:"created_at"`
	StartedAt   time.Time         `json:"started_at,omitzero"`
	NetNS       string            `json:"netns,omitempty"`
	Network     *NetworkStatus    `json:"network,omitempty"`
	Containers  []ContainerStatus `json:"containers"`
	// Spec is the spec as applied (effective config); set by Get, not List.
	Spec *GroupSpec `json:"spec,omitempty"`
	// Events are the group's recent events; set by Get, not List.
	Events []Event `json:"events,omitempty"`
}

// ContainerStatus is the state of one container of a group.
type ContainerStatus struct {
	Name       string         `json:"name"`
	ID         string         `json:"id"`
	Image      string         `json:"image"`
	State      ContainerState `json:"state"`
	Reason     string         `json:"reason,omitempty"`
	PID        uint32         `json:"pid,omitempty"`
	ExitCode   *uint32        `json:"exit_code,omitempty"`
	Restarts   int            `json:"restarts"`
	StartedAt  time.Time      `json:"started_at,omitzero"`
	FinishedAt time.Time      `json:"finished_at,omitzero"`
	Role       Role           `json:"role,omitempty"`
	// Ready is the readiness probe's verdict (running, if it has none).
	Ready bool `json:"ready"`
	// OOMKilled is set when the kernel killed the last task for memory.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Probes are the container's probes with their last results.
	Probes []ProbeStatus `json:"probes,omitempty"`
	// Hooks are the last runs of the container's hooks.
	Hooks []HookStatus `json:"hooks,omitempty"`
	// Usage is the container's resource use now (set by Get, not List).
	Usage *ContainerUsage `json:"usage,omitempty"`
}

// ContainerUsage is a running container's resource use.
type ContainerUsage struct {
	Group     string `json:"group,omitempty"`
	Container string `json:"container,omitempty"`
	// CPU is the cores in use over the sampling window (1 = one core);
	// CPUSeconds the CPU time used since the task started.
	CPU         float64  `json:"cpu"`
	CPUSeconds  float64  `json:"cpu_seconds"`
	Memory      ByteSize `json:"memory"` // working set
	MemoryLimit ByteSize `json:"memory_limit,omitempty"`
	Pids        int64    `json:"pids"`
}

// ProbeStatus is one probe's recent history.
type ProbeStatus struct {
	Kind      string    `json:"kind"`   // startup | liveness | readiness
	Action    string    `json:"action"` // e.g. "http GET :8080/health"
	Result    string    `json:"result"` // success | failure | unknown
	Message   string    `json:"message,omitempty"`
	LastProbe time.Time `json:"last_probe,omitzero"`
	// Failures and Successes are the current consecutive counts.
	Failures  int `json:"failures"`
	Successes int `json:"successes"`
	// Duration of the last probe.
	Duration time.Duration `json:"duration"`
}

// HookStatus is the last run of a hook.
type HookStatus struct {
	Kind     string        `json:"kind"` // post_start | pre_stop
	Action   string        `json:"action"`
	Result   string        `json:"result"` // success | failure
	Message  string        `json:"message,omitempty"`
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration"`
}

// Running counts the running containers of the group.
func (g *GroupStatus) Running() int {
	n := 0
	for _, c := range g.Containers {
		if c.State == ContainerRunning {
			n++
		}
	}
	return n
}

// Event is one thing that happened, with a reason a human can act on.
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Type      string    `json:"type"` // Normal | Warning
	Group     string    `json:"group,omitempty"`
	Container string    `json:"container,omitempty"`
	Reason    string    `json:"reason"` // CamelCase, e.g. Started, Killed, SpecInvalid
	Message   string    `json:"message"`
}

// Event types.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// LogEntry is one line of a container's output.
type LogEntry struct {
	Time      time.Time `json:"time"`
	Stream    string    `json:"stream"` // stdout | stderr
	Container string    `json:"container,omitempty"`
	Line      string    `json:"line"`
}

// ApplyFile is one group file sent to the apply endpoint.
type ApplyFile struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// ApplyRequest applies one or more group files atomically: all are
// validated first, and nothing is applied unless every one is valid.
type ApplyRequest struct {
	Files  []ApplyFile `json:"files"`
	DryRun bool        `json:"dry_run,omitempty"`
}

// ApplyResult says what applying did to one group.
type ApplyResult struct {
	Group      string `json:"group"`
	Action     string `json:"action"` // created | updated | unchanged
	Generation int64  `json:"generation"`
}

// Actions of ApplyResult.
const (
	ActionCreated   = "created"
	ActionUpdated   = "updated"
	ActionUnchanged = "unchanged"
)

// ImageInfo describes an image in the agent's containerd namespace.
type ImageInfo struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// VersionInfo is what /v1/version returns.
type VersionInfo struct {
	Version    string `json:"version"`
	GoVersion  string `json:"go_version"`
	Node       string `json:"node"`
	Containerd string `json:"containerd,omitempty"`
	// ContainerdOK is false while containerd does not answer.
	ContainerdOK bool `json:"containerd_ok"`
}

// ErrorBody is the JSON body of every non-2xx response.
type ErrorBody struct {
	Error string `json:"error"`
	// Class is one of the error classes in errors.go ("invalid", "not_found"…).
	Class string `json:"class"`
	// Details lists every problem found in the input, with positions.
	Details []FieldError `json:"details,omitempty"`
}

// NodeStatus is what `agentctl node` shows: capacity and its use.
type NodeStatus struct {
	Name string `json:"name"`
	// Allocatable is what groups may ask in all; Allocated what admitted
	// groups ask; Free the difference.
	Allocatable Resources `json:"allocatable"`
	Allocated   Resources `json:"allocated"`
	Free        Resources `json:"free"`
	// MemoryAvailable is the kernel's MemAvailable, read by the pressure
	// monitor; Pressure says which eviction threshold is crossed, if any.
	MemoryAvailable ByteSize `json:"memory_available"`
	Pressure        string   `json:"pressure,omitempty"`
	// Drained: every group is stopped until undrain.
	Drained  bool `json:"drained,omitempty"`
	Admitted int  `json:"admitted"`
	Pending  int  `json:"pending"`
	Evicted  int  `json:"evicted"`
}
