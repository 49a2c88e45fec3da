package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// testapp agentapi talks to the group's downward API socket
// ($BERTH_AGENT_SOCKET, default /run/berth/agent.sock) from inside a
// container:
//
//	testapp agentapi METHOD PATH [BODY]          one request; prints "HTTP <code> <body>"
//	testapp agentapi --every 10s GET /v1/self    the same request again and again
//	testapp agentapi --listen :8081              relays every /v1/... request it
//	                                             gets to the socket (tests reach the
//	                                             socket through the group's address)
//
// One request exits 1 unless the answer is 2xx.
func init() {
	commands["agentapi"] = func(fs *flag.FlagSet) func() error {
		c := &agentAPI{}
		fs.StringVar(&c.socket, "socket", "", "the socket (default $BERTH_AGENT_SOCKET, else /run/berth/agent.sock)")
		fs.StringVar(&c.listen, "listen", "", "relay HTTP requests on this address to the socket")
		fs.DurationVar(&c.every, "every", 0, "repeat the request this often, forever")
		return func() error { return c.run(fs.Args()) }
	}
}

type agentAPI struct {
	socket, listen string
	every          time.Duration
	hc             *http.Client
}

func (c *agentAPI) run(args []string) error {
	if c.socket == "" {
		c.socket = os.Getenv("BERTH_AGENT_SOCKET")
	}
	if c.socket == "" {
		c.socket = "/run/berth/agent.sock"
	}
	c.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		// A new connection per request: the socket may be made anew
		// (agent restart) between two requests.
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", c.socket)
		},
	}}
	if c.listen != "" {
		return c.relay()
	}
	if len(args) < 2 || len(args) > 3 {
		return errors.New("usage: testapp agentapi [--every D] METHOD PATH [BODY] | --listen ADDR")
	}
	body := ""
	if len(args) == 3 {
		body = args[2]
	}
	for {
		code, answer, err := c.do(context.Background(), args[0], args[1], []byte(body))
		if err != nil {
			errOut.Printf("%s %s: %v", args[0], args[1], err)
		} else {
			out.Printf("HTTP %d %s", code, bytes.TrimSpace(answer))
		}
		if c.every <= 0 {
			if err != nil {
				return err
			}
			if code/100 != 2 {
				return fmt.Errorf("%s %s: HTTP %d", args[0], args[1], code)
			}
			return nil
		}
		time.Sleep(c.every)
	}
}

// do makes one request on the socket.
func (c *agentAPI) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://berth"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// relay serves /v1/... by forwarding to the socket, and answers
// GET /ready itself (for a readiness probe).
func (c *agentAPI) relay() error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ready") })
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		path := r.URL.Path
		if r.URL.RawQuery != "" {
			path += "?" + r.URL.RawQuery
		}
		code, answer, err := c.do(r.Context(), r.Method, path, body)
		if err != nil {
			// The socket did not answer: say so apart from the agent's
			// own errors.
			w.Header().Set("X-Relay-Error", "1")
			http.Error(w, "relay: "+err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(answer)
	})
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	out.Printf("relaying %s to %s", l.Addr(), c.socket)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	err = srv.Serve(l)
	if strings.Contains(fmt.Sprint(err), "closed") {
		return nil
	}
	return err
}
