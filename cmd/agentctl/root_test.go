package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExitCodes(t *testing.T) {
	f := newFakeAgent(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // a line stderr must contain
	}{
		{"unknown command is usage", []string{"frobnicate"}, exitUsage, `error: unknown command "frobnicate" for "agentctl"`},
		{"unknown flag is usage", []string{"get", "--frob"}, exitUsage, "error: unknown flag: --frob"},
		{"missing argument is usage", []string{"describe"}, exitUsage, "error: accepts 1 arg(s), received 0"},
		{"missing required flag is usage", []string{"apply"}, exitUsage, `error: required flag(s) "filename" not set`},
		{"bad output format is usage", []string{"get", "-o", "yaml"}, exitUsage, `error: invalid --output "yaml"`},
		{"bad flag value is usage", []string{"logs", "web", "--tail", "x"}, exitUsage, `invalid argument "x" for "--tail"`},
		{"unknown image subcommand is usage", []string{"image", "push"}, exitUsage, `error: unknown command "push" for "agentctl image"`},
		{"missing group is not found", []string{"get", "nope"}, exitNotFound, `error: group "nope" not found`},
		{"describe missing group is not found", []string{"describe", "nope"}, exitNotFound, `error: group "nope" not found`},
		{"logs of missing group is not found", []string{"logs", "nope"}, exitNotFound, `error: group "nope" not found`},
		{"unavailable class exits 5", []string{"image", "pull", "registry.down/x:1"}, exitUnavailable, "error: registry.down: connection refused"},
		{"internal error exits 1", []string{"stop", "broken"}, exitFailure, "error: containerd: task delete: exit status 1"},
		{"timeout exits 5", []string{"get", "slow", "--timeout", "50ms"}, exitUnavailable, "error: agentd did not answer within 50ms (--timeout)"},
		{"help is success", []string{"--help"}, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.run("", tt.args...)
			wantCode(t, r, tt.code)
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.stderr)
			}
			if tt.code == exitUsage && !strings.Contains(r.stderr, "--help' for usage.") {
				t.Errorf("usage error without a hint: %q", r.stderr)
			}
		})
	}
}

func TestNoSocketExits5AndSaysWhere(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	r := runAgentctl(context.Background(), nil, "", "--socket", sock, "get")
	wantCode(t, r, exitUnavailable)
	want := "error: cannot reach agentd at " + sock + ": is agentd running? ("
	if !strings.HasPrefix(r.stderr, want) {
		t.Errorf("stderr = %q, want prefix %q", r.stderr, want)
	}
}

func TestSocketDefaultsToEnvironment(t *testing.T) {
	f := newFakeAgent(t)
	t.Setenv(envSocket, f.sock)
	r := runAgentctl(context.Background(), nil, "", "get")
	wantCode(t, r, exitOK)
	if len(f.requestLog()) != 2 { // local groups, then cluster groups
		t.Errorf("agent at $%s saw %v", envSocket, f.requestLog())
	}
}

func TestVersion(t *testing.T) {
	old := version
	version = "v9.9.9"
	t.Cleanup(func() { version = old })

	t.Run("agent up", func(t *testing.T) {
		f := newFakeAgent(t)
		r := f.run("", "version")
		wantCode(t, r, exitOK)
		for _, want := range []string{"Client:      v9.9.9 (go", "Server:      1.4.0 (go1.26.0) on node node-1", "Containerd:  1.7.35"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
	})
	t.Run("agent down prints the client version and exits 5", func(t *testing.T) {
		r := runAgentctl(context.Background(), nil, "", "--socket", filepath.Join(t.TempDir(), "s"), "version")
		wantCode(t, r, exitUnavailable)
		if !strings.HasPrefix(r.stdout, "Client:      v9.9.9") || strings.Contains(r.stdout, "Server") {
			t.Errorf("stdout = %q", r.stdout)
		}
		if !strings.Contains(r.stderr, "error: cannot reach agentd") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})
	t.Run("client only never dials", func(t *testing.T) {
		r := runAgentctl(context.Background(), nil, "", "--socket", filepath.Join(t.TempDir(), "s"), "version", "--client")
		wantCode(t, r, exitOK)
	})
	t.Run("json", func(t *testing.T) {
		f := newFakeAgent(t)
		r := f.run("", "version", "-o", "json")
		wantCode(t, r, exitOK)
		var v versionOutput
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, r.stdout)
		}
		if v.Client.Version != "v9.9.9" || v.Server == nil || v.Server.Node != "node-1" {
			t.Errorf("decoded %+v", v)
		}
	})
}

func TestDeleteStopStart(t *testing.T) {
	tests := []struct {
		args    []string
		request string
		stdout  string
	}{
		{[]string{"delete", "web"}, "DELETE /v1/groups/web?wait=1", "group/web deleted\n"},
		{[]string{"delete", "web", "--wait=false"}, "DELETE /v1/groups/web", "group/web deleting\n"},
		{[]string{"stop", "web"}, "POST /v1/groups/web/stop?wait=1", "group/web stopped\n"},
		{[]string{"stop", "--wait=false", "web"}, "POST /v1/groups/web/stop", "group/web stopping\n"},
		{[]string{"start", "web"}, "POST /v1/groups/web/start", "group/web started\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f := newFakeAgent(t)
			r := f.run("", tt.args...)
			wantCode(t, r, exitOK)
			if got := f.requestLog(); !reflect.DeepEqual(got, []string{tt.request}) {
				t.Errorf("requests = %q, want %q", got, tt.request)
			}
			if r.stdout != tt.stdout {
				t.Errorf("stdout = %q, want %q", r.stdout, tt.stdout)
			}
		})
	}
}

func TestDeleteGoesOnPastAMissingGroup(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "delete", "nope", "web")
	wantCode(t, r, exitNotFound)
	if r.stdout != "group/web deleted\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if r.stderr != "error: group \"nope\" not found\n" {
		t.Errorf("stderr = %q: want the error once", r.stderr)
	}
}

func TestCompletion(t *testing.T) {
	f := newFakeAgent(t)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"get", ""}, []string{"db", "web"}},
		{[]string{"delete", "web", ""}, []string{"db"}},
		{[]string{"describe", "w"}, []string{"web"}},
		{[]string{"logs", "web/"}, []string{"web/app", "web/sidecar"}},
		{[]string{"events", "--group", "d"}, []string{"db"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := f.run("", append([]string{"__complete"}, tt.args...)...)
			wantCode(t, r, exitOK)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			got := lines[:len(lines)-1] // the last line is the directive
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("completions = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("the completion command works", func(t *testing.T) {
		r := f.run("", "completion", "bash")
		wantCode(t, r, exitOK)
		if !strings.Contains(r.stdout, "__start_agentctl") {
			t.Errorf("no bash completion script")
		}
	})
}

func TestShortDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-3 * time.Second, "0s"},
		{0, "0s"},
		{5 * time.Second, "5s"},
		{59*time.Second + 999*time.Millisecond, "59s"},
		{3 * time.Minute, "3m"},
		{59 * time.Minute, "59m"},
		{2*time.Hour + 30*time.Minute, "2h"},
		{4*24*time.Hour + 23*time.Hour, "4d"},
		{400 * 24 * time.Hour, "1y"},
	}
	for _, tt := range tests {
		if got := shortDuration(tt.d); got != tt.want {
			t.Errorf("shortDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	if got := age(testNow, time.Time{}); got != "-" {
		t.Errorf("age of zero time = %q, want -", got)
	}
}
