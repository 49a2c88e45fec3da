package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	"golang.org/x/sys/unix"
)

// agentOpts adjusts how startAgent runs agentd. The zero value runs one
// agent named "node1" in env.Namespace with a fresh, empty groups dir.
type agentOpts struct {
	// NodeName is --node-name (default "node1").
	NodeName string
	// GroupsDir is --groups-dir (default: a new empty directory).
	GroupsDir string
	// Namespace is --namespace (default env.Namespace). One agent per
	// namespace: tests running several agents give each its own, from
	// env.newNamespace.
	Namespace string
	// Flags override or add flags: "--log-level": "debug".
	Flags map[string]string
	// Args are appended after the flags.
	Args []string
	// KeepWorkload leaves the agent's containers running at cleanup;
	// by default cleanup deletes every container in the namespace.
	KeepWorkload bool
	// Config is the agent.toml content, written to the agent's dir and
	// passed with --config; the sections of baseAgentConfig (network)
	// are added unless Config defines them.
	Config string
	// Prefix runs agentd through a command that execs it in place (same
	// PID), e.g. nsenter --net=/run/netns/X.
	Prefix []string
}

// agentProc is a running agentd. Its methods must be called from the
// test's goroutine.
type agentProc struct {
	t    testing.TB
	opts agentOpts
	// Dir holds the agent's state, run and groups dirs, socket and log.
	Dir, StateDir, RunDir, GroupsDir, Socket, LogPath string

	args   []string
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	starts int
}

// startAgent runs agentd against the test containerd and returns once its
// API answers GET /v1/version. The agent is stopped, its workload deleted
// (unless KeepWorkload) and its directory removed when the test ends; on
// failure its log goes to t.Log.
func startAgent(t testing.TB, opts agentOpts) *agentProc {
	t.Helper()
	env.needAgentd(t)
	if opts.NodeName == "" {
		opts.NodeName = "node1"
	}
	if opts.Namespace == "" {
		opts.Namespace = env.Namespace
	}
	dir := env.newDir(t, "a")
	a := &agentProc{
		t:         t,
		opts:      opts,
		Dir:       dir,
		StateDir:  filepath.Join(dir, "state"),
		RunDir:    filepath.Join(dir, "run"),
		GroupsDir: opts.GroupsDir,
		Socket:    filepath.Join(dir, "agent.sock"),
		LogPath:   filepath.Join(dir, "agentd.log"),
	}
	if a.GroupsDir == "" {
		a.GroupsDir = filepath.Join(dir, "groups")
	}
	for _, d := range []string{a.StateDir, a.RunDir, a.GroupsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	flags := map[string]string{
		"--node-name":          opts.NodeName,
		"--state-dir":          a.StateDir,
		"--run-dir":            a.RunDir,
		"--groups-dir":         a.GroupsDir,
		"--socket":             a.Socket,
		"--containerd-address": env.ContainerdAddress,
		"--namespace":          opts.Namespace,
		"--managed-containerd": "never",
		"--log-format":         "json",
	}
	cfgPath := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfgPath, []byte(baseAgentConfig(opts.Config)), 0o644); err != nil {
		t.Fatal(err)
	}
	flags["--config"] = cfgPath
	for k, v := range opts.Flags {
		flags["--"+strings.TrimLeft(k, "-")] = v
	}
	names := make([]string, 0, len(flags))
	for k := range flags {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		a.args = append(a.args, k, flags[k])
	}
	a.args = append(a.args, opts.Args...)
	t.Cleanup(a.cleanup)
	a.start()
	return a
}

