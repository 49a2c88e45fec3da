//go:build linux

package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"

	"github.com/berth-project/berth/api"
)

const (
	// execOutputLimit caps the output Exec keeps (stdout and stderr
	// together); the rest is read and dropped.
	execOutputLimit = 4096
	// execCleanupTimeout bounds killing and deleting an exec process
	// after its ctx ended.
	execCleanupTimeout = 10 * time.Second
	// execDrainTimeout bounds waiting for the output after the process
	// exited (a background child may hold the pipe open forever).
	execDrainTimeout = 2 * time.Second
)

// Exec runs args in the running task of container id, as the container's
// own process runs (user, env, cwd, capabilities; no terminal), and
// returns its exit code and combined output (the first 4 KiB). When ctx
// ends first, the process is killed with SIGKILL and deleted, and Exec
// returns ctx's error with exit code -1.
func (r *containerdRuntime) Exec(ctx context.Context, id string, args []string) (_ int, _ string, retErr error) {
	if len(args) == 0 {
		return -1, "", fmt.Errorf("exec in %s: empty command: %w", id, api.ErrInvalid)
	}
	nctx := r.ns(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return -1, "", fmt.Errorf("exec in %s: %w", id, convertErr(err))
	}
	spec, err := c.Spec(nctx)
	if err != nil {
		return -1, "", fmt.Errorf("exec in %s: spec: %w", id, convertErr(err))
	}
	if spec.Process == nil {
		return -1, "", fmt.Errorf("exec in %s: container spec has no process", id)
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return -1, "", fmt.Errorf("exec in %s: task: %w", id, convertErr(err))
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Terminal = false
	pspec.ConsoleSize = nil

	execID, err := newExecID()
	if err != nil {
		return -1, "", err
	}
	// Each exec gets its own FIFO directory, gone when Exec returns.
	fifoDir, err := os.MkdirTemp(r.cfg.FIFODir, "berth-exec-")
	if err != nil {
		return -1, "", fmt.Errorf("exec in %s: fifo dir: %w", id, err)
	}
	defer os.RemoveAll(fifoDir)
	out := &cappedBuffer{limit: execOutputLimit}
	proc, err := task.Exec(nctx, execID, &pspec, cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(fifoDir)))
	if err != nil {
		return -1, "", fmt.Errorf("exec in %s: %w", id, convertErr(err))
	}

	// Killing and deleting must happen even when ctx has ended: they run
	// on a fresh, time-limited context that keeps the namespace.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(nctx), execCleanupTimeout)
	}
	exited := false
	defer func() {
		dctx, cancel := cleanupCtx()
		defer cancel()
		var opts []containerd.ProcessDeleteOpts
		if !exited {
			opts = append(opts, containerd.WithProcessKill)
		}
		if _, err := proc.Delete(dctx, opts...); err != nil {
			// Delete closes the FIFOs only when it succeeds.
			proc.IO().Cancel()
			proc.IO().Close()
			if retErr == nil {
				retErr = fmt.Errorf("exec in %s: delete process: %w", id, convertErr(err))
			}
		}
	}()

	// Wait before Start, so that the exit cannot be missed; the wait
	// outlives ctx so the exit of a killed process is still seen.
	wctx, wcancel := context.WithCancel(context.WithoutCancel(nctx))
	defer wcancel()
	exitC, err := proc.Wait(wctx)
	if err != nil {
		return -1, "", fmt.Errorf("exec in %s: wait: %w", id, convertErr(err))
	}
	if err := proc.Start(nctx); err != nil {
		return -1, "", fmt.Errorf("exec in %s: start %s: %w", id, args[0], convertErr(err))
	}

	var st containerd.ExitStatus
	select {
	case st = <-exitC:
	case <-ctx.Done():
		kctx, cancel := cleanupCtx()
		defer cancel()
		_ = proc.Kill(kctx, syscall.SIGKILL)
		select {
		case <-exitC:
			exited = true
		case <-kctx.Done():
		}
		return -1, out.String(), fmt.Errorf("exec in %s: %s: %w", id, args[0], ctx.Err())
	}
	exited = true
	code, _, err := st.Result()
	if err != nil {
		return -1, out.String(), fmt.Errorf("exec in %s: exit status: %w", id, convertErr(err))
	}

	// The process is gone; collect what it wrote before Delete closes the
	// FIFOs.
	drained := make(chan struct{})
	go func() {
		proc.IO().Wait()
		close(drained)
	}()
	timer := time.NewTimer(execDrainTimeout)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
	case <-ctx.Done():
	}
	return int(code), out.String(), nil
}

func newExecID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("exec id: %w", err)
	}
	return "berth-exec-" + hex.EncodeToString(b), nil
}

// cappedBuffer keeps the first limit bytes written to it and drops the
// rest, always reporting a full write so the writer is never blocked or
// failed. Safe for concurrent use (stdout and stderr are copied at once).
type cappedBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
