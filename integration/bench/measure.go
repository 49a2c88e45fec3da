package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/pkg/netns"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// trio's containers may be stopped before their SIGTERM handler is set
// up (PID 1 then ignores it), so a short grace keeps rounds quick. Its
// network is "none": the baseline (measureDirect) makes no CNI attachment
// either, so the ratio compares like with like; the cost of the bridge is
// measured on its own (network.go).
const trio = `name = "trio"
grace_period = "200ms"
network = "none"
[[container]]
name = "a"
image = "berth.local/testapp:latest"
args = ["sleep"]
[[container]]
name = "b"
image = "berth.local/testapp:latest"
args = ["sleep"]
[[container]]
name = "c"
image = "berth.local/testapp:latest"
args = ["sleep"]
`

// measureApply times API apply → the group's "Started" event with every
// container running, through agentd.
func (b *bench) measureApply(ctx context.Context, rounds int) ([]time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ev := followEvents(ctx, b.api, "trio")
	var out []time.Duration
	for i := 0; i < rounds+1; i++ { // round 0 warms up (first shim, image checks)
		start := time.Now()
		if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "trio.toml", Content: trio}}}); err != nil {
			return nil, err
		}
		// The group's Started event comes once every container runs.
		at, err := ev.started(ctx, "trio")
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", i, err)
		}
		if i > 0 {
			out = append(out, at.Sub(start))
		}
		if err := b.api.Delete(ctx, "trio", true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// measureDirect starts the same three containers with the containerd
// client alone into a pinned network namespace. same=true uses the agent's
// container options and starts them concurrently; same=false is the plain
// sequential way with default options and no output.
func (b *bench) measureDirect(ctx context.Context, rounds int, same bool) ([]time.Duration, error) {
	ctx = namespaces.WithNamespace(ctx, directNS)
	img, err := b.client.GetImage(ctx, "berth.local/testapp:latest")
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(b.dir, "direct-logs")
	nsDir := filepath.Join(b.dir, "direct-netns")
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return nil, err
	}
	var out []time.Duration
	for i := 0; i < rounds+1; i++ {
		start := time.Now()
		ns, err := netns.NewNetNS(nsDir)
		if err != nil {
			return nil, err
		}
		var tasks []containerd.Task
		var mu sync.Mutex
		startOne := func(name string) error {
			id := "trio." + name
			opts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs("/testapp", "sleep"),
				oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ns.GetPath()}),
				oci.WithHostname("trio")}
			ioc := cio.NullIO
			if same {
				opts = append(opts, oci.WithNoNewPrivileges, seccomp.WithDefaultProfile(),
					oci.WithAnnotations(map[string]string{supervisor.ShimGroupAnnotation: "trio"}))
				v := url.Values{"dir": {logDir}, "max_size": {"10485760"}, "max_files": {"3"}}
				ioc = cio.BinaryIO(b.agentd, map[string]string{supervisor.LogDriverArg: v.Encode()})
			}
			c, err := b.client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
				containerd.WithRuntime("io.containerd.runc.v2", nil), containerd.WithNewSpec(opts...))
			if err != nil {
				return err
			}
			t, err := c.NewTask(ctx, ioc)
			if err != nil {
				return err
			}
			if _, err := t.Wait(ctx); err != nil {
				return err
			}
			if err := t.Start(ctx); err != nil {
				return err
			}
			mu.Lock()
			tasks = append(tasks, t)
			mu.Unlock()
			return nil
		}
		var errs []error
		if same {
			var wg sync.WaitGroup
			var emu sync.Mutex
			for _, n := range []string{"a", "b", "c"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := startOne(n); err != nil {
						emu.Lock()
						errs = append(errs, err)
						emu.Unlock()
					}
				}()
			}
			wg.Wait()
		} else {
			for _, n := range []string{"a", "b", "c"} {
				if err := startOne(n); err != nil {
					errs = append(errs, err)
					break
				}
			}
		}
		took := time.Since(start)
		if err := cleanDirect(ctx, b.client); err != nil {
			errs = append(errs, err)
		}
		if err := ns.Remove(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, took)
		}
	}
	return out, nil
}

// measureGrace stops a container that ignores SIGTERM and returns how far
// after the grace deadline it exited.
func (b *bench) measureGrace(ctx context.Context, rounds int) ([]time.Duration, error) {
	const grace = time.Second
	spec := fmt.Sprintf(`name = "stubborn"
grace_period = %q
restart = "never"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep", "--ignore-term"]
`, grace)
	if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "stubborn.toml", Content: spec}}}); err != nil {
		return nil, err
	}
	var out []time.Duration
	for i := 0; i < rounds; i++ {
		if err := b.waitRunning(ctx, "stubborn"); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := b.api.Stop(ctx, "stubborn", true); err != nil {
			return nil, err
		}
		st, err := b.api.Get(ctx, "stubborn")
		if err != nil {
			return nil, err
		}
		c := st.Containers[0]
		if c.ExitCode == nil || *c.ExitCode != 137 {
			return nil, fmt.Errorf("round %d: exit code %v, want 137", i, c.ExitCode)
		}
		out = append(out, c.FinishedAt.Sub(start.Add(grace)))
		if err := b.api.Start(ctx, "stubborn"); err != nil {
			return nil, err
		}
	}
	return out, b.api.Delete(ctx, "stubborn", true)
}

func (b *bench) waitRunning(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := b.api.Get(ctx, name)
		if err == nil && st.State == api.GroupRunning && st.Running() == len(st.Containers) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("group %s not running within 30s", name)
}

func importDirect(ctx context.Context, client *containerd.Client, ns, path string) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	imgs, err := client.Import(ctx, f)
	if err != nil {
		return err
	}
	for _, i := range imgs {
		if err := containerd.NewImage(client, i).Unpack(ctx, "overlayfs"); err != nil {
			return err
		}
	}
	return nil
}

// cleanDirect kills and deletes every container of the direct namespace.
func cleanDirect(ctx context.Context, client *containerd.Client) error {
	cs, err := client.Containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		if t, err := c.Task(ctx, nil); err == nil {
			if st, err := t.Wait(ctx); err == nil {
				_ = t.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
				select {
				case <-st:
				case <-time.After(10 * time.Second):
				}
			}
			if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil {
				errs = append(errs, err)
			}
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeCgroups(ns string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range append(roots, "/sys/fs/cgroup") {
		dir := filepath.Join(r, ns)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
		_ = os.Remove(dir)
	}
}

func unmountBelow(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mps = append(mps, f[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		_ = unix.Unmount(mps[i], unix.MNT_DETACH)
	}
}
