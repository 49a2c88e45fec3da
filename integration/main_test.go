package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/containerd/containerd/api/services/tasks/v1"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	leasespkg "github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/contrib/imagebuild"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

// testEnv is what TestMain sets up once for every test in the package: a
// private containerd, a namespace of its own with the test images imported
// and unpacked, and the agentd and agentctl binaries.
type testEnv struct {
	// ContainerdAddress is the private containerd's socket.
	ContainerdAddress string
	// Namespace is unique to this run (berth-it-<hex>); every other
	// namespace a test makes starts with it plus "-".
	Namespace string
	// TempDir holds everything this run writes; removed afterwards.
	TempDir string
	// FIFODir is for cio.WithFIFODir.
	FIFODir string
	// AgentdBin and AgentctlBin are the built binaries; empty while
	// cmd/agentd or cmd/agentctl have no Go files (see needAgentd).
	AgentdBin, AgentctlBin string
	// ImageBusybox and ImageTestapp are imported and unpacked
	// (overlayfs) in Namespace.
	ImageBusybox, ImageTestapp string
	// BusyboxArchive and TestappArchive are their OCI archives on disk,
	// for tests of image import.
	BusyboxArchive, TestappArchive string
	// Client talks to the private containerd; its default namespace is
	// Namespace.
	Client *containerd.Client
	// RepoRoot is the module root.
	RepoRoot string

	daemonCfg containerdproc.Config
	daemon    *containerdproc.Process
	seq       atomic.Int64 // names per-test directories and namespaces
}

var env = testEnv{
	ImageBusybox: "berth.local/busybox:latest",
	ImageTestapp: "berth.local/testapp:latest",
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	if missing := missingPrerequisites(); len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: integration tests need %s; CI=true, so a missing prerequisite is a failure\n",
				strings.Join(missing, ", "))
			return 1
		}
		fmt.Printf("SKIP: integration tests need %s (set CI=true to make this a failure)\n", strings.Join(missing, ", "))
		return 0
	}
	defer func() {
		if err := env.teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "integration teardown left things behind: %v\n", err)
			code = 1
		}
	}()
	if err := env.setup(); err != nil {
		fmt.Fprintf(os.Stderr, "integration setup: %v\n", err)
		return 1
	}
	return m.Run()
}

// missingPrerequisites lists what this machine lacks to run the tests.
func missingPrerequisites() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" in PATH")
		}
	}
	if _, err := os.Stat(imagebuild.DefaultBusybox); err != nil {
		missing = append(missing, imagebuild.DefaultBusybox+" (busybox-static)")
	}
	return missing
}

