package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestLogs(t *testing.T) {
	tests := []struct {
		name           string
		args           []string
		request        string // the logs request
		stdout, stderr string
	}{
		{
			name:    "several containers: prefixed, split by stream",
			args:    []string{"web"},
			request: "GET /v1/groups/web/logs",
			stdout:  "[app] hello\n[app] bye\n",
			stderr:  "[sidecar] oops\n",
		},
		{
			name:    "one container named: no prefix",
			args:    []string{"web/app", "--tail", "5", "--since", "10m"},
			request: "GET /v1/groups/web/logs?container=app&since=10m&tail=5",
			stdout:  "hello\nbye\n",
		},
		{
			name:    "timestamps",
			args:    []string{"web/sidecar", "--timestamps", "--since", "2024-05-01T11:00:00Z"},
			request: "GET /v1/groups/web/logs?container=sidecar&since=2024-05-01T11%3A00%3A00Z",
			stderr:  "2024-05-01T11:59:58Z oops\n",
		},
		{
			name:    "tail 0",
			args:    []string{"web/none", "--tail", "0"},
			request: "GET /v1/groups/web/logs?container=none&tail=0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAgent(t)
			r := f.run("", append([]string{"logs"}, tt.args...)...)
			wantCode(t, r, exitOK)
			reqs := f.requestLog()
			if got := reqs[len(reqs)-1]; got != tt.request {
				t.Errorf("request = %q, want %q", got, tt.request)
			}
			if r.stdout != tt.stdout || r.stderr != tt.stderr {
				t.Errorf("stdout = %q, stderr = %q; want %q, %q", r.stdout, r.stderr, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestLogsOfAOneContainerGroupHaveNoPrefix(t *testing.T) {
	f := newFakeAgent(t)
	f.logs = []api.LogEntry{{Stream: "stdout", Container: "pg", Line: "ready"}}
	r := f.run("", "logs", "db")
	wantCode(t, r, exitOK)
	if r.stdout != "ready\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestLogsJSONLines(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "logs", "web", "-o", "json")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), r.stdout)
	}
	for _, l := range lines {
		var e api.LogEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Errorf("line %q is not JSON: %v", l, err)
		}
	}
}

func TestLogsRefusesBadFlags(t *testing.T) {
	f := newFakeAgent(t)
	for _, args := range [][]string{
		{"logs", "web", "--since", "yesterday"},
		{"logs", "web", "--since", "-5m"},
		{"logs", "web", "--tail", "-2"},
		{"logs", "/app"},
	} {
		r := f.run("", args...)
		wantCode(t, r, exitUsage)
	}
	if n := len(f.requestLog()); n != 0 {
		t.Errorf("bad flags still sent %d requests", n)
	}
}

// syncBuffer is a buffer one goroutine writes while another waits for
// text to appear in it.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer contains s.
func (b *syncBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		select {
		case <-b.changed:
		case <-timeout:
			t.Fatalf("output never contained %q; got %q", s, b.String())
		}
	}
}

// runUntilPrinted runs agentctl with args until it has printed want on
// stdout, then interrupts it like ^C and returns what it did.
func runUntilPrinted(t *testing.T, f *fakeAgent, want string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() {
		r := runAgentctl(ctx, func(a *app) { a.stdout, a.stderr = stdout, stderr },
			"", append([]string{"--socket", f.sock}, args...)...)
		done <- r.code
	}()
	stdout.waitFor(t, want)
	cancel()
	select {
	case code := <-done:
		return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
	case <-time.After(10 * time.Second):
		t.Fatal("agentctl did not stop when interrupted")
	}
	return result{}
}

func TestLogsFollowEndsCleanlyWhenInterrupted(t *testing.T) {
	f := newFakeAgent(t)
	r := runUntilPrinted(t, f, "bye\n", "logs", "-f", "web/app", "--timeout", "1ns")
	wantCode(t, r, exitOK)
	if r.stdout != "hello\nbye\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if reqs := f.requestLog(); reqs[len(reqs)-1] != "GET /v1/groups/web/logs?container=app&follow=1" {
		t.Errorf("requests = %q", reqs)
	}
}

func TestEventsTable(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "events", "--group", "web")
	wantCode(t, r, exitOK)
	want := `AGE  TYPE     REASON   GROUP  CONTAINER  MESSAGE
4m   Normal   Started  web    app        started container
30s  Warning  BackOff  web    sidecar    exited with code 1; restarting in 10s
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
	if got := f.requestLog(); got[0] != "GET /v1/events?group=web" {
		t.Errorf("requests = %q", got)
	}
}

func TestEventsJSONLines(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "events", "-o", "json")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), r.stdout)
	}
	for _, l := range lines {
		var e api.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Seq == 0 {
			t.Errorf("line %q is not an event: %v", l, err)
		}
	}
}

func TestEventsFollow(t *testing.T) {
	f := newFakeAgent(t)
	r := runUntilPrinted(t, f, "restarting in 10s\n", "events", "-f")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "AGE ") || !strings.Contains(lines[2], "BackOff") {
		t.Errorf("stdout =\n%s", r.stdout)
	}
	if got := f.requestLog(); got[0] != "GET /v1/events?follow=1" {
		t.Errorf("requests = %q", got)
	}
}
