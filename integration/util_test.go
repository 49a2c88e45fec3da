package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
)

// apiClient returns an API client for an agent.
func (a *agentProc) api() *api.Client { return api.NewClient(a.Socket) }

// applyTOML applies one group file through the API and fails the test on
// any error.
func applyTOML(t testing.TB, a *agentProc, name, content string) []api.ApplyResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: name, Content: content}}})
	if err != nil {
		t.Fatalf("apply %s: %v", name, err)
	}
	return res
}

// getGroup returns a group's detailed status.
func getGroup(t testing.TB, a *agentProc, name string) *api.GroupStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := a.api().Get(ctx, name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return st
}

// waitGroup waits until cond holds for the group's status and returns it.
func waitGroup(t testing.TB, a *agentProc, name string, timeout time.Duration, what string, cond func(*api.GroupStatus) bool) *api.GroupStatus {
	t.Helper()
	var last *api.GroupStatus
	waitFor(t, timeout, fmt.Sprintf("group %s: %s", name, what), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := a.api().Get(ctx, name)
		if err != nil {
			return false, err
		}
		last = st
		if cond(st) {
			return true, nil
		}
		return false, fmt.Errorf("state %s (%s: %s), %d/%d running", st.State, st.Reason, st.Message, st.Running(), len(st.Containers))
	})
	return last
}

// allRunning is a waitGroup condition: every container of the group that
// is meant to keep running (not an init container) runs.
func allRunning(st *api.GroupStatus) bool {
	n := 0
	for _, c := range st.Containers {
		if c.Role != api.RoleInit {
			n++
		}
	}
	return st.State == api.GroupRunning && n > 0 && st.Running() == n
}

func pids(st *api.GroupStatus) map[string]uint32 {
	out := map[string]uint32{}
	for _, c := range st.Containers {
		out[c.Name] = c.PID
	}
	return out
}

// netnsHTTP returns an HTTP client whose connections are made from inside
// the network namespace pinned at nsPath, so the test can reach a group's
// 127.0.0.1 as its containers do.
func netnsHTTP(nsPath string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// The thread enters the namespace and never leaves: keep it
			// locked so the runtime discards it with this goroutine.
			runtime.LockOSThread()
			f, err := os.Open(nsPath)
			if err != nil {
				ch <- result{err: err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{err: fmt.Errorf("setns %s: %w", nsPath, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// nsGet does a GET from inside a group's network namespace and returns
// status and body.
func nsDo(t testing.TB, nsPath, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := netnsHTTP(nsPath).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP waits until url answers 200 from inside the namespace.
func waitHTTP(t testing.TB, nsPath, url string) {
	t.Helper()
	waitFor(t, 20*time.Second, "GET "+url+" in "+nsPath, func() (bool, error) {
		code, body := nsDo(t, nsPath, "GET", url, "")
		if code == 200 {
			return true, nil
		}
		return false, fmt.Errorf("%d %s", code, body)
	})
}

// mountsBelow lists mount points under dir.
func mountsBelow(t testing.TB, dir string) []string {
	t.Helper()
	m, err := mountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cgroupPaths lists the cgroup directories of a container in every v1
// hierarchy and the unified one.
func cgroupPaths(ns, id string) []string {
	var out []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		p := filepath.Join(r, ns, id)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
