package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

// writeFiles writes name → content under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestApplySendsEveryFileInOneRequest(t *testing.T) {
	f := newFakeAgent(t)
	dir := t.TempDir()
	groups := filepath.Join(dir, "groups")
	os.Mkdir(groups, 0o755)
	os.Mkdir(filepath.Join(groups, "sub.toml"), 0o755) // a directory: skipped
	writeFiles(t, groups, map[string]string{"b.toml": "name = \"b\"\n", "a.toml": "name = \"a\"\n", "README": "not a group"})
	writeFiles(t, dir, map[string]string{"c.toml": "name = \"c\"\n"})

	r := f.run("name = \"d\"\n", "apply",
		"-f", groups, "-f", filepath.Join(dir, "c.toml"), "-f", "-", "-f", filepath.Join(groups, "a.toml"))
	wantCode(t, r, exitOK)

	if len(f.applied) != 1 {
		t.Fatalf("%d apply requests, want 1", len(f.applied))
	}
	req := f.applied[0]
	want := []api.ApplyFile{
		{Name: filepath.Join(groups, "a.toml"), Content: "name = \"a\"\n"},
		{Name: filepath.Join(groups, "b.toml"), Content: "name = \"b\"\n"},
		{Name: filepath.Join(dir, "c.toml"), Content: "name = \"c\"\n"},
		{Name: "<stdin>", Content: "name = \"d\"\n"},
	}
	if len(req.Files) != len(want) {
		t.Fatalf("files = %+v, want %+v", req.Files, want)
	}
	for i := range want {
		if req.Files[i] != want[i] {
			t.Errorf("file %d = %+v, want %+v", i, req.Files[i], want[i])
		}
	}
	if req.DryRun {
		t.Error("dry run without --dry-run")
	}
	wantOut := "group/a created\ngroup/b unchanged\ngroup/c created\ngroup/<stdin> unchanged\n"
	if r.stdout != wantOut {
		t.Errorf("stdout = %q, want %q", r.stdout, wantOut)
	}
}

func TestApplyDryRun(t *testing.T) {
	f := newFakeAgent(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"web.toml": "name = \"web\"\n"})
	r := f.run("", "apply", "--dry-run", "-f", filepath.Join(dir, "web.toml"))
	wantCode(t, r, exitOK)
	if !f.applied[0].DryRun {
		t.Error("request is not a dry run")
	}
	if r.stdout != "group/web created (dry run)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestApplyJSONIsValid(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("name = \"web\"\n", "apply", "-f", "-", "-o", "json")
	wantCode(t, r, exitOK)
	var res []api.ApplyResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != 1 {
		t.Fatalf("stdout is not the results as JSON (%v):\n%s", err, r.stdout)
	}
}

func TestApplyInvalidPrintsEveryProblemAndExits3(t *testing.T) {
	f := newFakeAgent(t)
	f.applyErr = &api.ErrorBody{
		Error: "2 problems", Class: "invalid",
		Details: []api.FieldError{
			{File: "web.toml", Line: 4, Col: 10, Group: "web", Field: "priority", Message: `invalid priority "HIGH": use a number or a priority class name`},
			{File: "db.toml", Line: 9, Col: 3, Group: "db", Container: "pg", Field: "container[0].image", Message: "image is required"},
		},
	}
	r := f.run("x", "apply", "-f", "-")
	wantCode(t, r, exitInvalid)
	want := `web.toml:4:10: group "web": priority: invalid priority "HIGH": use a number or a priority class name
db.toml:9:3: group "db", container "pg": container[0].image: image is required
error: 2 problems in the group files; nothing was applied
`
	if r.stderr != want {
		t.Errorf("stderr =\n%s\nwant\n%s", r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
}

func TestApplyLocalProblems(t *testing.T) {
	f := newFakeAgent(t)
	empty := t.TempDir()
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"missing file", []string{"-f", filepath.Join(empty, "nope.toml")}, exitFailure, "no such file or directory"},
		{"directory without group files", []string{"-f", empty}, exitInvalid, "error: no *.toml files in directory " + empty},
		{"stdin twice", []string{"-f", "-", "-f", "-"}, exitUsage, "stdin can be read only once"},
		{"positional argument", []string{"web.toml"}, exitUsage, `unknown command "web.toml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.run("", append([]string{"apply"}, tt.args...)...)
			wantCode(t, r, tt.code)
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr = %q, want %q", r.stderr, tt.stderr)
			}
		})
	}
	if len(f.applied) != 0 {
		t.Errorf("sent %d apply requests after local problems", len(f.applied))
	}
}
