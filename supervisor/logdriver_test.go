package supervisor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func newTestLogWriter(t *testing.T, dir, container string) *logWriter {
	t.Helper()
	w := newLogWriter(LogPath(dir, "web", container), LogOptions{MaxSize: 1 << 20, MaxFiles: 3})
	t.Cleanup(func() { w.Close() })
	return w
}

func readLogs(t *testing.T, dir string, containers []string, q LogQuery) []api.LogEntry {
	t.Helper()
	var out []api.LogEntry
	err := ReadLogs(context.Background(), dir, "web", containers, q, func(e api.LogEntry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatalf("ReadLogs: %v", err)
	}
	return out
}

func lines(es []api.LogEntry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Container+":"+e.Line)
	}
	return strings.Join(s, " ")
}

func TestReadLogsTailAndSince(t *testing.T) {
	dir := t.TempDir()
	w := newTestLogWriter(t, dir, "app")
	for i := range 10 {
		stream := "stdout"
		if i%2 == 1 {
			stream = "stderr"
		}
		w.write(stream, fmt.Sprintf("l%d", i))
	}
	all := readLogs(t, dir, []string{"app"}, LogQuery{Tail: -1})
	if len(all) != 10 || all[1].Stream != "stderr" || all[2].Stream != "stdout" || all[0].Time.IsZero() {
		t.Fatalf("read back %+v", all)
	}
	for _, tc := range []struct {
		name string
		q    LogQuery
		want string
	}{
		{"tail 3", LogQuery{Tail: 3}, "app:l7 app:l8 app:l9"},
		{"tail 0", LogQuery{Tail: 0}, ""},
		{"tail more than there is", LogQuery{Tail: 50}, lines(all)},
		{"since a line's time", LogQuery{Tail: -1, Since: all[6].Time}, "app:l6 app:l7 app:l8 app:l9"},
		{"since and tail", LogQuery{Tail: 2, Since: all[3].Time}, "app:l8 app:l9"},
		{"since later than everything", LogQuery{Tail: -1, Since: all[9].Time.Add(time.Nanosecond)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lines(readLogs(t, dir, []string{"app"}, tc.q)); got != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
}

func TestReadLogsMergesContainersByTime(t *testing.T) {
	dir := t.TempDir()
	app, side := newTestLogWriter(t, dir, "app"), newTestLogWriter(t, dir, "side")
	for i := range 3 {
		app.write("stdout", fmt.Sprintf("a%d", i))
		side.write("stdout", fmt.Sprintf("s%d", i))
	}
	got := lines(readLogs(t, dir, []string{"app", "side"}, LogQuery{Tail: -1}))
	if want := "app:a0 side:s0 app:a1 side:s1 app:a2 side:s2"; got != want {
		t.Errorf("merged %q; want %q", got, want)
	}
	if got := lines(readLogs(t, dir, []string{"side", "app"}, LogQuery{Tail: 2})); got != "app:a2 side:s2" {
		t.Errorf("tail of the merge %q; want the last two lines of both", got)
	}
}

func TestReadLogsKeepsContainersWithCommonPrefixApart(t *testing.T) {
	dir := t.TempDir()
	newTestLogWriter(t, dir, "app").write("stdout", "mine")
	newTestLogWriter(t, dir, "app-proxy").write("stdout", "not mine")
	if got := lines(readLogs(t, dir, []string{"app"}, LogQuery{Tail: -1})); got != "app:mine" {
		t.Errorf("logs of app: %q; want only app's line (app-proxy.log is not a rotated file of app)", got)
	}
}

func TestLogWriterSplitsLongLines(t *testing.T) {
	dir := t.TempDir()
	w := newTestLogWriter(t, dir, "app")
	w.copy(strings.NewReader(strings.Repeat("x", maxLine+10)+"\nshort\nno newline"), "stderr")
	got := readLogs(t, dir, []string{"app"}, LogQuery{Tail: -1})
	if len(got) != 4 || len(got[0].Line) != maxLine || got[1].Line != strings.Repeat("x", 10) ||
		got[2].Line != "short" || got[3].Line != "no newline" || got[3].Stream != "stderr" {
		t.Errorf("got %d entries: %.80v", len(got), got)
	}
}

// writeOverMiB writes numbered lines of about 1 KiB until more than 1 MiB
// went to the log, so lumberjack rotates once. It returns the count.
func writeOverMiB(w *logWriter, prefix string) int {
	pad := strings.Repeat("p", 1000)
	n := 0
	for size := 0; size <= 1<<20+64<<10; size += len(pad) + 80 {
		w.write("stdout", fmt.Sprintf("%s%d %s", prefix, n, pad))
		n++
	}
	return n
}

func backups(t *testing.T, dir string) []string {
	t.Helper()
	old, err := filepath.Glob(filepath.Join(dir, "web", "app-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return old
}

func TestReadLogsAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	w := newTestLogWriter(t, dir, "app")
	n := writeOverMiB(w, "r")
	if len(backups(t, dir)) != 1 {
		t.Fatalf("no rotation: backups %v", backups(t, dir))
	}
	got := readLogs(t, dir, []string{"app"}, LogQuery{Tail: -1})
	if len(got) != n {
		t.Fatalf("read %d lines; want %d", len(got), n)
	}
	for i, e := range got {
		if !strings.HasPrefix(e.Line, fmt.Sprintf("r%d ", i)) {
			t.Fatalf("line %d is %.20q; want r%d", i, e.Line, i)
		}
	}
}

func TestFollowPicksUpAppendsAndSurvivesRotation(t *testing.T) {
	dir := t.TempDir()
	w := newTestLogWriter(t, dir, "app")
	w.write("stdout", "before")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.LogEntry, 4096)
	errc := make(chan error, 1)
	go func() {
		errc <- ReadLogs(ctx, dir, "web", []string{"app"}, LogQuery{Tail: -1, Follow: true}, func(e api.LogEntry) error {
			got <- e
			return nil
		})
	}()
	next := func() string {
		t.Helper()
		select {
		case e := <-got:
			return e.Line
		case <-time.After(5 * time.Second):
			t.Fatal("no line within 5s")
			return ""
		}
	}
	if l := next(); l != "before" {
		t.Fatalf("first line %q; want before", l)
	}
	w.write("stdout", "appended")
	if l := next(); l != "appended" {
		t.Fatalf("line %q; want appended", l)
	}
	n := writeOverMiB(w, "f")
	w.write("stdout", "after rotation")
	if len(backups(t, dir)) != 1 {
		t.Fatalf("no rotation: backups %v", backups(t, dir))
	}
	for i := range n {
		if l := next(); !strings.HasPrefix(l, fmt.Sprintf("f%d ", i)) {
			t.Fatalf("followed line %.20q; want f%d (lost or repeated across rotation)", l, i)
		}
	}
	if l := next(); l != "after rotation" {
		t.Fatalf("line %q; want after rotation", l)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("ReadLogs after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadLogs did not return after its context ended")
	}
}

func TestReadLogsStopsOnCallbackError(t *testing.T) {
	dir := t.TempDir()
	w := newTestLogWriter(t, dir, "app")
	w.write("stdout", "one")
	w.write("stdout", "two")
	errStop := errors.New("client went away")
	calls := 0
	err := ReadLogs(context.Background(), dir, "web", []string{"app"}, LogQuery{Tail: -1, Follow: true}, func(api.LogEntry) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("err %v after %d calls; want the callback's error after 1", err, calls)
	}
}

// TestSplitContainerIDOfAnAllocation: an allocation's group name has dots
// ("web.0", "kv.s3.0"); the container name never has one.
func TestSplitContainerIDOfAnAllocation(t *testing.T) {
	for _, tt := range []struct{ group, container string }{{"web", "app"}, {"web.0", "app"}, {"kv.s3.0", "sidecar"}} {
		g, c, ok := SplitContainerID(ContainerID(tt.group, tt.container))
		if !ok || g != tt.group || c != tt.container {
			t.Errorf("SplitContainerID(ContainerID(%q, %q)) = %q, %q, %v", tt.group, tt.container, g, c, ok)
		}
	}
	if _, _, ok := SplitContainerID("nodot"); ok {
		t.Error("an ID without a dot split")
	}
}
