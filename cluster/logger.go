package cluster

import (
	"bytes"
	"context"
	"log/slog"
)

// logWriter turns memberlist's standard-library log lines ("[WARN]
// memberlist: ...") into slog records of the matching level.
type logWriter struct{ log *slog.Logger }

var logLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[ERR] ", slog.LevelError},
	{"[ERROR] ", slog.LevelError},
	{"[WARN] ", slog.LevelWarn},
	{"[INFO] ", slog.LevelInfo},
	{"[DEBUG] ", slog.LevelDebug},
	{"[TRACE] ", slog.LevelDebug - 4},
}

func (w logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range logLevels {
		if rest, ok := bytes.CutPrefix(line, []byte(l.prefix)); ok {
			line, level = rest, l.level
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	w.log.Log(context.Background(), level, string(line))
	return len(p), nil
}
