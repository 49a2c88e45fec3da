//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
)

// hostSandboxes is the Linux Sandboxes: namespaces pinned by bind mounts
// under runDir (as containerd's CRI pins pod network namespaces; no pause
// container), empty volumes under stateDir, tmpfs volumes under runDir.
//
//	runDir/groups/G/ns/{net,ipc}     pinned namespaces
//	runDir/groups/G/etc/{hosts,…}    files bound into containers
//	runDir/groups/G/tmpfs/V          tmpfs volumes (mounted here)
//	stateDir/volumes/G/V             empty volumes
//
// The network namespace depends on the group's network mode: "bridge"
// and "none" pin a new one (loopback up), which net, when set, attaches to
// the node bridge in bridge mode; "host" pins the agent's own namespace,
// so the containers join the node's network. A mode change re-pins it.
type hostSandboxes struct {
	runDir, stateDir string
	net              Network // nil: loopback only (Config.Network)
}

func (h *hostSandboxes) useNetwork(n Network) { h.net = n }

func (h *hostSandboxes) netnsPath(g string) string { return filepath.Join(h.groupRun(g), "ns", "net") }

// netnsPinned reports whether group's network namespace is pinned: its
// network attachment, if any, is still in use.
func (h *hostSandboxes) netnsPinned(group string) bool { return isNSFS(h.netnsPath(group)) }

// NewSandboxes returns the Linux sandbox manager.
func NewSandboxes(runDir, stateDir string) Sandboxes {
	return &hostSandboxes{runDir: runDir, stateDir: stateDir}
}

func (h *hostSandboxes) groupRun(g string) string { return filepath.Join(h.runDir, "groups", g) }
func (h *hostSandboxes) emptyDir(g string) string { return filepath.Join(h.stateDir, "volumes", g) }

func (h *hostSandboxes) Ensure(ctx context.Context, spec *api.GroupSpec) (_ *Sandbox, retErr error) {
	g := spec.Name
	base := h.groupRun(g)
	sb := &Sandbox{Group: g, Volumes: map[string]string{}, Files: map[string]string{}}
	fresh := false
	if _, err := os.Stat(base); errors.Is(err, os.ErrNotExist) {
		fresh = true
	}
	defer func() {
		// A sandbox this call created is removed whole if any step failed.
		if retErr != nil && fresh {
			_ = h.Destroy(context.Background(), g)
		}
	}()
	sb.APIDir = filepath.Join(base, "api")
	for _, d := range []string{filepath.Join(base, "ns"), filepath.Join(base, "etc"), filepath.Join(base, "tmpfs"), sb.APIDir, h.emptyDir(g)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", g, err)
		}
	}
	sb.NetNSPath = h.netnsPath(g)
	mode := spec.EffectiveNetwork()
	if err := h.ensureNetNS(ctx, g, sb.NetNSPath, mode == api.NetworkHost); err != nil {
		return nil, fmt.Errorf("sandbox %s: network namespace: %w", g, err)
	}
	sb.Network = &api.NetworkStatus{Mode: mode}
	switch {
	case h.net == nil:
	case mode == api.NetworkBridge:
		a, err := h.net.Setup(ctx, g, sb.NetNSPath, spec)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", g, err)
		}
		sb.Network = a.Status()
	case mode == api.NetworkNone:
		// Was it bridged before (a spec change)? Then it is no more.
		if err := h.net.Teardown(ctx, g, sb.NetNSPath); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", g, err)
		}
	}
	ipc := filepath.Join(base, "ns", "ipc")
	if spec.ShareIPC {
		if err := pinNamespace(ipc, unix.CLONE_NEWIPC); err != nil {
			return nil, fmt.Errorf("sandbox %s: ipc namespace: %w", g, err)
		}
		sb.IPCNSPath = ipc
	} else {
		_ = unpin(ipc)
	}
	if err := h.writeEtc(sb, base); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", g, err)
	}
	if err := h.ensureVolumes(sb, spec); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", g, err)
	}
	return sb, nil
}

// ensureNetNS pins the group's network namespace at path: the node's own
// with host, else a new one. A namespace of the other kind pinned there
// (the group's network mode changed) is detached and unpinned first.
func (h *hostSandboxes) ensureNetNS(ctx context.Context, g, path string, host bool) error {
	if isNSFS(path) {
		if isHostNetns(path) == host {
			return nil
		}
		if h.net != nil && !host {
			if err := h.net.Teardown(ctx, g, path); err != nil {
				return err
			}
		}
		if err := unpin(path); err != nil {
			return err
		}
	}
	if host {
		return pinHostNetns(path)
	}
	return pinNamespace(path, unix.CLONE_NEWNET)
}

// pinHostNetns bind-mounts the agent's own network namespace at path.
func pinHostNetns(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	// Threads in another namespace are locked to their goroutine, so this
	// one is in the agent's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("pin the host network namespace at %s: %w", path, err)
	}
	return nil
}

func (h *hostSandboxes) writeEtc(sb *Sandbox, base string) error {
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost %[1]s\n::1\tlocalhost ip6-localhost ip6-loopback %[1]s\n", sb.Group)
	if sb.Network != nil && sb.Network.Address != "" {
		hosts += fmt.Sprintf("%s\t%s\n", sb.Network.Address, sb.Group)
	}
	files := map[string][]byte{
		"/etc/hosts":    []byte(hosts),
		"/etc/hostname": []byte(sb.Group + "\n"),
	}
	if rc, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		files["/etc/resolv.conf"] = rc
	}
	for dst, data := range files {
		p := filepath.Join(base, "etc", filepath.Base(dst))
		if err := writeFileAtomic(p, data, 0o644); err != nil {
			return err
		}
		sb.Files[dst] = p
	}
	return nil
}

