package agent

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestDefaultConfigValidates(t *testing.T) {
	c := DefaultConfig()
	c.NodeName = "node-1"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.NodeName = "Bad_Name"
	c.StateDir = "relative"
	c.LogLevel = "loud"
	c.Containerd.Managed = "sometimes"
	c.Logs.MaxFiles = 0
	err := c.Validate()
	if !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	for _, want := range []string{"node_name", "state_dir", "log_level", "containerd.managed", "logs.max_files"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

func TestLoadConfigFileReportsPositionAndUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"syntax", "node_name = \"a\"\nstate_dir = \n", "agent.toml:2:"},
		{"unknown key", "node_name = \"a\"\nnode_nmae = \"b\"\n", "unknown keys node_nmae"},
		{"bad size", "[logs]\nmax_size = \"lots\"\n", "agent.toml:2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "agent.toml")
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			c := DefaultConfig()
			err := LoadConfigFile(p, &c)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, api.ErrInvalid) {
				t.Errorf("err = %v, want it to contain %q and be ErrInvalid", err, tt.want)
			}
		})
	}
}

func TestEventsKeepsBoundedHistoryAndDropsSlowSubscribers(t *testing.T) {
	e := NewEvents(3)
	for i := 0; i < 5; i++ {
		e.Publish(api.Event{Group: []string{"a", "b"}[i%2], Reason: "R"})
	}
	h := e.History("")
	if len(h) != 3 || h[0].Seq != 3 || h[2].Seq != 5 {
		t.Fatalf("history = %+v, want seq 3..5", h)
	}
	if got := e.History("a"); len(got) != 2 || got[0].Seq != 3 || got[1].Seq != 5 {
		t.Errorf("history of a = %+v", got)
	}
	_, ch, cancel := e.Subscribe("")
	defer cancel()
	for i := 0; i < 300; i++ { // more than the subscriber's buffer, never read
		e.Publish(api.Event{Reason: "flood"})
	}
	n := 0
	for range ch {
		n++
	}
	if n == 0 || n > 256 {
		t.Errorf("slow subscriber got %d events before being dropped", n)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if got, err := parseSince("10m", now); err != nil || !got.Equal(now.Add(-10*time.Minute)) {
		t.Errorf("10m → %v, %v", got, err)
	}
	if got, err := parseSince("2026-01-02T00:00:00Z", now); err != nil || got.Hour() != 0 {
		t.Errorf("RFC3339 → %v, %v", got, err)
	}
	if _, err := parseSince("yesterday", now); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("yesterday → %v, want ErrInvalid", err)
	}
}

func testAgent(t *testing.T) *Agent {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = "n1"
	cfg.StateDir = t.TempDir()
	return New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
}

const okGroup = `name = "ok"
[[container]]
name = "app"
image = "berth.local/busybox:latest"
`

func TestApplyIsAllOrNothing(t *testing.T) {
	a := testAgent(t)
	_, err := a.Apply(api.ApplyRequest{Files: []api.ApplyFile{
		{Name: "ok.toml", Content: okGroup},
		{Name: "bad.toml", Content: "name = \"bad\"\n[[container]]\nname = \"x\"\nimage = \"\"\n"},
	}})
	var list api.ErrorList
	if !errors.As(err, &list) || !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("err = %v, want an ErrorList", err)
	}
	if !strings.Contains(err.Error(), "bad.toml:4:") {
		t.Errorf("error has no position in bad.toml: %v", err)
	}
	if len(a.groups) != 0 {
		t.Errorf("groups applied despite an invalid file: %v", a.groups)
	}
	if files, _ := filepath.Glob(filepath.Join(a.appliedDir(), "*")); len(files) != 0 {
		t.Errorf("files persisted despite an invalid file: %v", files)
	}
}

func TestApplyRefusesDuplicatesAndUnknownPriorityClass(t *testing.T) {
	a := testAgent(t)
	_, err := a.Apply(api.ApplyRequest{Files: []api.ApplyFile{{Name: "a.toml", Content: okGroup}, {Name: "b.toml", Content: okGroup}}})
	if err == nil || !strings.Contains(err.Error(), "also defined in a.toml") {
		t.Errorf("duplicate group: err = %v", err)
	}
	_, err = a.Apply(api.ApplyRequest{Files: []api.ApplyFile{{Name: "p.toml", Content: "priority = \"urgent\"\n" + okGroup}}})
	if err == nil || !strings.Contains(err.Error(), `unknown priority class "urgent"`) {
		t.Errorf("unknown class: err = %v", err)
	}
}

func TestApplyDryRunAndConflictWithFileGroup(t *testing.T) {
	a := testAgent(t)
	res, err := a.Apply(api.ApplyRequest{DryRun: true, Files: []api.ApplyFile{{Name: "ok.toml", Content: okGroup}}})
	if err != nil || len(res) != 1 || res[0].Action != api.ActionCreated {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	if len(a.groups) != 0 {
		t.Errorf("dry run applied something")
	}
	spec, err := api.Decode("ok.toml", []byte(okGroup))
	if err != nil {
		t.Fatal(err)
	}
	a.upsertLocked(spec, "/etc/berth/groups.d/ok.toml")
	_, err = a.Apply(api.ApplyRequest{Files: []api.ApplyFile{{Name: "ok.toml", Content: okGroup}}})
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "edit that file instead") {
		t.Errorf("apply over a file-defined group: err = %v, want a conflict", err)
	}
}

func TestUpsertBumpsGenerationOnlyOnChange(t *testing.T) {
	a := testAgent(t)
	spec, _ := api.Decode("ok.toml", []byte(okGroup))
	if act, gen := a.upsertLocked(spec, SourceAPI); act != api.ActionCreated || gen != 1 {
		t.Fatalf("first: %s %d", act, gen)
	}
	same, _ := api.Decode("ok.toml", []byte(okGroup))
	if act, gen := a.upsertLocked(same, SourceAPI); act != api.ActionUnchanged || gen != 1 {
		t.Errorf("same spec: %s %d", act, gen)
	}
	changed, _ := api.Decode("ok.toml", []byte(okGroup+"args = [\"x\"]\n"))
	if act, gen := a.upsertLocked(changed, SourceAPI); act != api.ActionUpdated || gen != 2 {
		t.Errorf("changed spec: %s %d", act, gen)
	}
}