func (e *testEnv) setup() error {
	start := time.Now()
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return fmt.Errorf("module root not found above the integration directory: %w", err)
	}
	e.RepoRoot = root
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	e.Namespace = "berth-it-" + hex.EncodeToString(suffix)
	if e.TempDir, err = os.MkdirTemp("", e.Namespace+"-"); err != nil {
		return err
	}
	e.FIFODir = filepath.Join(e.TempDir, "fifo")
	for _, d := range []string{e.FIFODir, filepath.Join(e.TempDir, "bin"), filepath.Join(e.TempDir, "images")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	fmt.Printf("integration: namespace %s, temp dir %s\n", e.Namespace, e.TempDir)

	// containerd, the images and the binaries are independent: make them
	// at the same time.
	var g errgroup.Group
	g.Go(func() error {
		t0 := time.Now()
		cfg := containerdproc.DefaultConfig(filepath.Join(e.TempDir, "containerd"))
		p, err := containerdproc.Start(context.Background(), cfg)
		if err != nil {
			return err
		}
		e.daemon, e.daemonCfg, e.ContainerdAddress = p, cfg, cfg.Address
		fmt.Printf("integration: containerd pid %d answered in %s\n", p.PID(), time.Since(t0).Round(time.Millisecond))
		return nil
	})
	g.Go(func() error {
		t0 := time.Now()
		e.BusyboxArchive = filepath.Join(e.TempDir, "images", "busybox.tar")
		e.TestappArchive = filepath.Join(e.TempDir, "images", "testapp.tar")
		img, err := imagebuild.Busybox(imagebuild.DefaultBusybox)
		if err != nil {
			return err
		}
		if err := imagebuild.WriteFile(img, e.ImageBusybox, e.BusyboxArchive); err != nil {
			return err
		}
		app, err := imagebuild.GoBinary(filepath.Join(e.RepoRoot, "integration", "testapp"), "testapp")
		if err != nil {
			return err
		}
		if err := imagebuild.WriteFile(app, e.ImageTestapp, e.TestappArchive); err != nil {
			return err
		}
		fmt.Printf("integration: images built in %s\n", time.Since(t0).Round(time.Millisecond))
		return nil
	})
	g.Go(func() error {
		t0 := time.Now()
		var err error
		if e.AgentdBin, err = e.buildCommand("agentd"); err != nil {
			return err
		}
		if e.AgentctlBin, err = e.buildCommand("agentctl"); err != nil {
			return err
		}
		fmt.Printf("integration: binaries built in %s\n", time.Since(t0).Round(time.Millisecond))
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}

	if e.Client, err = containerd.New(e.ContainerdAddress, containerd.WithDefaultNamespace(e.Namespace)); err != nil {
		return fmt.Errorf("connect to containerd: %w", err)
	}
	t0 := time.Now()
	if err := e.importImages(context.Background(), e.Namespace); err != nil {
		return err
	}
	fmt.Printf("integration: images imported and unpacked in %s; setup took %s\n",
		time.Since(t0).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return nil
}

// buildCommand builds ./cmd/<name> into the temp dir. It returns "" while
// the package has no Go files yet.
func (e *testEnv) buildCommand(name string) (string, error) {
	pkg := filepath.Join(e.RepoRoot, "cmd", name)
	files, _ := filepath.Glob(filepath.Join(pkg, "*.go"))
	var sources int
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			sources++
		}
	}
	if sources == 0 {
		fmt.Printf("integration: %s has no Go files yet; tests that need %s will fail\n", pkg, name)
		return "", nil
	}
	out := filepath.Join(e.TempDir, "bin", name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = e.RepoRoot
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, stderr.String())
	}
	return out, nil
}

// importImages imports the test image archives into namespace ns and
// unpacks them for overlayfs.
func (e *testEnv) importImages(ctx context.Context, ns string) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	for _, a := range []struct{ path, ref string }{
		{e.BusyboxArchive, e.ImageBusybox},
		{e.TestappArchive, e.ImageTestapp},
	} {
		f, err := os.Open(a.path)
		if err != nil {
			return err
		}
		imgs, err := e.Client.Import(ctx, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("import %s into %s: %w", a.path, ns, err)
		}
		if len(imgs) != 1 || imgs[0].Name != a.ref {
			return fmt.Errorf("import %s into %s created %v, want one image %s", a.path, ns, imgs, a.ref)
		}
		if err := containerd.NewImage(e.Client, imgs[0]).Unpack(ctx, "overlayfs"); err != nil {
			return fmt.Errorf("unpack %s in %s: %w", a.ref, ns, err)
		}
	}
	return nil
}

