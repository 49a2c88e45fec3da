//go:build linux

package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/contrib/imagebuild"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

// execTestImage is the busybox image the exec test imports.
const execTestImage = "berth.local/busybox:exec-test"

// needContainerdForExec skips the test when this machine cannot run a
// private containerd with containers, or fails it when CI=true.
func needContainerdForExec(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" in PATH")
		}
	}
	if _, err := os.Stat(imagebuild.DefaultBusybox); err != nil {
		missing = append(missing, imagebuild.DefaultBusybox+" (busybox-static)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
	}
	t.Skip(msg)
}

// startExecTestContainer starts a private containerd in a temp dir and,
// in a namespace of its own, a busybox container that sleeps. Everything
// is removed when the test ends.
func startExecTestContainer(t *testing.T) (*containerdRuntime, string) {
	t.Helper()
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	ns := "berth-exec-" + hex.EncodeToString(suffix)
	dir, err := os.MkdirTemp("", ns+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupExecTest(t, ns, dir) })

	cfg := containerdproc.DefaultConfig(filepath.Join(dir, "cd"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	daemon, err := containerdproc.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := daemon.Stop(10 * time.Second); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})
	client, err := containerd.New(cfg.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })

	img, err := imagebuild.Busybox(imagebuild.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := imagebuild.WriteOCIArchive(img, execTestImage, &archive); err != nil {
		t.Fatal(err)
	}
	nctx := namespaces.WithNamespace(ctx, ns)
	imgs, err := client.Import(nctx, &archive)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 {
		t.Fatalf("import created %d images, want 1", len(imgs))
	}
	if err := containerd.NewImage(client, imgs[0]).Unpack(nctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}

	rt := &containerdRuntime{client: client, cfg: ContainerdConfig{
		Namespace: ns, Snapshotter: "overlayfs", Runtime: "io.containerd.runc.v2",
	}}
	const id = "exec-test"
	err = rt.CreateContainer(ctx, &ContainerConfig{
		ID:        id,
		Group:     "exec",
		Spec:      &api.ContainerSpec{Name: "sleeper", Image: imgs[0].Name, Command: []string{"sleep", "3600"}},
		Hostname:  "exec",
		ShimGroup: id,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.DeleteContainer(ctx, id); err != nil {
			t.Errorf("delete container: %v", err)
		}
	})
	if _, _, err := rt.StartTask(ctx, id); err != nil {
		t.Fatal(err)
	}
	return rt, id
}

// cleanupExecTest removes what containerd and runc leave outside the temp
// dir (shims, runc state, cgroups), then the temp dir.
func cleanupExecTest(t *testing.T, ns, dir string) {
	for _, pattern := range []string{"/sys/fs/cgroup/" + ns, "/sys/fs/cgroup/*/" + ns} {
		tops, _ := filepath.Glob(pattern)
		for _, top := range tops {
			var dirs []string
			_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- { // children first
				if err := removeCgroupDir(dirs[i]); err != nil {
					t.Errorf("cgroup %s: %v", dirs[i], err)
				}
			}
		}
	}
	if err := os.RemoveAll(filepath.Join("/run/containerd/runc", ns)); err != nil {
		t.Errorf("runc state: %v", err)
	}
	if err := unmountUnder(dir); err != nil {
		t.Errorf("unmount: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("temp dir: %v", err)
	}
}

// removeCgroupDir removes an empty cgroup, waiting a little for killed
// processes to leave it.
func removeCgroupDir(path string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func TestExecRunsInContainer(t *testing.T) {
	needContainerdForExec(t)
	rt, id := startExecTestContainer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("exit code and output", func(t *testing.T) {
		code, out, err := rt.Exec(ctx, id, []string{"sh", "-c", "echo hi; exit 3"})
		if err != nil || code != 3 || out != "hi\n" {
			t.Fatalf("Exec = %d, %q, %v; want 3, %q, nil", code, out, err, "hi\n")
		}
	})
	t.Run("stderr is captured with stdout", func(t *testing.T) {
		code, out, err := rt.Exec(ctx, id, []string{"sh", "-c", "echo to-out; echo to-err >&2"})
		if err != nil || code != 0 || !strings.Contains(out, "to-out\n") || !strings.Contains(out, "to-err\n") {
			t.Fatalf("Exec = %d, %q, %v; want 0, both lines, nil", code, out, err)
		}
	})
	t.Run("output is capped", func(t *testing.T) {
		code, out, err := rt.Exec(ctx, id, []string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"})
		if err != nil || code != 0 || out != strings.Repeat("x", execOutputLimit) {
			t.Fatalf("Exec = %d, %d bytes, %v; want 0, %d bytes of x, nil", code, len(out), err, execOutputLimit)
		}
	})
	t.Run("end of ctx kills the process", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		code, _, err := rt.Exec(short, id, []string{"sleep", "600"})
		if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
			t.Fatalf("Exec = %d, %v; want -1 and context.DeadlineExceeded", code, err)
		}
		// The container still runs (its sleep 3600 is listed); the killed
		// sleep 600 is gone.
		code, out, err := rt.Exec(ctx, id, []string{"ps", "-o", "pid,args"})
		if err != nil || code != 0 || !strings.Contains(out, "sleep 3600") || strings.Contains(out, "sleep 600\n") {
			t.Fatalf("after the kill: Exec = %d, %q, %v; want sleep 3600 listed and no sleep 600", code, out, err)
		}
	})
	t.Run("missing container", func(t *testing.T) {
		if _, _, err := rt.Exec(ctx, "no-such", []string{"true"}); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("err = %v, want api.ErrNotFound", err)
		}
	})
}
