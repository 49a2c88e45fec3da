package raftstore

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLoggerWritesToSlog(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var l hclog.Logger = newHCLogger(base, "raft")

	l.Debug("hidden")
	l.Named("snapshot").With("id", "1-2").Warn("slow", "took", hclog.Fmt("%dms", 1500))
	l.StandardLogger(nil).Print("from a std logger")

	if l.IsDebug() || !l.IsInfo() || l.GetLevel() != hclog.Info {
		t.Fatalf("levels: debug=%v info=%v level=%v, want Info", l.IsDebug(), l.IsInfo(), l.GetLevel())
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (debug hidden):\n%s", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"level": "WARN", "msg": "slow", "logger": "raft.snapshot", "id": "1-2", "took": "1500ms"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v (record %s)", k, rec[k], v, lines[0])
		}
	}
	if !strings.Contains(lines[1], `"msg":"from a std logger"`) || !strings.Contains(lines[1], `"logger":"raft"`) {
		t.Errorf("std logger line = %s", lines[1])
	}
}
