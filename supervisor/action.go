package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-project/berth/api"
)

// Limits on what an action reads and reports.
const (
	// httpBodyLimit is how much of an HTTP response body is read.
	httpBodyLimit = 1024
	// actionMessageLimit caps the output quoted in a message.
	actionMessageLimit = 256
)

// execFunc runs args in the running container id and returns its exit
// code and combined output. It honours ctx.
type execFunc func(ctx context.Context, id string, args []string) (exitCode int, output string, err error)

// actionEnv is where probe and hook actions run: the group's network
// namespace for HTTP and TCP, the container for exec.
type actionEnv struct {
	// NetNS is the path of the group's pinned network namespace.
	NetNS string
	// ContainerID is the containerd ID exec actions run in.
	ContainerID string
	// Exec runs exec actions; nil makes them fail.
	Exec execFunc
	// Dial, when set, replaces the dialer into NetNS (tests).
	Dial dialFunc
}

func (e actionEnv) dialer() dialFunc {
	if e.Dial != nil {
		return e.Dial
	}
	return netnsDialer(e.NetNS)
}

// runProbeAction runs the probe's action once. A nil error is success;
// msg then says what was seen. On failure the error says why.
func runProbeAction(ctx context.Context, env actionEnv, p *api.Probe) (msg string, err error) {
	switch {
	case p.HTTP != nil:
		return runHTTP(ctx, env, p.HTTP)
	case p.TCP != nil:
		return runTCP(ctx, env, p.TCP)
	case p.Exec != nil:
		return runExec(ctx, env, p.Exec)
	}
	return "", fmt.Errorf("probe has no action (http, tcp or exec): %w", api.ErrInvalid)
}

// runHookAction runs the hook's action once, bounded by ctx only (the
// caller applies hookTimeout or the grace period). Results as
// runProbeAction.
func runHookAction(ctx context.Context, env actionEnv, h *api.Hook) (string, error) {
	switch {
	case h.HTTP != nil:
		return runHTTP(ctx, env, h.HTTP)
	case h.Exec != nil:
		return runExec(ctx, env, h.Exec)
	}
	return "", fmt.Errorf("hook has no action (http or exec): %w", api.ErrInvalid)
}

// hookTimeout is the hook's timeout, the default when unset.
func hookTimeout(h *api.Hook) time.Duration {
	if h == nil || h.Timeout <= 0 {
		return api.DefaultHookTimeout.D()
	}
	return h.Timeout.D()
}

// runHTTP GETs http://127.0.0.1:PORT/PATH from inside the group's network
// namespace. A status 200-399 is success; redirects are not followed (a
// 3xx is a success of its own).
func runHTTP(ctx context.Context, env actionEnv, a *api.HTTPAction) (string, error) {
	target := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port)) + httpPath(a.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", fmt.Errorf("http GET %s: %w", target, err)
	}
	req.Header.Set("User-Agent", "berth-probe")
	req.Header.Set("Accept", "*/*")
	for k, v := range a.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	req.Close = true
	tr := &http.Transport{
		DialContext:        env.dialer(),
		DisableKeepAlives:  true,
		DisableCompression: true,
		// No Proxy: the agent's proxy settings have no say in a group's
		// loopback.
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("http GET :%d%s: %w", a.Port, httpPath(a.Path), unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, httpBodyLimit))
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		msg := fmt.Sprintf("http GET :%d%s: status %s", a.Port, httpPath(a.Path), resp.Status)
		if b := firstBytes(string(body), actionMessageLimit); b != "" {
			msg += ": " + b
		}
		return "", errors.New(msg)
	}
	return "status " + resp.Status, nil
}

func httpPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "/" + p
	}
	return p
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the
// method and the full URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// runTCP succeeds when 127.0.0.1:PORT in the group's network namespace
// accepts a connection.
func runTCP(ctx context.Context, env actionEnv, a *api.TCPAction) (string, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port))
	conn, err := env.dialer()(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("tcp :%d: %w", a.Port, err)
	}
	conn.Close()
	return "connected to " + addr, nil
}

// runExec runs the command in the container; exit 0 is success. The
// message is the start of the command's output.
func runExec(ctx context.Context, env actionEnv, a *api.ExecAction) (string, error) {
	if len(a.Command) == 0 {
		return "", fmt.Errorf("exec: empty command: %w", api.ErrInvalid)
	}
	if env.Exec == nil {
		return "", fmt.Errorf("exec %s: no way to exec in container %s", a.Command[0], env.ContainerID)
	}
	code, out, err := env.Exec(ctx, env.ContainerID, a.Command)
	if err != nil {
		return "", fmt.Errorf("exec %s: %w", a.Command[0], err)
	}
	msg := firstBytes(out, actionMessageLimit)
	if code != 0 {
		if msg == "" {
			return "", fmt.Errorf("exit code %d", code)
		}
		return "", fmt.Errorf("exit code %d: %s", code, msg)
	}
	return msg, nil
}

// firstBytes returns at most n bytes of s, cut at a rune boundary, with
// surrounding white space trimmed.
func firstBytes(s string, n int) string {
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return strings.TrimSpace(s)
}

// describeProbe is a short human text for the probe's action, such as
// "http GET :8080/health", "tcp :6379" or "exec cat /tmp/ok".
func describeProbe(p *api.Probe) string {
	switch {
	case p == nil:
		return ""
	case p.HTTP != nil:
		return describeHTTP(p.HTTP)
	case p.TCP != nil:
		return fmt.Sprintf("tcp :%d", p.TCP.Port)
	case p.Exec != nil:
		return describeExec(p.Exec)
	}
	return "none"
}

// describeHook is describeProbe for hooks.
func describeHook(h *api.Hook) string {
	switch {
	case h == nil:
		return ""
	case h.HTTP != nil:
		return describeHTTP(h.HTTP)
	case h.Exec != nil:
		return describeExec(h.Exec)
	}
	return "none"
}

func describeHTTP(a *api.HTTPAction) string {
	return fmt.Sprintf("http GET :%d%s", a.Port, httpPath(a.Path))
}

func describeExec(a *api.ExecAction) string {
	const limit = 120
	var b strings.Builder
	b.WriteString("exec")
	for _, arg := range a.Command {
		b.WriteByte(' ')
		if arg == "" || strings.ContainsAny(arg, " \t\n'\"\\") {
			arg = strconv.Quote(arg)
		}
		b.WriteString(arg)
	}
	s := b.String()
	if len(s) > limit {
		s = firstBytes(s, limit-len("…")) + "…"
	}
	return s
}
