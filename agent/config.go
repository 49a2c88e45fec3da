package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/berth-project/berth/api"
)

// Config is agentd's configuration, read from /etc/berth/agent.toml.
// Start from DefaultConfig, overlay the file and flags, then Validate.
type Config struct {
	// NodeName names this machine; default: the hostname.
	NodeName string `toml:"node_name"`
	// StateDir holds what must survive a reboot: volumes, logs, applied
	// groups (default /var/lib/berth).
	StateDir string `toml:"state_dir"`
	// RunDir holds what lives until reboot: pinned namespaces, tmpfs
	// volumes, the managed containerd's state (default /run/berth).
	RunDir string `toml:"run_dir"`
	// GroupsDir is watched for local group files, *.toml.
	GroupsDir string `toml:"groups_dir"`
	// Socket is the admin API's unix socket, mode 0660.
	Socket string `toml:"socket"`
	// SocketGroup, if set, owns the socket (so its members can use agentctl).
	SocketGroup string `toml:"socket_group"`
	// MetricsAddress, when set, also serves /metrics over TCP (e.g.
	// "127.0.0.1:9464"); it is always on the admin socket.
	MetricsAddress string `toml:"metrics_address"`
	// DrainOnShutdown stops every group (lowest priority first) when agentd
	// gets SIGTERM, instead of leaving them running.
	DrainOnShutdown bool `toml:"drain_on_shutdown"`
	// LogLevel: debug | info | warn | error. LogFormat: text | json.
	LogLevel  string `toml:"log_level"`
	LogFormat string `toml:"log_format"`

	// PriorityClasses names priorities groups can use instead of numbers.
	PriorityClasses map[string]int64 `toml:"priority_classes"`

	Node       NodeConfig       `toml:"node"`
	Eviction   EvictionConfig   `toml:"eviction"`
	Containerd ContainerdConfig `toml:"containerd"`
	Volumes    VolumesConfig    `toml:"volumes"`
	Logs       LogsConfig       `toml:"logs"`
	Registry   RegistryConfig   `toml:"registry"`
	Cluster    ClusterConfig    `toml:"cluster"`
	Network    NetworkConfig    `toml:"network"`
}

// NodeConfig is what groups may ask of this node in all. Zero values
// mean the machine's total minus Reserved.
type NodeConfig struct {
	CPU      api.MilliCPU   `toml:"cpu"`
	Memory   api.ByteSize   `toml:"memory"`
	Pids     int64          `toml:"pids"`
	Reserved ReservedConfig `toml:"reserved"`
	// Labels describe the node to cluster placement constraints
	// (zone = "eu-1", disk = "ssd").
	Labels map[string]string `toml:"labels"`
}

// ReservedConfig is kept back for the system and the agent.
type ReservedConfig struct {
	CPU    api.MilliCPU `toml:"cpu"`
	Memory api.ByteSize `toml:"memory"`
	Pids   int64        `toml:"pids"`
}

// EvictionConfig drives the node-pressure monitor. Below MemoryHard
// available memory, or below MemorySoft for SoftGrace, the lowest-priority
// group using more than its request is evicted, one at a time. HardGrace,
// when set, caps the grace period of hard evictions.
type EvictionConfig struct {
	MemorySoft api.ByteSize `toml:"memory_soft"`
	SoftGrace  api.Duration `toml:"soft_grace"`
	MemoryHard api.ByteSize `toml:"memory_hard"`
	HardGrace  api.Duration `toml:"hard_grace"`
	// PidsHard: fewer free pids than this is hard pressure.
	PidsHard int64        `toml:"pids_hard"`
	Interval api.Duration `toml:"interval"`
}

// ContainerdConfig says which containerd to drive.
type ContainerdConfig struct {
	// Address of containerd's gRPC socket.
	Address string `toml:"address"`
	// Namespace for everything the agent creates; one agent per namespace.
	Namespace string `toml:"namespace"`
	// Managed: "auto" starts a private containerd as a child process when
	// none answers at Address (as k3s does); "always" always does; "never"
	// only connects.
	Managed string `toml:"managed"`
	// Binary is the containerd executable for the managed mode.
	Binary      string `toml:"binary"`
	Snapshotter string `toml:"snapshotter"`
	Runtime     string `toml:"runtime"`
}

// VolumesConfig limits host volumes.
type VolumesConfig struct {
	// HostPathPrefixes lists where host volumes may point. A host volume
	// outside them is refused. Empty: host volumes are refused.
	HostPathPrefixes []string `toml:"host_path_prefixes"`
}

// LogsConfig sets container log rotation.
type LogsConfig struct {
	MaxSize  api.ByteSize `toml:"max_size"`
	MaxFiles int          `toml:"max_files"`
}

// RegistryConfig holds registry credentials for pulls.
type RegistryConfig struct {
	// AuthFile is a docker-style config.json with "auths".
	AuthFile string `toml:"auth_file"`
}

// Managed containerd modes.
const (
	ManagedAuto   = "auto"
	ManagedAlways = "always"
	ManagedNever  = "never"
)

