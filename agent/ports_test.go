package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

// portGroup is a group file publishing ports (line 2).
func portGroup(name string, ports ...string) string {
	q := make([]string, len(ports))
	for i, p := range ports {
		q[i] = `"` + p + `"`
	}
	return "name = \"" + name + "\"\nports = [" + strings.Join(q, ", ") + "]\n[[container]]\nname = \"app\"\nimage = \"berth.local/busybox:latest\"\n"
}

// upsertFile makes a group defined by content as if from source.
func upsertFile(t *testing.T, a *Agent, source, content string) {
	t.Helper()
	spec, err := api.Decode(source, []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	a.upsertLocked(spec, source)
}

func TestApplyRefusesAPublishedPort(t *testing.T) {
	a := testAgent(t)
	upsertFile(t, a, SourceAPI, portGroup("web", "8080:80", "127.0.0.1:9000:9000/udp"))
	tests := []struct {
		name  string
		files []api.ApplyFile
		want  []string // one error each, in order; none: accepted
	}{
		{"same port", []api.ApplyFile{{Name: "api.toml", Content: portGroup("api", "9001:90", "8080:80")}},
			[]string{`api.toml:2:21: group "api": ports[1]: port 8080/tcp is already published by group "web"; pick another host port, or change or delete that group first`}},
		{"one address of a port published on every address", []api.ApplyFile{{Name: "api.toml", Content: portGroup("api", "127.0.0.1:8080:80")}},
			[]string{`ports[0]: port 127.0.0.1:8080/tcp is already published by group "web" (as 8080/tcp)`}},
		{"every address of a port published on one", []api.ApplyFile{{Name: "api.toml", Content: portGroup("api", "9000:9000/udp")}},
			[]string{`ports[0]: port 9000/udp is already published by group "web" (as 127.0.0.1:9000/udp)`}},
		{"two groups of one apply", []api.ApplyFile{
			{Name: "a.toml", Content: portGroup("a", "7000:70")}, {Name: "b.toml", Content: portGroup("b", "7000:71")}},
			[]string{`a.toml:2:10: group "a": ports[0]: port 7000/tcp is already published by group "b"`,
				`b.toml:2:10: group "b": ports[0]: port 7000/tcp is already published by group "a"`}},
		{"other protocol", []api.ApplyFile{{Name: "api.toml", Content: portGroup("api", "8080:80/udp")}}, nil},
		{"other address", []api.ApplyFile{{Name: "api.toml", Content: portGroup("api", "127.0.0.2:9000:9000/udp")}}, nil},
		{"the group itself, again", []api.ApplyFile{{Name: "web.toml", Content: portGroup("web", "8080:81")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := a.Apply(api.ApplyRequest{DryRun: true, Files: tt.files})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var list api.ErrorList
			if !errors.As(err, &list) || !errors.Is(err, api.ErrConflict) {
				t.Fatalf("err = %v (res %v), want a conflict with an ErrorList", err, res)
			}
			if len(list) != len(tt.want) {
				t.Fatalf("%d errors, want %d:\n%v", len(list), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(list[i].Error(), w) {
					t.Errorf("error %d:\n%s\nwant it to contain\n%s", i, list[i], w)
				}
			}
		})
	}
	if len(a.groups) != 1 {
		t.Errorf("groups after refused applies: %d, want 1", len(a.groups))
	}
}

func TestGroupFileRefusedForAPublishedPort(t *testing.T) {
	a := testAgent(t)
	dir := t.TempDir()
	webFile := filepath.Join(dir, "web.toml")
	if err := os.WriteFile(webFile, []byte(portGroup("web", "8080:80")), 0o644); err != nil {
		t.Fatal(err)
	}
	upsertFile(t, a, webFile, portGroup("web", "8080:80"))

	apiFile := filepath.Join(dir, "api.toml")
	content := portGroup("api", "8080:80")
	if err := os.WriteFile(apiFile, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, _ := api.Decode(apiFile, []byte(content))
	err := a.checkFilePortsLocked(spec, apiFile)
	want := apiFile + `:2:10: group "api": ports[0]: port 8080/tcp is already published by group "web"`
	if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, api.ErrInvalid) {
		t.Errorf("err = %v\nwant %s…", err, want)
	}

	// The file of web is removed in the same change: its ports are free.
	if err := os.Remove(webFile); err != nil {
		t.Fatal(err)
	}
	if err := a.checkFilePortsLocked(spec, apiFile); err != nil {
		t.Errorf("port of a group whose file is gone: %v", err)
	}
}
