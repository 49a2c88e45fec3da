package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

const webFile = `name = "web"
grace_period = "5s"

[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
env = { VERSION = "one" }
`

func writeGroupFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInvalidFileReportsPositionAndChangesNothing(t *testing.T) {
	a := startAgent(t, agentOpts{})
	path := writeGroupFile(t, a.GroupsDir, "web.toml", webFile)
	before := waitGroup(t, a, "web", 30*time.Second, "running", allRunning)

	// Line 8, column 1: an unknown key inside the container table.
	broken := webFile + "colour = \"blue\"\n"
	writeGroupFile(t, a.GroupsDir, "web.toml", broken)
	st := waitGroup(t, a, "web", 10*time.Second, "spec error reported", func(s *api.GroupStatus) bool { return s.SpecError != "" })
	if !strings.Contains(st.SpecError, path+":9:1") {
		t.Errorf("spec error %q does not name %s:9:1", st.SpecError, path)
	}
	if !hasEvent(st, "SpecInvalid") {
		t.Errorf("no SpecInvalid event")
	}
	if st.Generation != before.Generation || !reflect.DeepEqual(pids(st), pids(before)) || !allRunning(st) {
		t.Errorf("an invalid file changed the running group: generation %d→%d, pids %v→%v, state %s",
			before.Generation, st.Generation, pids(before), pids(st), st.State)
	}

	// The same mistake through agentctl apply: exit code 3, file:line:col,
	// and nothing applied.
	env.needAgentctl(t)
	other := filepath.Join(t.TempDir(), "other.toml")
	if err := os.WriteFile(other, []byte(strings.Replace(broken, `"web"`, `"other"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(env.AgentctlBin, "--socket", a.Socket, "apply", "-f", other).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("agentctl apply of an invalid file: err %v, want exit code 3\n%s", err, out)
	}
	if !strings.Contains(string(out), other+":9:1") {
		t.Errorf("agentctl output does not name %s:9:1:\n%s", other, out)
	}
	if _, err := a.api().Get(context.Background(), "other"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("invalid group was applied: get err = %v", err)
	}

	// Fixing the file clears the error.
	writeGroupFile(t, a.GroupsDir, "web.toml", webFile)
	waitGroup(t, a, "web", 10*time.Second, "spec error cleared", func(s *api.GroupStatus) bool { return s.SpecError == "" })
}

func TestEditingFileReplacesGroup(t *testing.T) {
	a := startAgent(t, agentOpts{})
	writeGroupFile(t, a.GroupsDir, "web.toml", webFile)
	before := waitGroup(t, a, "web", 30*time.Second, "running", allRunning)
	waitHTTP(t, before.NetNS, "http://127.0.0.1:8080/health")
	if _, body := nsDo(t, before.NetNS, "GET", "http://127.0.0.1:8080/env?k=VERSION", ""); strings.TrimSpace(body) != "one" {
		t.Fatalf("VERSION = %q, want one", body)
	}

	writeGroupFile(t, a.GroupsDir, "web.toml", strings.Replace(webFile, `"one"`, `"two"`, 1))
	after := waitGroup(t, a, "web", 30*time.Second, "replaced and running", func(s *api.GroupStatus) bool {
		return s.Generation == before.Generation+1 && allRunning(s) && s.Containers[0].PID != before.Containers[0].PID
	})
	waitHTTP(t, after.NetNS, "http://127.0.0.1:8080/health")
	if _, body := nsDo(t, after.NetNS, "GET", "http://127.0.0.1:8080/env?k=VERSION", ""); strings.TrimSpace(body) != "two" {
		t.Errorf("after the edit VERSION = %q, want two", body)
	}
	if !hasEvent(after, "Replacing") {
		t.Errorf("no Replacing event")
	}

	// Removing the file removes the group.
	if err := os.Remove(filepath.Join(a.GroupsDir, "web.toml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "group web gone", func() (bool, error) {
		_, err := a.api().Get(context.Background(), "web")
		return errors.Is(err, api.ErrNotFound), err
	})
}
