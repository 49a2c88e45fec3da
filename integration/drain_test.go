package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// drainGroup is a group whose app records its SIGTERM in a shared file.
// Its readiness says the handler is installed: a SIGTERM that arrives
// before (the task runs, the Go runtime has not set up its handler yet)
// would kill it without a record.
func drainGroup(name string, prio int, shared string) string {
	return fmt.Sprintf(`name = %q
priority = %d
grace_period = "5s"
[[volume]]
name = "shared"
type = "host"
path = %q
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--term-delay", "300ms", "--on-term-append", "/shared/term", "--name", %q]
readiness = { http = { path = "/ready", port = 8080 }, period = "100ms", timeout = "90ms" }
[[container.mount]]
volume = "shared"
path = "/shared"
`, name, prio, shared, name)
}

// termOrder reads the names and times from the shared term file.
func termOrder(t *testing.T, path string) ([]string, []time.Time) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var times []time.Time
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line) // "<name> term <unix-nanos>"
		if len(f) != 3 {
			continue
		}
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		names = append(names, f[0])
		times = append(times, time.Unix(0, ns))
	}
	return names, times
}

func TestDrainStopsGroupsInReversePriorityOrder(t *testing.T) {
	shared := t.TempDir()
	a := startAgent(t, agentOpts{Flags: map[string]string{"--host-path-prefix": shared}})
	for _, g := range []struct {
		name string
		prio int
	}{{"high", 10}, {"low", -5}, {"mid", 0}} {
		applyTOML(t, a, g.name+".toml", drainGroup(g.name, g.prio, shared))
	}
	for _, g := range []string{"high", "low", "mid"} {
		waitGroup(t, a, g, 30*time.Second, "running and ready", func(st *api.GroupStatus) bool { return allRunning(st) && st.Ready })
	}
	ns, err := a.api().Drain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !ns.Drained {
		t.Errorf("node status after drain: %+v", ns)
	}
	names, times := termOrder(t, filepath.Join(shared, "term"))
	if strings.Join(names, ",") != "low,mid,high" {
		t.Fatalf("SIGTERM order %v, want low,mid,high", names)
	}
	// Each level starts only after the one before has stopped (300ms handlers).
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d < 250*time.Millisecond {
			t.Errorf("%s got SIGTERM %s after %s: the level before had not stopped yet", names[i], d, names[i-1])
		}
	}
	for _, g := range []string{"high", "low", "mid"} {
		if st := getGroup(t, a, g); st.Running() != 0 || st.State != api.GroupStopped || st.Reason != "Drained" {
			t.Errorf("%s: state %s (%s), %d running", g, st.State, st.Reason, st.Running())
		}
	}
	// Drained survives an agent restart, and undrain brings the groups back.
	a.Restart()
	if st := getGroup(t, a, "low"); st.Running() != 0 {
		t.Errorf("a drained node started low again after a restart")
	}
	if _, err := a.api().Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"high", "low", "mid"} {
		waitGroup(t, a, g, 30*time.Second, "running after undrain", allRunning)
	}
}

func TestDrainOnShutdownStopsGroups(t *testing.T) {
	a := startAgent(t, agentOpts{Args: []string{"--drain-on-shutdown"}})
	applyTOML(t, a, "bye.toml", `name = "bye"
grace_period = "2s"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep"]
`)
	st := waitGroup(t, a, "bye", 30*time.Second, "running and ready", func(st *api.GroupStatus) bool { return allRunning(st) && st.Ready })
	pid := int(st.Containers[0].PID)
	a.Stop()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("container pid %d still runs after agentd stopped with --drain-on-shutdown", pid)
	}
}
