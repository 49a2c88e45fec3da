package containerdproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
)

// pollInterval is how often Start asks a starting daemon whether it answers.
const pollInterval = 20 * time.Millisecond

// Process is a running containerd started by Start. Its methods are safe
// for concurrent use.
type Process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}

	mu      sync.Mutex
	exitErr error // set before done is closed
}

// Start writes State/config.toml, starts the daemon in its own process group
// and returns once it answers at cfg.Address. If another daemon already
// answers there, Start fails with api.ErrAlreadyExists. If the daemon exits
// or does not answer within the start timeout, Start kills it and returns an
// error with the tail of its log.
//
// ctx bounds only the wait: cancelling it later does not stop the daemon.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if _, err := os.Stat(cfg.Address); err == nil {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		answers := Answers(qctx, cfg.Address)
		cancel()
		if answers {
			return nil, fmt.Errorf("start containerd: a containerd already answers at %s; connect to it or pick another address: %w",
				cfg.Address, api.ErrAlreadyExists)
		}
	}
	configPath, err := writeConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}

	cmd := exec.Command(cfg.Binary, "--config", configPath)
	// Its own process group: a terminal's SIGINT to the parent's group does
	// not reach it. No parent-death signal: it outlives the parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// systemd's notify socket is agentd's: containerd must not talk to it.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "WATCHDOG_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if cfg.LogPath != "" {
		// A file, not a pipe: nothing in this process has to copy the
		// output, so the daemon keeps logging after the parent is gone.
		f, err := os.OpenFile(cfg.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("start containerd: open log: %w", err)
		}
		defer f.Close() // the child holds its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd %s: %w", cfg.Binary, err)
	}
	p := &Process{cmd: cmd, logPath: cfg.LogPath, done: make(chan struct{})}
	go p.wait()

	if err := p.waitAnswers(ctx, cfg); err != nil {
		_ = p.kill()
		<-p.done
		return nil, err
	}
	return p, nil
}

func (p *Process) wait() {
	err := p.cmd.Wait()
	p.mu.Lock()
	p.exitErr = err
	p.mu.Unlock()
	close(p.done)
}

// waitAnswers polls until the daemon answers, exits, or time runs out.
func (p *Process) waitAnswers(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		ok := Answers(qctx, cfg.Address)
		qcancel()
		if ok {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("start containerd: it exited before answering at %s (%v)%s: %w",
				cfg.Address, p.ExitErr(), p.logTail(), api.ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("start containerd: no answer at %s within %s%s: %w",
				cfg.Address, cfg.StartTimeout, p.logTail(), api.ErrUnavailable)
		case <-tick.C:
		}
	}
}

// PID returns the daemon's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the daemon has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr returns how the daemon exited (nil for status 0, an
// *exec.ExitError otherwise); nil while it runs.
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Stop sends SIGTERM, waits up to timeout for the daemon to exit, then sends
// SIGKILL and waits for it. It returns nil once the daemon has exited on
// SIGTERM (or had already exited), and an error saying so when it had to be
// killed. Containers keep running: their shims are not the daemon's
// children.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop containerd (pid %d): %w", p.PID(), err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	if err := p.kill(); err != nil {
		return fmt.Errorf("stop containerd (pid %d): %w", p.PID(), err)
	}
	<-p.done
	return fmt.Errorf("stop containerd (pid %d): still running %s after SIGTERM; killed", p.PID(), timeout)
}

func (p *Process) kill() error {
	err := p.cmd.Process.Signal(syscall.SIGKILL)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// logTail returns "; log tail:\n..." with the last lines of the daemon's
// log, or a note that there is no log.
func (p *Process) logTail() string {
	if p.logPath == "" {
		return " (its output was discarded; set LogPath to see it)"
	}
	tail, err := readTail(p.logPath, 4096, 20)
	if err != nil {
		return fmt.Sprintf(" (read log %s: %v)", p.logPath, err)
	}
	if tail == "" {
		return fmt.Sprintf(" (log %s is empty)", p.logPath)
	}
	return fmt.Sprintf("; last lines of %s:\n%s", p.logPath, tail)
}

// readTail returns at most the last maxLines lines within the last maxBytes
// of the file at path.
func readTail(path string, maxBytes int64, maxLines int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(st.Size()-maxBytes, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return "", err
	}
	if off > 0 {
		// Drop the partial first line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n"), nil
}
