package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// redirectDial returns a dialer that connects to target whatever address
// it is asked for, and records the addresses asked for: tests see both
// that actions go through the env's dialer and what they dial.
func redirectDial(target string) (dialFunc, func() []string) {
	var mu sync.Mutex
	var asked []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		asked = append(asked, network+" "+addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, target)
	}
	return dial, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), asked...)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestActionHTTP(t *testing.T) {
	type seen struct {
		path, header, host string
		close              bool
	}
	var mu sync.Mutex
	var last seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = seen{path: r.URL.RequestURI(), header: r.Header.Get("X-Probe"), host: r.Host, close: r.Close}
		mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			fmt.Fprint(w, "fine")
		case "/redirect":
			http.Redirect(w, r, "http://example.invalid/", http.StatusFound)
		case "/broken":
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, "database down\n")
		case "/huge":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, strings.Repeat("x", 1<<20))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	srvAddr := srv.Listener.Addr().String()

	for _, tc := range []struct {
		name      string
		action    api.HTTPAction
		target    string // where the dialer really connects; srvAddr if empty
		wantOK    bool
		wantInMsg []string
		wantSeen  *seen
	}{
		{name: "200 is success", action: api.HTTPAction{Path: "/ok", Port: 8080},
			wantOK: true, wantInMsg: []string{"200"},
			wantSeen: &seen{path: "/ok", close: true, host: "127.0.0.1:8080"}},
		{name: "path without slash and query", action: api.HTTPAction{Path: "ok?deep=1", Port: 8080},
			wantOK: true, wantSeen: &seen{path: "/ok?deep=1", close: true, host: "127.0.0.1:8080"}},
		{name: "headers are sent, Host included", action: api.HTTPAction{Path: "/ok", Port: 80,
			Headers: map[string]string{"X-Probe": "yes", "Host": "web.local"}},
			wantOK: true, wantSeen: &seen{path: "/ok", header: "yes", host: "web.local", close: true}},
		{name: "3xx is success and not followed", action: api.HTTPAction{Path: "/redirect", Port: 8080},
			wantOK: true, wantInMsg: []string{"302"}},
		{name: "500 is failure with the body", action: api.HTTPAction{Path: "/broken", Port: 8080},
			wantInMsg: []string{"500", "database down", ":8080/broken"}},
		{name: "404 is failure", action: api.HTTPAction{Path: "/nope", Port: 8080},
			wantInMsg: []string{"404"}},
		{name: "huge body is cut", action: api.HTTPAction{Path: "/huge", Port: 8080},
			wantInMsg: []string{"503", strings.Repeat("x", actionMessageLimit-100)}},
		{name: "refused connection is failure", action: api.HTTPAction{Path: "/ok", Port: 8080},
			target: closedAddr(t), wantInMsg: []string{"refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if target == "" {
				target = srvAddr
			}
			dial, asked := redirectDial(target)
			mu.Lock()
			last = seen{}
			mu.Unlock()
			msg, err := runHTTP(context.Background(), actionEnv{Dial: dial}, &tc.action)
			if ok := err == nil; ok != tc.wantOK {
				t.Fatalf("success = %v (msg %q, err %v), want %v", ok, msg, err, tc.wantOK)
			}
			text := msg
			if err != nil {
				text = err.Error()
			}
			for _, want := range tc.wantInMsg {
				if !strings.Contains(text, want) {
					t.Errorf("message %q does not contain %q", text, want)
				}
			}
			if len(text) > 2*actionMessageLimit {
				t.Errorf("message is %d bytes long; want the body quoted up to %d", len(text), actionMessageLimit)
			}
			wantAddr := fmt.Sprintf("tcp 127.0.0.1:%d", tc.action.Port)
			if got := asked(); len(got) != 1 || got[0] != wantAddr {
				t.Errorf("dialed %v, want exactly [%s]", got, wantAddr)
			}
			if tc.wantSeen != nil {
				mu.Lock()
				got := last
				mu.Unlock()
				if got != *tc.wantSeen {
					t.Errorf("server saw %+v, want %+v", got, *tc.wantSeen)
				}
			}
		})
	}
}

func TestActionHTTPHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	dial, _ := redirectDial(srv.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := runHTTP(ctx, actionEnv{Dial: dial}, &api.HTTPAction{Path: "/", Port: 80})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestActionTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, tc := range []struct {
		name   string
		target string
		wantOK bool
	}{
		{"listening port is success", ln.Addr().String(), true},
		{"closed port is failure", closedAddr(t), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial, asked := redirectDial(tc.target)
			msg, err := runTCP(context.Background(), actionEnv{Dial: dial}, &api.TCPAction{Port: 6379})
			if ok := err == nil; ok != tc.wantOK {
				t.Fatalf("success = %v (msg %q, err %v), want %v", ok, msg, err, tc.wantOK)
			}
			if got := asked(); len(got) != 1 || got[0] != "tcp 127.0.0.1:6379" {
				t.Errorf("dialed %v, want [tcp 127.0.0.1:6379]", got)
			}
		})
	}
}

// fakeExec is an execFunc that answers with a fixed result and records
// its calls.
type fakeExec struct {
	mu    sync.Mutex
	code  int
	out   string
	err   error
	calls [][]string
}

