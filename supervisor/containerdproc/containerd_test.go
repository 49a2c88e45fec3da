package containerdproc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
)

// needRealContainerd returns the containerd binary, skipping the test when
// it cannot run here, or failing it when CI=true.
func needRealContainerd(t *testing.T) string {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		missing = append(missing, "containerd in PATH")
	}
	if len(missing) == 0 {
		return bin
	}
	msg := "needs " + strings.Join(missing, " and ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
	}
	t.Skip(msg)
	return ""
}

func TestStartRealContainerdAnswersAndStops(t *testing.T) {
	bin := needRealContainerd(t)
	dir, err := os.MkdirTemp("", "berth-cdproc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := DefaultConfig(dir)
	c.Binary = bin

	ctx := context.Background()
	start := time.Now()
	p, err := Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd pid %d answered after %s", p.PID(), time.Since(start).Round(time.Millisecond))

	client, err := containerd.New(c.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Version(ctx); err != nil {
		t.Fatalf("Version: %v", err)
	}
	// CRI is disabled, so its plugin must not be loaded.
	plugins, err := client.IntrospectionService().Plugins(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, pl := range plugins.Plugins {
		if pl.Type+"."+pl.ID == "io.containerd.grpc.v1.cri" && pl.InitErr == nil {
			t.Fatal("the CRI plugin is loaded; it should be disabled")
		}
	}
	if _, err := Start(ctx, c); err == nil || !strings.Contains(err.Error(), "already answers") {
		t.Fatalf("second Start on the same address = %v, want an already-answers error", err)
	}

	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if Answers(ctx, c.Address) {
		t.Fatal("containerd still answers after Stop")
	}
	if err := syscall.Kill(p.PID(), 0); err == nil {
		t.Fatalf("pid %d still exists after Stop", p.PID())
	}
	if _, err := os.Stat(filepath.Join(c.State, ConfigFile)); err != nil {
		t.Fatalf("config.toml not in state dir: %v", err)
	}
}
