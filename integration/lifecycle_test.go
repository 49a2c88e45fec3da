package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/namespaces"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

func TestDeleteCleansUpCompletely(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "full.toml", `name = "full"
grace_period = "2s"
[[volume]]
name = "data"
type = "empty"
[[volume]]
name = "scratch"
type = "tmpfs"
size = "8MiB"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--log-every", "100ms"]
[[container.mount]]
volume = "data"
path = "/data"
[[container.mount]]
volume = "scratch"
path = "/scratch"
[container.resources]
memory = "64MiB"
[[container]]
name = "side"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`)
	st := waitGroup(t, a, "full", 30*time.Second, "running", allRunning)
	if len(mountsBelow(t, filepath.Join(a.RunDir, "groups", "full"))) < 2 {
		t.Fatalf("expected the netns and tmpfs mounts under the run dir")
	}
	ids := []string{supervisor.ContainerID("full", "app"), supervisor.ContainerID("full", "side")}

	if err := a.api().Delete(context.Background(), "full", true); err != nil {
		t.Fatal(err)
	}
	ctx := namespaces.WithNamespace(context.Background(), env.Namespace)
	for _, id := range ids {
		if _, err := env.Client.LoadContainer(ctx, id); err == nil {
			t.Errorf("container %s still exists", id)
		}
		if _, err := env.Client.SnapshotService("overlayfs").Stat(ctx, id); err == nil {
			t.Errorf("snapshot %s still exists", id)
		}
		if p := cgroupPaths(env.Namespace, id); len(p) > 0 {
			t.Errorf("cgroups of %s still exist: %v", id, p)
		}
	}
	if m := mountsBelow(t, a.RunDir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := os.Stat(st.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns pin %s still exists (err %v)", st.NetNS, err)
	}
	for _, d := range []string{filepath.Join(a.StateDir, "volumes", "full"), filepath.Join(a.RunDir, "groups", "full"), filepath.Join(a.StateDir, "logs", "full")} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists", d)
		}
	}
	if _, err := a.api().Get(context.Background(), "full"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("get after delete: %v, want not found", err)
	}
}

var tickRE = regexp.MustCompile(`^tick (\d+)$`)

// TestAgentKill9KeepsContainersAndLogs kills agentd with SIGKILL while a
// group runs and logs, starts it again, and checks that the same tasks run
// on and that the log has every line, also those written while agentd was
// down.
func TestAgentKill9KeepsContainersAndLogs(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "ticker.toml", `name = "ticker"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--log-every", "20ms"]
[[container]]
name = "side"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`)
	before := waitGroup(t, a, "ticker", 30*time.Second, "running", allRunning)
	startTimes := map[string]time.Time{}
	for _, c := range before.Containers {
		startTimes[c.Name] = c.StartedAt
	}

	for i := 0; i < 3; i++ {
		a.Kill()
		time.Sleep(300 * time.Millisecond) // the app logs ~15 lines meanwhile
		a.start()
		after := waitGroup(t, a, "ticker", 20*time.Second, "reattached", allRunning)
		if !reflect.DeepEqual(pids(after), pids(before)) {
			t.Fatalf("restart %d: pids %v, want %v (nothing may be restarted)", i, pids(after), pids(before))
		}
		for _, c := range after.Containers {
			if d := c.StartedAt.Sub(startTimes[c.Name]); d > time.Second || d < -time.Second {
				t.Errorf("restart %d: %s started at %s, before at %s", i, c.Name, c.StartedAt, startTimes[c.Name])
			}
		}
		if after.Restarts != 0 {
			t.Errorf("restart %d: %d container restarts", i, after.Restarts)
		}
	}

	// The stdout ticks are numbered: no number may be missing.
	var ticks []int
	err := a.api().Logs(context.Background(), "ticker", api.LogOptions{Container: "app", Tail: -1}, func(e api.LogEntry) error {
		if m := tickRE.FindStringSubmatch(strings.TrimSpace(e.Line)); m != nil && e.Stream == "stdout" {
			n, _ := strconv.Atoi(m[1])
			ticks = append(ticks, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ticks) < 40 {
		t.Fatalf("only %d tick lines logged", len(ticks))
	}
	for i := 1; i < len(ticks); i++ {
		if ticks[i] != ticks[i-1]+1 {
			t.Fatalf("log gap: tick %d followed by %d", ticks[i-1], ticks[i])
		}
	}
	t.Logf("%d contiguous log lines across 3 agent kills", len(ticks))
}

func TestLogsTailFollowAndSince(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "talk.toml", `name = "talk"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep", "--log-every", "50ms"]
`)
	waitGroup(t, a, "talk", 30*time.Second, "running", allRunning)
	time.Sleep(600 * time.Millisecond)
	var got []api.LogEntry
	if err := a.api().Logs(context.Background(), "talk", api.LogOptions{Tail: 3}, func(e api.LogEntry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("tail 3 returned %d lines", len(got))
	}
	// Every 10th tick also goes to stderr: both streams are kept.
	streams := map[string]bool{}
	_ = a.api().Logs(context.Background(), "talk", api.LogOptions{Tail: -1}, func(e api.LogEntry) error {
		streams[e.Stream] = true
		return nil
	})
	if !streams["stdout"] || !streams["stderr"] {
		t.Errorf("streams seen: %v, want stdout and stderr", streams)
	}
	// Follow delivers lines written after the call.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	since := time.Now()
	n := 0
	err := a.api().Logs(ctx, "talk", api.LogOptions{Follow: true, Tail: 0}, func(e api.LogEntry) error {
		if e.Time.After(since) {
			n++
		}
		if n >= 5 {
			cancel()
		}
		return nil
	})
	if n < 5 {
		t.Errorf("follow delivered %d new lines (err %v)", n, err)
	}
}
