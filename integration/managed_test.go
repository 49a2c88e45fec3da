package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/agent"
	"github.com/berth-project/berth/api"
)

// TestAgentStartsManagedContainerdAndImportsImages runs agentd where no
// containerd answers: it must start its own (as make run relies on), take
// images through `agentctl image import`, and run a group on them.
func TestAgentStartsManagedContainerdAndImportsImages(t *testing.T) {
	env.needAgentctl(t)
	ns := env.Namespace + "-managed"
	a := startAgent(t, agentOpts{Namespace: ns, KeepWorkload: true, Flags: map[string]string{
		"--containerd-address": filepath.Join(env.TempDir, "nothing-here.sock"),
		"--managed-containerd": "auto",
	}})
	pidFile := agent.ManagedPIDFile(a.RunDir)
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("no managed containerd pid file: %v\n%s", err, a.log())
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		waitFor(t, 20*time.Second, "managed containerd exit", func() (bool, error) {
			return syscall.Kill(pid, 0) != nil, nil
		})
	})
	ctx := context.Background()
	v, err := a.api().Version(ctx)
	if err != nil || !v.ContainerdOK {
		t.Fatalf("version: %+v, %v", v, err)
	}

	out, err := exec.Command(env.AgentctlBin, "--socket", a.Socket, "image", "import", env.BusyboxArchive).CombinedOutput()
	if err != nil {
		t.Fatalf("agentctl image import: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), env.ImageBusybox) {
		t.Errorf("import output does not name %s:\n%s", env.ImageBusybox, out)
	}
	imgs, err := a.api().Images(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].Name != env.ImageBusybox {
		t.Fatalf("images after import: %+v, %v", imgs, err)
	}

	applyTOML(t, a, "bb.toml", `name = "bb"
grace_period = "1s"
[[container]]
name = "sh"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`)
	waitGroup(t, a, "bb", 30*time.Second, "running", allRunning)
	if err := a.api().Delete(ctx, "bb", true); err != nil {
		t.Fatal(err)
	}
	// A group on an image that is not there waits in BackOff with a reason
	// that says what to do.
	applyTOML(t, a, "missing.toml", `name = "missing"
[[container]]
name = "x"
image = "berth.local/nope:latest"
`)
	st := waitGroup(t, a, "missing", 30*time.Second, "backoff", func(s *api.GroupStatus) bool { return s.State == api.GroupBackOff })
	if st.Reason != "ImageUnavailable" || !strings.Contains(st.Message, "agentctl image import") {
		t.Errorf("missing image: reason %q message %q", st.Reason, st.Message)
	}
	if err := a.api().Delete(ctx, "missing", true); err != nil {
		t.Fatal(err)
	}
}
