package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// testapp lease is a candidate in a leader election over the group's
// downward API socket:
//
//	testapp lease --lease leader --out /shared/log [--every 10ms] [--listen :8080]
//
// It campaigns in a loop. Once granted, and for as long as it believes it
// holds the lease, it appends "<token> <unix-nanos> <holder>" lines to
// --out: before each line it checks the time against its deadline, the
// expiry the agent last answered (a long-poll renews that belief every
// third of the TTL, and answers at once when the agent says the lease is
// no longer held). When it stops believing it resigns, which hands the
// lease over at once. With --listen it also serves testapp serve's routes
// (POST /ready?v=false makes its readiness probe fail) and:
//
//	GET /lease    its belief: {"held": bool, "token": N, "holder": "...", "deadline": "..."}
//	GET /elector  the agent's GET / (the leader-elector sidecar's answer)
func init() {
	commands["lease"] = func(fs *flag.FlagSet) func() error {
		l := &leaser{}
		fs.StringVar(&l.lease, "lease", "leader", "the lease to campaign for")
		fs.StringVar(&l.out, "out", "", "append a line here every --every while holding the lease")
		fs.DurationVar(&l.every, "every", 10*time.Millisecond, "how often to append while holding")
		fs.StringVar(&l.listen, "listen", "", "serve /ready, /lease and /elector on this address")
		fs.StringVar(&l.socket, "socket", "", "the socket (default $BERTH_AGENT_SOCKET, else /run/berth/agent.sock)")
		return l.run
	}
}

type leaser struct {
	lease, out, listen, socket string
	every                      time.Duration
	hc                         *http.Client

	mu     sync.Mutex
	belief belief
}

// belief is what the candidate thinks: held until deadline with token.
type belief struct {
	Held     bool      `json:"held"`
	Token    uint64    `json:"token,omitempty"`
	Holder   string    `json:"holder,omitempty"`
	Deadline time.Time `json:"deadline,omitzero"`
}

// leaseAnswer is the part of the agent's lease answer (api.Lease) used here.
type leaseAnswer struct {
	Holder string    `json:"holder"`
	Token  uint64    `json:"token"`
	Expiry time.Time `json:"expiry"`
	TTL    string    `json:"ttl"` // "1s"
	Held   bool      `json:"held"`
}

func (l *leaser) run() error {
	if l.socket == "" {
		l.socket = os.Getenv("BERTH_AGENT_SOCKET")
	}
	if l.socket == "" {
		l.socket = "/run/berth/agent.sock"
	}
	l.hc = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true, // the socket may be made anew by a restarted agent
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", l.socket)
		},
	}}
	if l.listen != "" {
		go l.serve()
	}
	for {
		ans, err := l.campaign()
		if err != nil {
			errOut.Printf("campaign: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !ans.Held {
			continue
		}
		l.hold(ans)
	}
}

// campaign asks for the lease; it returns when granted or when the
// agent's timeout passes (an error).
func (l *leaser) campaign() (leaseAnswer, error) {
	var ans leaseAnswer
	code, body, err := l.call(context.Background(), http.MethodPost, "/v1/leases/"+l.lease+"/campaign", `{"timeout": "30s"}`)
	if err != nil {
		return ans, err
	}
	if code != http.StatusOK {
		return ans, fmt.Errorf("HTTP %d %s", code, bytes.TrimSpace(body))
	}
	return ans, json.Unmarshal(body, &ans)
}

// hold appends lines while the belief lasts, keeping it fresh with
// long-polls, then resigns.
func (l *leaser) hold(ans leaseAnswer) {
	token := ans.Token
	l.setBelief(belief{Held: true, Token: token, Holder: ans.Holder, Deadline: ans.Expiry})
	out.Printf("granted %s token %d holder %s until %s", l.lease, token, ans.Holder, ans.Expiry.Format(time.RFC3339Nano))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ttl, err := time.ParseDuration(ans.TTL)
	if err != nil {
		ttl = time.Second
	}
	go func() {
		defer close(done)
		l.refresh(ctx, token, ttl)
	}()
	var f *os.File
	if l.out != "" {
		if f, err = os.OpenFile(l.out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err != nil {
			errOut.Printf("open %s: %v", l.out, err)
		}
	}
	lines := 0
	for {
		now := time.Now()
		b := l.getBelief()
		if !b.Held || b.Token != token || !now.Before(b.Deadline) {
			break
		}
		if f != nil {
			if _, err := fmt.Fprintf(f, "%d %d %s\n", token, now.UnixNano(), ans.Holder); err != nil {
				errOut.Printf("append: %v", err)
			}
			lines++
		}
		time.Sleep(l.every)
	}
	if f != nil {
		f.Close()
	}
	cancel()
	<-done
	l.setBelief(belief{})
	out.Printf("lost %s token %d after %d lines", l.lease, token, lines)
	// Hand the lease over at once (the agent refuses it if we no longer
	// hold it, which is fine).
	code, body, err := l.call(context.Background(), http.MethodDelete, "/v1/leases/"+l.lease, "")
	out.Printf("resign: %d %s %v", code, bytes.TrimSpace(body), err)
}

// refresh long-polls the lease until ctx ends: each answer that still
// holds token moves the deadline to its expiry; an answer that does not
// ends the belief.
func (l *leaser) refresh(ctx context.Context, token uint64, ttl time.Duration) {
	wait := max(ttl/3, 50*time.Millisecond)
	for ctx.Err() == nil {
		q := url.Values{"wait": {wait.String()}, "token": {fmt.Sprint(token)}}
		code, body, err := l.call(ctx, http.MethodGet, "/v1/leases/"+l.lease+"?"+q.Encode(), "")
		if err != nil || code != http.StatusOK {
			if ctx.Err() == nil {
				errOut.Printf("refresh: %d %s %v", code, bytes.TrimSpace(body), err)
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		var ans leaseAnswer
		if err := json.Unmarshal(body, &ans); err != nil {
			continue
		}
		l.mu.Lock()
		if ans.Held && ans.Token == token {
			l.belief.Deadline = ans.Expiry
		} else {
			l.belief.Held = false
		}
		held := l.belief.Held
		l.mu.Unlock()
		if !held {
			return
		}
	}
}

func (l *leaser) setBelief(b belief) {
	l.mu.Lock()
	l.belief = b
	l.mu.Unlock()
}

func (l *leaser) getBelief() belief {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.belief
}

// call makes one request on the socket.
func (l *leaser) call(ctx context.Context, method, path, body string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://berth"+path, bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, nil, err
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// serve serves testapp serve's routes and the candidate's own.
func (l *leaser) serve() {
	s := newServer()
	mux := http.NewServeMux()
	mux.Handle("/", s.handler())
	mux.HandleFunc("GET /lease", func(w http.ResponseWriter, r *http.Request) {
		b := l.getBelief()
		if b.Held && !time.Now().Before(b.Deadline) {
			b.Held = false
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b)
	})
	mux.HandleFunc("GET /elector", func(w http.ResponseWriter, r *http.Request) {
		code, body, err := l.call(r.Context(), http.MethodGet, "/", "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write(body)
	})
	srv := &http.Server{Addr: l.listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		errOut.Printf("listen %s: %v", l.listen, err)
		os.Exit(1)
	}
}