// start runs agentd and waits until its API answers.
func (a *agentProc) start() {
	a.t.Helper()
	log, err := os.OpenFile(a.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	defer log.Close()
	a.starts++
	fmt.Fprintf(log, "=== start %d: %s %s\n", a.starts, env.AgentdBin, strings.Join(a.args, " "))
	argv := append(append(slices.Clone(a.opts.Prefix), env.AgentdBin), a.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, as under systemd: ^C on the test does not
	// reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("start agentd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()

	waitFor(a.t, 20*time.Second, "agentd to answer GET /v1/version on "+a.Socket, func() (bool, error) {
		select {
		case <-done:
			a.t.Fatalf("agentd exited during start (%v); log %s:\n%s", cmd.ProcessState, a.LogPath, a.log())
		default:
		}
		status, body, err := httpUnix(a.Socket, "GET", "/v1/version", nil)
		if err != nil {
			return false, err
		}
		if status != http.StatusOK {
			return false, fmt.Errorf("status %d: %s", status, body)
		}
		return true, nil
	})
}

// PID returns the running agentd's process id.
func (a *agentProc) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cmd.Process.Pid
}

// Running reports whether agentd has not exited.
func (a *agentProc) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for agentd to exit: a crash.
func (a *agentProc) Kill() {
	a.t.Helper()
	a.signalAndWait(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM and waits for agentd to exit; the test fails if it
// takes longer than 30s (then it is killed).
func (a *agentProc) Stop() {
	a.t.Helper()
	if !a.signalAndWait(syscall.SIGTERM, 30*time.Second) {
		a.t.Errorf("agentd did not exit within 30s of SIGTERM; killed it")
		a.signalAndWait(syscall.SIGKILL, 10*time.Second)
	}
}

// Restart stops agentd (SIGTERM) and starts it again with the same flags
// and directories.
func (a *agentProc) Restart() {
	a.t.Helper()
	a.Stop()
	a.start()
}

// signalAndWait signals agentd and reports whether it exited in time.
func (a *agentProc) signalAndWait(sig syscall.Signal, timeout time.Duration) bool {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (a *agentProc) cleanup() {
	if !a.signalAndWait(syscall.SIGTERM, 30*time.Second) {
		a.t.Errorf("agentd did not exit within 30s of SIGTERM at cleanup; killed it")
		a.signalAndWait(syscall.SIGKILL, 10*time.Second)
	}
	if a.t.Failed() {
		a.t.Logf("agentd log %s:\n%s", a.LogPath, a.log())
	}
	if !a.opts.KeepWorkload && env.Client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cleanNamespace(ctx, env.Client, a.opts.Namespace, false); err != nil {
			a.t.Errorf("delete the agent's containers: %v", err)
		}
	}
	if err := unmountUnder(a.Dir); err != nil {
		a.t.Errorf("unmount under %s: %v", a.Dir, err)
	}
	if err := os.RemoveAll(a.Dir); err != nil {
		a.t.Errorf("remove %s: %v", a.Dir, err)
	}
}

// log returns agentd's log, or its last 256 KiB.
func (a *agentProc) log() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return err.Error()
	}
	const max = 256 << 10
	if len(b) > max {
		return fmt.Sprintf("[... %d bytes cut ...]\n%s", len(b)-max, b[len(b)-max:])
	}
	return string(b)
}

// waitFor polls cond every 20ms until it returns true, failing the test
// with what and cond's last error after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unixHTTPClient returns an HTTP client that reaches the API on a unix
// socket; use it with URLs like "http://agent/v1/version". No timeout, for
// streams.
func unixHTTPClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
}

// httpUnix sends one request to the API on socket and returns the status
// and the whole body. body may be nil; the request times out after 30s.
func httpUnix(socket, method, path string, body io.Reader) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := unixHTTPClient(socket).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// unmountUnder lazily unmounts every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	points, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	if left, err := mountsUnder(dir); err != nil || len(left) > 0 {
		return errors.Join(err, fmt.Errorf("still mounted: %v", left))
	}
	return nil
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountPath(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	return points, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestHarnessRunsBusybox proves the harness: the private containerd runs a
// container of the imported busybox image and its output comes back.
func TestHarnessRunsBusybox(t *testing.T) {
	ctx, cancel := context.WithTimeout(env.ctx(context.Background()), time.Minute)
	defer cancel()
	img, err := env.Client.GetImage(ctx, env.ImageBusybox)
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	id := "harness-" + hex.EncodeToString(suffix)
	c, err := env.Client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("echo", "hello")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container: %v", err)
		}
	}()
	var stdout, stderr bytes.Buffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(env.FIFODir)))
	if err != nil {
		t.Fatal(err)
	}
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var code uint32
	select {
	case st := <-exitCh:
		if code, _, err = st.Result(); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("echo hello did not exit within a minute")
	}
	// Delete waits for the output to be copied.
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task: %v", err)
	}
	if code != 0 || stdout.String() != "hello\n" {
		t.Fatalf("echo hello: exit %d, stdout %q, stderr %q; want exit 0 and \"hello\\n\"", code, stdout.String(), stderr.String())
	}
}
