package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/berth-project/berth/api"
)

// LogQuery selects log lines.
type LogQuery struct {
	Tail   int // last N lines (of the merged output); < 0 means all
	Since  time.Time
	Follow bool
}

// ReadLogs sends the log lines of the given containers of a group to fn,
// oldest first, merged by time; with Follow it then streams new lines until
// ctx ends. Rotated files are read too.
func ReadLogs(ctx context.Context, dir, group string, containers []string, q LogQuery, fn func(api.LogEntry) error) error {
	var all []api.LogEntry
	offsets := make(map[string]int64, len(containers))
	for _, c := range containers {
		entries, off, err := readContainerLogs(dir, group, c, q.Since)
		if err != nil {
			return err
		}
		all = append(all, entries...)
		offsets[c] = off
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	if q.Tail >= 0 && len(all) > q.Tail {
		all = all[len(all)-q.Tail:]
	}
	for _, e := range all {
		if err := fn(e); err != nil {
			return err
		}
	}
	if !q.Follow {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan api.LogEntry, 256)
	for _, c := range containers {
		go followLog(ctx, LogPath(dir, group, c), c, offsets[c], lines)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-lines:
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// backupTimeFormat is the time in lumberjack's names of rotated files.
const backupTimeFormat = "2006-01-02T15-04-05.000"

// logFiles lists a container's log files, oldest first; the current file
// (which may not exist yet) is last.
func logFiles(dir, group, container string) []string {
	cur := LogPath(dir, group, container)
	// lumberjack names backups NAME-2006-01-02T15-04-05.000.log: they sort
	// by time. The glob also matches other containers whose names start
	// with NAME- ("app" and "app-proxy"): keep only real timestamps.
	matches, _ := filepath.Glob(filepath.Join(dir, group, container+"-*.log"))
	var old []string
	for _, m := range matches {
		ts := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), container+"-"), ".log")
		if _, err := time.Parse(backupTimeFormat, ts); err == nil {
			old = append(old, m)
		}
	}
	sort.Strings(old)
	return append(old, cur)
}

func readContainerLogs(dir, group, container string, since time.Time) ([]api.LogEntry, int64, error) {
	var out []api.LogEntry
	files := logFiles(dir, group, container)
	var curOff int64
	for i, path := range files {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		off, err := scanLog(f, container, func(e api.LogEntry) {
			if !e.Time.Before(since) {
				out = append(out, e)
			}
		})
		f.Close()
		if err != nil {
			return nil, 0, err
		}
		if i == len(files)-1 {
			curOff = off
		}
	}
	return out, curOff, nil
}

// scanLog decodes complete lines from r and returns the offset after the
// last complete line.
func scanLog(r io.Reader, container string, fn func(api.LogEntry)) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return off, nil // a partial last line is read again later
		}
		if err != nil {
			return off, err
		}
		off += int64(len(line))
		var rec logRecord
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		fn(api.LogEntry{Time: rec.Time, Stream: rec.Stream, Container: container, Line: rec.Line})
	}
}

// followLog streams lines appended to path after offset, across rotations.
func followLog(ctx context.Context, path, container string, offset int64, out chan<- api.LogEntry) {
	w, err := fsnotify.NewWatcher()
	if err == nil {
		defer w.Close()
		_ = os.MkdirAll(filepath.Dir(path), 0o750)
		_ = w.Add(filepath.Dir(path))
	}
	var events <-chan fsnotify.Event
	if w != nil {
		events = w.Events
	}
	// A slow tick as well, in case an event is missed.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var pending []byte
	for {
		if f == nil {
			if nf, err := os.Open(path); err == nil {
				f = nf
				if _, err := f.Seek(offset, io.SeekStart); err != nil {
					offset = 0
				}
			}
		}
		if f != nil {
			pending = drain(ctx, f, container, pending, out)
			// Rotated: the name now points at a new file. Finish the old one.
			if st, err := os.Stat(path); err == nil {
				if cur, err := f.Stat(); err == nil && !os.SameFile(st, cur) {
					pending = drain(ctx, f, container, pending, out)
					f.Close()
					f, offset, pending = nil, 0, nil
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-events:
		case <-tick.C:
		}
	}
}

func drain(ctx context.Context, f *os.File, container string, pending []byte, out chan<- api.LogEntry) []byte {
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			var rec logRecord
			if json.Unmarshal(pending[:i], &rec) == nil {
				select {
				case out <- api.LogEntry{Time: rec.Time, Stream: rec.Stream, Container: container, Line: rec.Line}:
				case <-ctx.Done():
					return nil
				}
			}
			pending = pending[i+1:]
		}
		if err != nil || n == 0 {
			return pending
		}
	}
}