// teardown removes everything the run made, as far as it can, and
// reports what it could not remove.
func (e *testEnv) teardown() error {
	if e.TempDir == "" {
		return nil
	}
	var errs []error
	// Test agents' bridges, CNI chains and subnet claims.
	errs = append(errs, cleanupTestNetworks())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if e.Client != nil {
		nss, err := e.Client.NamespaceService().List(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, ns := range nss {
			if e.ownsNamespace(ns) {
				errs = append(errs, cleanNamespace(ctx, e.Client, ns, true))
			}
		}
		e.Client.Close()
	}
	if e.daemon != nil {
		if err := e.daemon.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, killLeftovers(e.Namespace, e.ContainerdAddress))
	errs = append(errs, unmountUnder(e.TempDir))
	errs = append(errs, removeCgroups(e.Namespace))
	runc, _ := filepath.Glob("/run/containerd/runc/" + e.Namespace + "*")
	for _, d := range runc {
		errs = append(errs, os.RemoveAll(d))
	}
	if err := os.RemoveAll(e.TempDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// restartContainerd stops the test containerd (SIGTERM) and starts it
// again on the same root, state and socket; shims and containers keep
// running. env.Client reconnects by itself.
func (e *testEnv) restartContainerd(t testing.TB) {
	t.Helper()
	if err := e.daemon.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p, err := containerdproc.Start(context.Background(), e.daemonCfg)
	if err != nil {
		t.Fatal(err)
	}
	e.daemon = p
}

// ownsNamespace reports whether ns is this run's namespace or one made
// from it.
func (e *testEnv) ownsNamespace(ns string) bool {
	return ns == e.Namespace || strings.HasPrefix(ns, e.Namespace+"-")
}

// needAgentd fails the test when the agentd binary could not be built
// because cmd/agentd has no Go files yet.
func (e *testEnv) needAgentd(t testing.TB) {
	t.Helper()
	if e.AgentdBin == "" {
		t.Fatal("no agentd binary: cmd/agentd has no Go files yet")
	}
}

// needAgentctl is needAgentd for agentctl.
func (e *testEnv) needAgentctl(t testing.TB) {
	t.Helper()
	if e.AgentctlBin == "" {
		t.Fatal("no agentctl binary: cmd/agentctl has no Go files yet")
	}
}

// ctx returns ctx in the run's namespace.
func (e *testEnv) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, e.Namespace)
}

// newDir makes a fresh directory under the temp dir with a short name
// (unix socket paths are limited to 107 bytes), removed by teardown.
func (e *testEnv) newDir(t testing.TB, prefix string) string {
	t.Helper()
	dir := filepath.Join(e.TempDir, fmt.Sprintf("%s%d", prefix, e.seq.Add(1)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "TEST"), []byte(t.Name()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newNamespace makes a namespace of this run with the test images imported,
// for a test (or an agent) that must not share env.Namespace; it is
// emptied and deleted when the test ends.
func (e *testEnv) newNamespace(t testing.TB) string {
	t.Helper()
	ns := fmt.Sprintf("%s-n%d", e.Namespace, e.seq.Add(1))
	if err := e.importImages(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cleanNamespace(ctx, e.Client, ns, true); err != nil {
			t.Errorf("clean namespace %s: %v", ns, err)
		}
	})
	return ns
}

// cleanNamespace kills and deletes every task and container in ns; with
// all, it also deletes its images, leases, snapshots and content and then
// the namespace itself.
// deleteOrphanTasks kills and deletes tasks whose container is gone: an
// agent stopped in the middle of creating one can leave such a task, and
// it would make the next task of that name fail with "already exists".
func deleteOrphanTasks(ctx context.Context, client *containerd.Client, ns string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.TaskService().List(ctx, &tasks.ListTasksRequest{})
		if err != nil {
			return fmt.Errorf("list tasks in %s: %w", ns, err)
		}
		if len(resp.Tasks) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d tasks left in %s after 10s", len(resp.Tasks), ns)
		}
		for _, t := range resp.Tasks {
			_, _ = client.TaskService().Kill(ctx, &tasks.KillRequest{ContainerID: t.ID, Signal: uint32(syscall.SIGKILL), All: true})
			_, _ = client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: t.ID})
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cleanNamespace(ctx context.Context, client *containerd.Client, ns string, all bool) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	var errs []error
	containers, err := client.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list containers in %s: %w", ns, err)
	}
	for _, c := range containers {
		if task, err := c.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete task %s/%s: %w", ns, c.ID(), err))
			}
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete container %s/%s: %w", ns, c.ID(), err))
		}
	}
	errs = append(errs, deleteOrphanTasks(ctx, client, ns))
	if !all {
		return errors.Join(errs...)
	}
	imgs, err := client.ImageService().List(ctx)
	errs = append(errs, err)
	for i, img := range imgs {
		var opts []images.DeleteOpt
		if i == len(imgs)-1 {
			opts = append(opts, images.SynchronousDelete()) // collect garbage once, at the end
		}
		errs = append(errs, client.ImageService().Delete(ctx, img.Name, opts...))
	}
	leases, err := client.LeasesService().List(ctx)
	errs = append(errs, err)
	for _, l := range leases {
		errs = append(errs, client.LeasesService().Delete(ctx, l, leasespkg.SynchronousDelete))
	}
	errs = append(errs, removeSnapshots(ctx, client.SnapshotService("overlayfs")))
	var blobs []digest.Digest
	errs = append(errs, client.ContentStore().Walk(ctx, func(info content.Info) error {
		blobs = append(blobs, info.Digest)
		return nil
	}))
	for _, d := range blobs {
		if err := client.ContentStore().Delete(ctx, d); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if err := client.NamespaceService().Delete(ctx, ns); err != nil {
		errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
	}
	return errors.Join(errs...)
}