func (f *fakeExec) exec(ctx context.Context, id string, args []string) (int, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, append([]string{id}, args...))
	return f.code, f.out, f.err
}

func TestActionExec(t *testing.T) {
	long := "a" + strings.Repeat("é", 200) // byte 256 is inside a rune
	for _, tc := range []struct {
		name    string
		code    int
		out     string
		err     error
		wantOK  bool
		wantMsg string
	}{
		{"exit 0 is success", 0, "all good\n", nil, true, "all good"},
		{"exit 3 is failure", 3, "hi\n", nil, false, "exit code 3: hi"},
		{"exit 1 without output", 1, "", nil, false, "exit code 1"},
		{"exec error is failure", -1, "", errors.New("task not running"), false, "exec cat: task not running"},
		{"output is cut at 256 bytes on a rune boundary", 0, long, nil, true, long[:actionMessageLimit-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeExec{code: tc.code, out: tc.out, err: tc.err}
			env := actionEnv{ContainerID: "web.app", Exec: f.exec}
			msg, err := runExec(context.Background(), env, &api.ExecAction{Command: []string{"cat", "/tmp/ok"}})
			if ok := err == nil; ok != tc.wantOK {
				t.Fatalf("success = %v (msg %q, err %v), want %v", ok, msg, err, tc.wantOK)
			}
			if err != nil {
				msg = err.Error()
			}
			if msg != tc.wantMsg {
				t.Errorf("message %q, want %q", msg, tc.wantMsg)
			}
			if len(f.calls) != 1 || strings.Join(f.calls[0], " ") != "web.app cat /tmp/ok" {
				t.Errorf("exec calls %v, want [[web.app cat /tmp/ok]]", f.calls)
			}
		})
	}
	t.Run("no exec function is failure", func(t *testing.T) {
		if _, err := runExec(context.Background(), actionEnv{}, &api.ExecAction{Command: []string{"true"}}); err == nil {
			t.Fatal("success without an exec function")
		}
	})
	t.Run("empty command is invalid", func(t *testing.T) {
		f := &fakeExec{}
		_, err := runExec(context.Background(), actionEnv{Exec: f.exec}, &api.ExecAction{})
		if !errors.Is(err, api.ErrInvalid) || len(f.calls) != 0 {
			t.Fatalf("err = %v after %d calls, want api.ErrInvalid and no call", err, len(f.calls))
		}
	})
}

func TestActionDispatch(t *testing.T) {
	f := &fakeExec{out: "from exec"}
	env := actionEnv{Exec: f.exec}
	exec := &api.ExecAction{Command: []string{"true"}}
	if msg, err := runProbeAction(context.Background(), env, &api.Probe{Exec: exec}); err != nil || msg != "from exec" {
		t.Errorf("exec probe: %q, %v", msg, err)
	}
	if msg, err := runHookAction(context.Background(), env, &api.Hook{Exec: exec}); err != nil || msg != "from exec" {
		t.Errorf("exec hook: %q, %v", msg, err)
	}
	if _, err := runProbeAction(context.Background(), env, &api.Probe{}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("probe without action: err = %v, want api.ErrInvalid", err)
	}
	if _, err := runHookAction(context.Background(), env, &api.Hook{}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("hook without action: err = %v, want api.ErrInvalid", err)
	}
}

func TestActionDescriptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"http probe", describeProbe(&api.Probe{HTTP: &api.HTTPAction{Path: "/health", Port: 8080}}), "http GET :8080/health"},
		{"http path without slash", describeProbe(&api.Probe{HTTP: &api.HTTPAction{Path: "health", Port: 80}}), "http GET :80/health"},
		{"tcp probe", describeProbe(&api.Probe{TCP: &api.TCPAction{Port: 6379}}), "tcp :6379"},
		{"exec probe", describeProbe(&api.Probe{Exec: &api.ExecAction{Command: []string{"cat", "/tmp/ok"}}}), "exec cat /tmp/ok"},
		{"exec args with spaces are quoted", describeProbe(&api.Probe{Exec: &api.ExecAction{Command: []string{"sh", "-c", "echo hi"}}}), `exec sh -c "echo hi"`},
		{"http hook", describeHook(&api.Hook{HTTP: &api.HTTPAction{Path: "/drain", Port: 9000}}), "http GET :9000/drain"},
		{"exec hook", describeHook(&api.Hook{Exec: &api.ExecAction{Command: []string{"nginx", "-s", "quit"}}}), "exec nginx -s quit"},
		{"long exec is cut", describeProbe(&api.Probe{Exec: &api.ExecAction{Command: []string{strings.Repeat("a", 300)}}}), "exec " + strings.Repeat("a", 120-len("exec ")-len("…")) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestActionHookTimeoutDefaults(t *testing.T) {
	if got := hookTimeout(&api.Hook{}); got != api.DefaultHookTimeout.D() {
		t.Errorf("unset: %s, want %s", got, api.DefaultHookTimeout)
	}
	if got := hookTimeout(&api.Hook{Timeout: api.Duration(5 * time.Second)}); got != 5*time.Second {
		t.Errorf("set: %s, want 5s", got)
	}
}