func (h *hostSandboxes) ensureVolumes(sb *Sandbox, spec *api.GroupSpec) error {
	tmpfsDir := filepath.Join(h.groupRun(sb.Group), "tmpfs")
	want := map[string]api.VolumeSpec{}
	for _, v := range spec.Volumes {
		want[v.Name] = v
		switch v.Type {
		case api.VolumeEmpty:
			p := filepath.Join(h.emptyDir(sb.Group), v.Name)
			if err := os.MkdirAll(p, 0o777); err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			_ = os.Chmod(p, 0o777)
			sb.Volumes[v.Name] = p
		case api.VolumeHost:
			if _, err := os.Stat(v.Path); err != nil {
				return fmt.Errorf("volume %q: host path: %w", v.Name, err)
			}
			sb.Volumes[v.Name] = v.Path
		case api.VolumeTmpfs:
			p := filepath.Join(tmpfsDir, v.Name)
			if err := mountTmpfs(p, int64(v.Size)); err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			sb.Volumes[v.Name] = p
		default:
			return fmt.Errorf("volume %q: unknown type %q: %w", v.Name, v.Type, api.ErrInvalid)
		}
	}
	// Remove volumes the spec no longer has (or has under another type).
	if ents, err := os.ReadDir(h.emptyDir(sb.Group)); err == nil {
		for _, e := range ents {
			if v, ok := want[e.Name()]; !ok || v.Type != api.VolumeEmpty {
				_ = os.RemoveAll(filepath.Join(h.emptyDir(sb.Group), e.Name()))
			}
		}
	}
	if ents, err := os.ReadDir(tmpfsDir); err == nil {
		for _, e := range ents {
			if v, ok := want[e.Name()]; !ok || v.Type != api.VolumeTmpfs {
				p := filepath.Join(tmpfsDir, e.Name())
				_ = unix.Unmount(p, unix.MNT_DETACH)
				_ = os.Remove(p)
			}
		}
	}
	return nil
}

func (h *hostSandboxes) Destroy(ctx context.Context, group string) error {
	base := h.groupRun(group)
	if h.net != nil {
		// Before the namespace goes: the bridge plugin deletes the veth
		// from inside it. A failure keeps everything for the next try.
		ns := h.netnsPath(group)
		if isHostNetns(ns) {
			ns = ""
		}
		if err := h.net.Teardown(ctx, group, ns); err != nil {
			return fmt.Errorf("destroy sandbox %s: %w", group, err)
		}
	}
	var errs []error
	for _, kind := range []string{"net", "ipc"} {
		if err := unpin(filepath.Join(base, "ns", kind)); err != nil {
			errs = append(errs, err)
		}
	}
	tmpfsDir := filepath.Join(base, "tmpfs")
	if ents, err := os.ReadDir(tmpfsDir); err == nil {
		for _, e := range ents {
			p := filepath.Join(tmpfsDir, e.Name())
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
		}
	}
	if len(errs) == 0 {
		// Only remove directories once nothing is mounted below them.
		if err := os.RemoveAll(base); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(h.emptyDir(group)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", group, err)
	}
	return nil
}

// pinNamespace creates a namespace of the given kind and bind-mounts it at
// path, unless a namespace is pinned there already. A new network
// namespace gets its loopback up.
func pinNamespace(path string, flag int) error {
	if isNSFS(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	kind := "net"
	if flag == unix.CLONE_NEWIPC {
		kind = "ipc"
	}
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked and so is never reused. It also goes back
		// to its own namespace when done: if it is the main thread, the Go
		// runtime parks it instead of ending it, and it would keep the new
		// namespace alive after the group is deleted.
		runtime.LockOSThread()
		self := "/proc/" + strconv.Itoa(os.Getpid()) + "/task/" + strconv.Itoa(unix.Gettid()) + "/ns/" + kind
		orig, err := os.Open(self)
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		defer func() {
			if err := unix.Setns(int(orig.Fd()), flag); err == nil {
				runtime.UnlockOSThread()
			}
		}()
		if err := unix.Unshare(flag); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := self
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("pin %s: %w", path, err)
			return
		}
		if flag == unix.CLONE_NEWNET {
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			if err != nil {
				errc <- fmt.Errorf("loopback up: %w", err)
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		_ = unpin(path)
		return err
	}
	return nil
}

func isNSFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

func unpin(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// mountTmpfs mounts (or resizes) a tmpfs of size bytes at path.
func mountTmpfs(path string, size int64) error {
	if err := os.MkdirAll(path, 0o777); err != nil {
		return err
	}
	opts := fmt.Sprintf("size=%d,mode=1777", size)
	var st unix.Statfs_t
	if unix.Statfs(path, &st) == nil && st.Type == unix.TMPFS_MAGIC && isMountPoint(path) {
		return unix.Mount("tmpfs", path, "tmpfs", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, opts)
	}
	return unix.Mount("tmpfs", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
}

// isMountPoint reports whether path is on another device than its parent.
func isMountPoint(path string) bool {
	var a, b unix.Stat_t
	if unix.Stat(path, &a) != nil || unix.Stat(filepath.Dir(path), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// List returns the groups that have a sandbox on this node.
func (h *hostSandboxes) List() []string {
	var out []string
	for _, dir := range []string{filepath.Join(h.runDir, "groups"), filepath.Join(h.stateDir, "volumes")} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() {
				out = append(out, e.Name())
			}
		}
	}
	return out
}
