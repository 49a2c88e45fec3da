package supervisor

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-project/berth/api"
)

// Sandboxes prepares the host side of groups: a pinned network namespace
// (and IPC namespace when shared), volumes, and the /etc files every
// container of the group sees. The Linux implementation is NewSandboxes.
//
// Ensure and Destroy are idempotent and safe for concurrent use on
// different groups; one group's runner calls them serially.
type Sandboxes interface {
	// Ensure creates the group's sandbox, or finds it after an agent
	// restart, and brings its volumes in line with spec (creates new ones,
	// removes ones the spec no longer has, resizes tmpfs).
	Ensure(ctx context.Context, spec *api.GroupSpec) (*Sandbox, error)
	// Destroy removes everything Ensure made for the group.
	Destroy(ctx context.Context, group string) error
}

// Sandbox is a group's prepared host state.
type Sandbox struct {
	Group     string
	NetNSPath string
	// IPCNSPath is set when the group shares its IPC namespace.
	IPCNSPath string
	// Volumes maps a volume name to the host path containers bind.
	Volumes map[string]string
	// Files maps a path in the container (/etc/hosts…) to the host file.
	Files map[string]string
	// Network is how the group is connected: its mode, and in bridge mode
	// its address and published ports.
	Network *api.NetworkStatus
	// APIDir is the host directory every container of the group sees,
	// read-only, at APIMountPath: the agent puts the group's downward API
	// socket there. The directory is bound, not the socket, so a socket
	// made anew after an agent restart is seen by running containers.
	APIDir string
}

// APIMountPath is where containers see their group's APIDir.
const APIMountPath = "/run/berth"

// SandboxObserver learns when a group's sandbox is in place and when it
// is about to go, so the agent can attach what lives beside a group: its
// downward API socket, its ambassadors' listeners in the group's network
// namespace. Calls come from the group's runner: they must not block for
// long and must be idempotent (SandboxReady comes at every start, and
// when a runner finds its sandbox again after an agent restart).
type SandboxObserver interface {
	SandboxReady(spec *api.GroupSpec, sb *Sandbox)
	// SandboxGone comes before Destroy tears the sandbox down (while its
	// network namespace is still pinned).
	SandboxGone(group string)
}

// Namespaces returns the namespaces every container of the group joins.
// With network = "host" the network namespace pinned at NetNSPath is the
// node's own, so joining it is host networking, and probes and hooks that
// dial "into the group's namespace" dial on the host.
func (s *Sandbox) Namespaces() []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: s.NetNSPath}}
	if s.IPCNSPath != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: s.IPCNSPath})
	}
	return ns
}

// Mounts returns the bind mounts for one container of the group.
func (s *Sandbox) Mounts(c *api.ContainerSpec) ([]specs.Mount, error) {
	var out []specs.Mount
	for _, dst := range []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} {
		if src, ok := s.Files[dst]; ok {
			out = append(out, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "ro"}})
		}
	}
	if s.APIDir != "" {
		out = append(out, specs.Mount{Destination: APIMountPath, Type: "bind", Source: s.APIDir, Options: []string{"rbind", "ro"}})
	}
	for _, m := range c.Mounts {
		src, ok := s.Volumes[m.Volume]
		if !ok {
			return nil, fmt.Errorf("container %q mounts volume %q which the group does not define: %w", c.Name, m.Volume, api.ErrInvalid)
		}
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, specs.Mount{Destination: m.Path, Type: "bind", Source: src, Options: []string{"rbind", mode}})
	}
	return out, nil
}

// CheckHostVolumes refuses host volumes outside the allowed prefixes.
func CheckHostVolumes(spec *api.GroupSpec, prefixes []string) error {
	for _, v := range spec.Volumes {
		if v.Type != api.VolumeHost {
			continue
		}
		if !underAny(filepath.Clean(v.Path), prefixes) {
			allowed := "none are allowed"
			if len(prefixes) > 0 {
				allowed = "allowed: " + strings.Join(prefixes, ", ")
			}
			return fmt.Errorf("group %q: volume %q: host path %s is not under an allowed prefix (%s; set volumes.host_path_prefixes in agent.toml): %w",
				spec.Name, v.Name, v.Path, allowed, api.ErrInvalid)
		}
	}
	return nil
}

func underAny(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}