// removeSnapshots removes every snapshot, leaves first.
func removeSnapshots(ctx context.Context, sn snapshots.Snapshotter) error {
	for {
		var all []snapshots.Info
		if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			all = append(all, info)
			return nil
		}); err != nil {
			return err
		}
		if len(all) == 0 {
			return nil
		}
		parents := map[string]bool{}
		for _, info := range all {
			parents[info.Parent] = true
		}
		removed := 0
		var errs []error
		for _, info := range all {
			if parents[info.Name] {
				continue
			}
			if err := sn.Remove(ctx, info.Name); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove snapshot %s: %w", info.Name, err))
				continue
			}
			removed++
		}
		if removed == 0 {
			return errors.Join(append(errs, fmt.Errorf("%d snapshots left", len(all)))...)
		}
	}
}

// killLeftovers SIGKILLs, by pid, the processes this run started and that
// outlived it: container processes in the run's cgroups and shims serving
// the run's namespaces on its containerd.
func killLeftovers(ns, address string) error {
	pids := map[int]bool{}
	for _, dir := range cgroupDirs(ns) {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids[pid] = true
				}
			}
			return nil
		})
	}
	if address != "" {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			args := strings.Split(string(b), "\x00")
			if !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
				continue
			}
			var shimNS, shimAddr string
			for i := 0; i+1 < len(args); i++ {
				switch args[i] {
				case "-namespace":
					shimNS = args[i+1]
				case "-address":
					shimAddr = args[i+1]
				}
			}
			if shimAddr == address && (shimNS == ns || strings.HasPrefix(shimNS, ns+"-")) {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				pids[pid] = true
			}
		}
	}
	var errs []error
	for pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill leftover pid %d: %w", pid, err))
		}
	}
	if len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "integration teardown: killed %d leftover processes\n", len(pids))
	}
	return errors.Join(errs...)
}

// cgroupDirs lists the run's cgroup directories in every hierarchy:
// /sys/fs/cgroup/*/<ns> and /sys/fs/cgroup/*/<ns>-*, where runc puts a
// container of namespace ns by default (and the plain /sys/fs/cgroup/<ns>
// on a cgroup v2 host).
func cgroupDirs(ns string) []string {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/" + ns, "/sys/fs/cgroup/*/" + ns,
		"/sys/fs/cgroup/" + ns + "-*", "/sys/fs/cgroup/*/" + ns + "-*"} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	return dirs
}

// removeCgroups removes the run's cgroups depth-first, retrying while
// killed processes are still leaving them.
func removeCgroups(ns string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, top := range cgroupDirs(ns) {
			var dirs []string
			_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- { // WalkDir lists parents first
				if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
					left = append(left, dirs[i])
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups not removable: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