// DefaultConfig returns the configuration of a stock install.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:  strings.ToLower(host),
		StateDir:  "/var/lib/berth",
		RunDir:    "/run/berth",
		GroupsDir: "/etc/berth/groups.d",
		Socket:    "/run/berth/agent.sock",
		LogLevel:  "info",
		LogFormat: "text",
		Containerd: ContainerdConfig{
			Address:     "/run/containerd/containerd.sock",
			Namespace:   "berth",
			Managed:     ManagedAuto,
			Binary:      "containerd",
			Snapshotter: "overlayfs",
			Runtime:     "io.containerd.runc.v2",
		},
		Logs: LogsConfig{MaxSize: 10 << 20, MaxFiles: 3},
		Node: NodeConfig{Reserved: ReservedConfig{CPU: 100, Memory: 256 << 20, Pids: 1024}},
		Eviction: EvictionConfig{
			MemoryHard: 100 << 20,
			SoftGrace:  api.Duration(30 * time.Second),
			PidsHard:   256,
			Interval:   api.Duration(time.Second),
		},
		Cluster: DefaultClusterConfig(),
		Network: DefaultNetworkConfig(),
		PriorityClasses: map[string]int64{
			"system": 1000000,
			"high":   1000,
			"normal": 0,
			"batch":  -1000,
		},
	}
}

// LoadConfigFile overlays the TOML file at path onto c. Unknown keys are
// errors, with their position.
func LoadConfigFile(path string, c *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read agent config: %w", err)
	}
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s:%d:%d: %s: %w", path, pe.Position.Line, pe.Position.Col, pe.Message, api.ErrInvalid)
		}
		return fmt.Errorf("%s: %v: %w", path, err, api.ErrInvalid)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("%s: unknown keys %s (see the configuration reference in README.md): %w", path, strings.Join(keys, ", "), api.ErrInvalid)
	}
	return nil
}

// Validate checks the configuration and cleans its paths.
func (c *Config) Validate() error {
	var errs []error
	if !api.IsDNSLabel(c.NodeName) {
		errs = append(errs, fmt.Errorf("node_name %q: must be a DNS label (lowercase letters, digits, '-')", c.NodeName))
	}
	for _, p := range []struct {
		name string
		v    *string
	}{{"state_dir", &c.StateDir}, {"run_dir", &c.RunDir}, {"groups_dir", &c.GroupsDir}, {"socket", &c.Socket}} {
		if !filepath.IsAbs(*p.v) {
			errs = append(errs, fmt.Errorf("%s %q: must be an absolute path", p.name, *p.v))
			continue
		}
		*p.v = filepath.Clean(*p.v)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: use debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log_format %q: use text or json", c.LogFormat))
	}
	switch c.Containerd.Managed {
	case ManagedAuto, ManagedAlways, ManagedNever:
	default:
		errs = append(errs, fmt.Errorf("containerd.managed %q: use auto, always or never", c.Containerd.Managed))
	}
	if c.Containerd.Address == "" {
		errs = append(errs, errors.New("containerd.address: must be set"))
	}
	if !api.IsDNSLabel(c.Containerd.Namespace) {
		errs = append(errs, fmt.Errorf("containerd.namespace %q: must be a DNS label", c.Containerd.Namespace))
	}
	for i, p := range c.Volumes.HostPathPrefixes {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("volumes.host_path_prefixes[%d] %q: must be an absolute path", i, p))
			continue
		}
		c.Volumes.HostPathPrefixes[i] = filepath.Clean(p)
	}
	if c.Node.CPU < 0 || c.Node.Memory < 0 || c.Node.Pids < 0 || c.Node.Reserved.CPU < 0 || c.Node.Reserved.Memory < 0 || c.Node.Reserved.Pids < 0 {
		errs = append(errs, errors.New("node: capacities and reserved amounts must not be negative"))
	}
	if c.Eviction.MemorySoft > 0 && c.Eviction.MemorySoft < c.Eviction.MemoryHard {
		errs = append(errs, fmt.Errorf("eviction.memory_soft %s: must be above memory_hard %s", c.Eviction.MemorySoft, c.Eviction.MemoryHard))
	}
	if c.Eviction.Interval <= 0 {
		errs = append(errs, errors.New("eviction.interval: must be positive, e.g. \"1s\""))
	}
	if c.Logs.MaxSize < 1<<20 {
		errs = append(errs, fmt.Errorf("logs.max_size %s: must be at least 1MiB", c.Logs.MaxSize))
	}
	if c.Logs.MaxFiles < 1 {
		errs = append(errs, fmt.Errorf("logs.max_files %d: must be at least 1", c.Logs.MaxFiles))
	}
	for name := range c.PriorityClasses {
		if !api.IsDNSLabel(name) {
			errs = append(errs, fmt.Errorf("priority_classes: %q is not a valid class name (a DNS label)", name))
		}
	}
	errs = append(errs, c.Cluster.validate()...)
	if err := c.Network.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent config: %w: %w", err, api.ErrInvalid)
	}
	return nil
}
