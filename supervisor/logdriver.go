package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/runtime/v2/logging"
	"gopkg.in/natefinch/lumberjack.v2"
)

// LogDriverArg is the first argument the runc shim passes to agentd's
// binary when it runs it as the binary:// log driver of a task. agentd's
// main checks for it before anything else (as nerdctl does), so container
// output is written by a process of the shim, not of agentd, and keeps
// flowing while agentd is down or restarting.
const LogDriverArg = "_BERTH_LOG_DRIVER"

// maxLine is the longest line written as one entry; longer output is split.
const maxLine = 16 << 10

// LogOptions sets rotation of container log files.
type LogOptions struct {
	MaxSize  int64 // bytes per file before rotation
	MaxFiles int   // files kept per container, the current one included
}

func (o LogOptions) encode(dir string) string {
	v := url.Values{}
	v.Set("dir", dir)
	v.Set("max_size", strconv.FormatInt(o.MaxSize, 10))
	v.Set("max_files", strconv.Itoa(o.MaxFiles))
	return v.Encode()
}

func decodeLogOptions(s string) (dir string, o LogOptions, err error) {
	v, err := url.ParseQuery(s)
	if err != nil {
		return "", o, err
	}
	dir = v.Get("dir")
	if !filepath.IsAbs(dir) {
		return "", o, fmt.Errorf("log driver: dir %q is not absolute", dir)
	}
	o.MaxSize, _ = strconv.ParseInt(v.Get("max_size"), 10, 64)
	o.MaxFiles, _ = strconv.Atoi(v.Get("max_files"))
	if o.MaxSize <= 0 {
		o.MaxSize = 10 << 20
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = 3
	}
	return dir, o, nil
}

// ContainerID is the containerd ID of a container of a group. Container
// names are DNS labels, which have no dots, so the ID splits back at its
// last dot unambiguously, also for an allocation's group ("web.0").
func ContainerID(group, container string) string { return group + "." + container }

// SplitContainerID is the inverse of ContainerID.
func SplitContainerID(id string) (group, container string, ok bool) {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

// LogPath is the current log file of a container.
func LogPath(dir, group, container string) string {
	return filepath.Join(dir, group, container+".log")
}

// RunLogDriver is agentd's entry point when the shim runs it as a log
// driver: args are os.Args[2:]. It never returns.
func RunLogDriver(args []string) {
	logging.Run(func(ctx context.Context, cfg *logging.Config, ready func() error) error {
		if len(args) != 1 {
			return fmt.Errorf("log driver: want one argument, got %d", len(args))
		}
		dir, opts, err := decodeLogOptions(args[0])
		if err != nil {
			return err
		}
		group, container, ok := SplitContainerID(cfg.ID)
		if !ok {
			return fmt.Errorf("log driver: container id %q is not GROUP.CONTAINER", cfg.ID)
		}
		path := LogPath(dir, group, container)
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return err
		}
		w := newLogWriter(path, opts)
		defer w.Close()
		if err := ready(); err != nil {
			return err
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); w.copy(cfg.Stdout, "stdout") }()
		go func() { defer wg.Done(); w.copy(cfg.Stderr, "stderr") }()
		wg.Wait()
		return nil
	})
}

// logWriter writes JSON lines ({"time","stream","line"}) to a rotated file.
type logWriter struct {
	mu  sync.Mutex
	out *lumberjack.Logger
	buf []byte
}

func newLogWriter(path string, o LogOptions) *logWriter {
	mb := int((o.MaxSize + (1<<20 - 1)) >> 20)
	return &logWriter{out: &lumberjack.Logger{Filename: path, MaxSize: mb, MaxBackups: o.MaxFiles - 1}}
}

type logRecord struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Line   string    `json:"line"`
}

func (w *logWriter) copy(r io.Reader, stream string) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			w.write(stream, strings.TrimSuffix(string(line), "\n"))
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return
		}
	}
}

func (w *logWriter) write(stream, line string) {
	rec := logRecord{Time: time.Now().UTC(), Stream: stream, Line: line}
	w.mu.Lock()
	defer w.mu.Unlock()
	b, _ := json.Marshal(rec)
	w.buf = append(append(w.buf[:0], b...), '\n')
	_, _ = w.out.Write(w.buf)
}

func (w *logWriter) Close() error { return w.out.Close() }
