package containerdproc

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// fakeDaemon writes an executable shell script standing in for containerd.
func fakeDaemon(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake-containerd")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nPATH=/usr/bin:/bin:$PATH\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func testConfig(t *testing.T, binary string) Config {
	c := DefaultConfig(t.TempDir())
	c.Binary = binary
	c.StartTimeout = 500 * time.Millisecond
	return c
}

func TestStartReportsEarlyExitWithLogTail(t *testing.T) {
	c := testConfig(t, fakeDaemon(t, `echo "level=fatal msg=\"boom: cannot listen\"" >&2; exit 3`))
	start := time.Now()
	p, err := Start(context.Background(), c)
	if err == nil {
		p.Stop(time.Second)
		t.Fatal("Start succeeded with a daemon that exits")
	}
	for _, want := range []string{"exited before answering", "exit status 3", "boom: cannot listen", c.LogPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("error %v does not wrap api.ErrUnavailable", err)
	}
	if d := time.Since(start); d > c.StartTimeout {
		t.Errorf("Start took %s; it should notice the exit before the %s timeout", d, c.StartTimeout)
	}
}

func TestStartTimesOutAndKillsSilentDaemon(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := testConfig(t, fakeDaemon(t, `echo $$ > `+pidFile+`; echo "still loading plugins"; exec sleep 60`))
	_, err := Start(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "no answer at "+c.Address+" within 500ms") ||
		!strings.Contains(err.Error(), "still loading plugins") {
		t.Fatalf("Start error = %v, want a timeout naming the address and the log tail", err)
	}
	pid := readPID(t, pidFile)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("daemon pid %d still exists after a failed Start (kill 0: %v)", pid, err)
	}
}

func TestStartWithoutLogSaysOutputWasDiscarded(t *testing.T) {
	c := testConfig(t, fakeDaemon(t, `exit 1`))
	c.LogPath = ""
	_, err := Start(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "output was discarded") {
		t.Fatalf("Start error = %v, want a note that the output was discarded", err)
	}
}

func TestStartMissingBinary(t *testing.T) {
	c := testConfig(t, filepath.Join(t.TempDir(), "no-such-containerd"))
	if _, err := Start(context.Background(), c); err == nil || !strings.Contains(err.Error(), "no-such-containerd") {
		t.Fatalf("Start error = %v, want one naming the missing binary", err)
	}
}

func TestStartRejectsInvalidConfig(t *testing.T) {
	c := testConfig(t, "containerd")
	c.Root = "relative"
	if _, err := Start(context.Background(), c); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("Start error = %v, want api.ErrInvalid", err)
	}
}

// startUnchecked starts a fake daemon the way Start does, without waiting
// for it to answer, to test process handling.
func startUnchecked(t *testing.T, script string) *Process {
	t.Helper()
	cmd := exec.Command(fakeDaemon(t, script))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go p.wait()
	t.Cleanup(func() { _ = p.kill(); <-p.done })
	return p
}

func TestStopEscalatesToKillWhenTermIsIgnored(t *testing.T) {
	trapped := filepath.Join(t.TempDir(), "trapped")
	p := startUnchecked(t, `trap '' TERM; : > `+trapped+`; exec sleep 60`)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := os.Stat(trapped); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fake daemon never installed its SIGTERM trap")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	err := p.Stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop = %v, want an error saying it was killed", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("Stop returned after %s, before the 200ms grace", d)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
}

func TestStopOnTermReturnsNil(t *testing.T) {
	p := startUnchecked(t, `exec sleep 60`)
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatalf("Stop = %v, want nil for a daemon that exits on SIGTERM", err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("second Stop = %v, want nil", err)
	}
}

func TestDaemonRunsInItsOwnProcessGroup(t *testing.T) {
	p := startUnchecked(t, `exec sleep 60`)
	pgid, err := syscall.Getpgid(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	if pgid != p.PID() {
		t.Fatalf("daemon pgid = %d, want its own group %d", pgid, p.PID())
	}
	if pgid == syscall.Getpgrp() {
		t.Fatal("daemon shares the test's process group")
	}
}

func TestAnswersFalseWhenNothingAnswers(t *testing.T) {
	dir := t.TempDir()
	t.Run("no socket", func(t *testing.T) {
		start := time.Now()
		if Answers(context.Background(), filepath.Join(dir, "none.sock")) {
			t.Fatal("Answers = true for a missing socket")
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Fatalf("Answers took %s for a missing socket; it should fail at once", d)
		}
	})
	t.Run("not grpc", func(t *testing.T) {
		sock := filepath.Join(dir, "silent.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if Answers(ctx, sock) {
			t.Fatal("Answers = true for a listener that does not speak gRPC")
		}
	})
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
