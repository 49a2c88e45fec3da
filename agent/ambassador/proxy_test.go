package ambassador

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// testBackend is a real TCP server on 127.0.0.1: on every connection it
// writes its ID and a newline, then echoes what it reads until EOF, then
// closes. What a client reads back therefore says which backend it reached
// and whether its bytes (replayed shard-key bytes included) arrived whole.
type testBackend struct {
	id   string
	addr string
	ln   net.Listener

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startBackend(t *testing.T, id string) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBackend{id: id, addr: ln.Addr().String(), ln: ln, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() {
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
					c.Close()
				}()
				if _, err := io.WriteString(c, id+"\n"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

// stop closes the listener and every connection and waits for the
// backend's goroutines. A stopped backend refuses connections.
func (b *testBackend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *testBackend) backend(ready bool) Backend {
	return Backend{ID: b.id, Addr: b.addr, Ready: ready}
}

// startProxy serves a proxy for cfg on 127.0.0.1 and returns it with its
// address; Cleanup closes it and checks that Serve returned nil.
func startProxy(t *testing.T, cfg Config) (*Proxy, string) {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Close; want nil", err)
		}
	})
	return p, ln.Addr().String()
}

func spec(balance api.Balance) api.AmbassadorSpec {
	return api.AmbassadorSpec{Listen: "127.0.0.1:6379", Service: "cache", Balance: balance}
}

// exchange connects to addr (from source, an IP on 127/8, when not
// empty), sends payload, half-closes and reads everything back. It returns
// the ID of the backend that answered and the echo of payload; an empty
// ID means the proxy closed the connection without an answer.
func exchange(t *testing.T, addr, source, payload string) (id, echo string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial the proxy: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// A write fails only when the proxy has already closed the
	// connection (reset): that is "no answer", which callers check.
	if payload != "" {
		if _, err := io.WriteString(c, payload); err != nil {
			return "", ""
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", ""
	}
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("read: %v", err)
	}
	id, echo, _ = strings.Cut(string(got), "\n")
	return id, echo
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// hold opens a connection through the proxy and keeps it open, returning
// the ID of the backend that answered; Cleanup closes it.
func hold(t *testing.T, addr string) (net.Conn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("held connection: no answer: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, strings.TrimSuffix(line, "\n")
}

// backendStats returns the counters of the backend id of service.
func backendStats(p *Proxy, service, id string) BackendStats {
	for _, b := range p.Stats().Backends {
		if b.Service == service && b.ID == id {
			return b
		}
	}
	return BackendStats{}
}

// waitFor polls cond until it holds or 5 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceRoundRobin)})
	p.SetBackends("cache", []Backend{a.backend(true), b.backend(true), c.backend(true)})
	count := map[string]int{}
	for i := range 30 {
		id, echo := exchange(t, addr, "", fmt.Sprintf("ping %d", i))
		if echo != fmt.Sprintf("ping %d", i) {
			t.Fatalf("connection %d: echo %q", i, echo)
		}
		count[id]++
	}
	for _, id := range []string{"a", "b", "c"} {
		if count[id] != 10 {
			t.Errorf("round-robin over 30 connections: %v; want 10 each", count)
			break
		}
	}
	if st := backendStats(p, "cache", "a"); st.Connections != 10 || st.Failures != 0 {
		t.Errorf("stats of a = %+v; want 10 connections, no failure", st)
	}
}

// TestLeastConnPrefersTheIdleBackend leaves two live connections on one
// backend and none on the other: the next two connections both go to the
// idle one, where round-robin would alternate.
func TestLeastConnPrefersTheIdleBackend(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceLeastConn)})
	p.SetBackends("cache", []Backend{a.backend(true), b.backend(true)})

	held := map[string][]net.Conn{}
	for range 4 {
		c, id := hold(t, addr)
		held[id] = append(held[id], c)
	}
	if len(held["a"]) != 2 || len(held["b"]) != 2 {
		t.Fatalf("4 connections to 2 idle backends: a %d, b %d; want 2 each", len(held["a"]), len(held["b"]))
	}
	for _, c := range held["b"] {
		c.Close()
	}
	waitFor(t, "b has no live connection", func() bool { return backendStats(p, "cache", "b").Active == 0 })

	for i := range 2 {
		if _, id := hold(t, addr); id != "b" {
			t.Fatalf("connection %d with a: 2 live, b: %d live went to %s; want b", i, i, id)
		}
	}
	if st := backendStats(p, "cache", "a"); st.Active != 2 {
		t.Errorf("a has %d live connections; want 2", st.Active)
	}
}

// TestSourceHashKeepsASourceOnOneBackend connects from 8 source addresses
// on 127/8, 5 times each: every source stays on one backend. Removing one
// backend moves only the sources it had.
func TestSourceHashKeepsASourceOnOneBackend(t *testing.T) {
	backends := []*testBackend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceSourceHash)})
	set := func(bs ...*testBackend) {
		var list []Backend
		for _, b := range bs {
			list = append(list, b.backend(true))
		}
		p.SetBackends("cache", list)
	}
	set(backends...)
	owner := map[string]string{}
	used := map[string]bool{}
	for i := 2; i < 10; i++ {
		src := fmt.Sprintf("127.0.0.%d", i)
		for j := range 5 {
			id, _ := exchange(t, addr, src, "x")
			switch {
			case id == "":
				t.Fatalf("%s: no answer", src)
			case j == 0:
				owner[src] = id
				used[id] = true
			case id != owner[src]:
				t.Fatalf("%s reached %s, then %s; want one backend", src, owner[src], id)
			}
		}
	}
	if len(used) < 2 {
		t.Fatalf("8 sources all went to %v; want them spread", owner)
	}

	// Remove the backend of the first source.
	gone := owner["127.0.0.2"]
	var rest []*testBackend
	for _, b := range backends {
		if b.id != gone {
			rest = append(rest, b)
		}
	}
	set(rest...)
	for src, was := range owner {
		id, _ := exchange(t, addr, src, "x")
		switch {
		case id == gone || id == "":
			t.Errorf("%s reached %q after %s was removed", src, id, gone)
		case was != gone && id != was:
			t.Errorf("%s moved from %s to %s when only %s was removed", src, was, id, gone)
		}
	}
}

// TestSplitSendsTheExperimentItsShare sends 1000 connections with a 10 %
// split: the experiment gets 10 % ± 5 %.
func TestSplitSendsTheExperimentItsShare(t *testing.T) {
	main, exp := startBackend(t, "main"), startBackend(t, "exp")
	s := spec(api.BalanceRoundRobin)
	s.Split = []api.SplitSpec{{Service: "cache-v2", Percent: 10}}
	p, addr := startProxy(t, Config{Spec: s})
	if got := p.Services(); strings.Join(got, ",") != "cache,cache-v2" {
		t.Fatalf("Services() = %v; want [cache cache-v2]", got)
	}
	p.SetBackends("cache", []Backend{main.backend(true)})
	p.SetBackends("cache-v2", []Backend{exp.backend(true)})
	count := map[string]int{}
	for range 1000 {
		id, _ := exchange(t, addr, "", "")
		count[id]++
	}
	if count["exp"] < 50 || count["exp"] > 150 || count["main"]+count["exp"] != 1000 {
		t.Fatalf("1000 connections: %v; want 100 ± 50 to exp, the rest to main", count)
	}
}

// TestSplitFallsBackToTheMainService: an experiment without a ready
// endpoint hands its share back to the main service.
func TestSplitFallsBackToTheMainService(t *testing.T) {
	main := startBackend(t, "main")
	s := spec(api.BalanceRoundRobin)
	s.Split = []api.SplitSpec{{Service: "cache-v2", Percent: 50}}
	p, addr := startProxy(t, Config{Spec: s})
	p.SetBackends("cache", []Backend{main.backend(true)})
	for i := range 10 {
		if id, _ := exchange(t, addr, "", ""); id != "main" {
			t.Fatalf("connection %d reached %q; want main", i, id)
		}
	}
}

// testShardOf maps "k<n>" to shard n mod shards: a shard function whose
// answer the test knows.
func testShardOf(key string, shards int) int {
	n, err := strconv.Atoi(strings.TrimPrefix(key, "k"))
	if err != nil {
		return shards - 1
	}
	return n % shards
}

// shardBackends starts shards × 2 backends "s<shard>r<replica>".
func shardBackends(t *testing.T, shards int) []Backend {
	var list []Backend
	for s := range shards {
		for r := range 2 {
			b := startBackend(t, fmt.Sprintf("s%dr%d", s, r))
			list = append(list, Backend{ID: b.id, Addr: b.addr, Shard: s, Ready: true})
		}
	}
	return list
}

func TestShardRoutesAKeyByItsFirstLine(t *testing.T) {
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceShard), Shards: 3, ShardFunc: testShardOf})
	p.SetBackends("cache", shardBackends(t, 3))
	for i := range 12 {
		key := fmt.Sprintf("k%d", i)
		// The key line, more bytes after it, and a CRLF ending: all of
		// it must reach the backend.
		payload := key + "\r\nSET " + key + " value\r\n"
		id, echo := exchange(t, addr, "", payload)
		if want := fmt.Sprintf("s%d", i%3); !strings.HasPrefix(id, want+"r") {
			t.Errorf("key %s reached %q; want a replica of shard %d", key, id, i%3)
		}
		if echo != payload {
			t.Errorf("key %s: backend got %q; want %q (the bytes read for the key replayed)", key, echo, payload)
		}
	}
	// A line the stream ends in, without a newline, is the key too.
	if id, echo := exchange(t, addr, "", "k4"); !strings.HasPrefix(id, "s1r") || echo != "k4" {
		t.Errorf("key k4 without newline: %q, echo %q; want shard 1 and the echo", id, echo)
	}
}

// TestSetShardsRemapsNewConnections: after a re-shard, new connections
// map their key with the new count.
func TestSetShardsRemapsNewConnections(t *testing.T) {
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceShard), Shards: 2, ShardFunc: testShardOf})
	p.SetBackends("cache", shardBackends(t, 3))
	if id, _ := exchange(t, addr, "", "k2\n"); !strings.HasPrefix(id, "s0r") {
		t.Fatalf("k2 with 2 shards reached %q; want shard 0", id)
	}
	p.SetShards(0) // ignored
	p.SetShards(3)
	if p.Shards() != 3 {
		t.Fatalf("Shards() = %d after SetShards(3)", p.Shards())
	}
	if id, _ := exchange(t, addr, "", "k2\n"); !strings.HasPrefix(id, "s2r") {
		t.Errorf("k2 with 3 shards reached %q; want shard 2", id)
	}
}

func TestShardRoutesAKeyByHTTPHeader(t *testing.T) {
	s := spec(api.BalanceShard)
	s.ShardHeader = "X-Tenant"
	p, addr := startProxy(t, Config{Spec: s, Shards: 4, ShardFunc: testShardOf})
	p.SetBackends("cache", shardBackends(t, 4))
	for i := range 8 {
		req := fmt.Sprintf("POST /items HTTP/1.1\r\nHost: cache\r\nx-tenant:  k%d \r\nContent-Length: 5\r\n\r\nhello", i)
		id, echo := exchange(t, addr, "", req)
		if want := fmt.Sprintf("s%dr", i%4); !strings.HasPrefix(id, want) {
			t.Errorf("X-Tenant k%d reached %q; want a replica of shard %d", i, id, i%4)
		}
		if echo != req {
			t.Errorf("X-Tenant k%d: backend got %q; want the whole request", i, echo)
		}
	}
	// Without the header, any backend answers (the request is not lost).
	req := "GET /healthz HTTP/1.1\r\nHost: cache\r\n\r\n"
	if id, echo := exchange(t, addr, "", req); id == "" || echo != req {
		t.Errorf("request without the header: backend %q, echo %q; want an answer and the request", id, echo)
	}
}

// TestShardWithoutReadyReplicaClosesTheConnection: a key whose shard has
// no ready endpoint is not sent to another shard.
func TestShardWithoutReadyReplicaClosesTheConnection(t *testing.T) {
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceShard), Shards: 2, ShardFunc: testShardOf})
	list := shardBackends(t, 2)
	for i := range list {
		list[i].Ready = list[i].Shard == 0
	}
	p.SetBackends("cache", list)
	if id, _ := exchange(t, addr, "", "k1\n"); id != "" {
		t.Fatalf("key of shard 1, which has no ready replica, reached %s", id)
	}
	if id, _ := exchange(t, addr, "", "k2\n"); !strings.HasPrefix(id, "s0r") {
		t.Fatalf("key of shard 0 reached %q", id)
	}
	if st := p.Stats(); st.Dropped != 1 {
		t.Errorf("stats: %d dropped; want 1", st.Dropped)
	}
}

// TestNotReadyBackendGetsNoNewConnections marks a backend not ready and
// checks the very next connections, then that it comes back when ready.
func TestNotReadyBackendGetsNoNewConnections(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceRoundRobin)})
	p.SetBackends("cache", []Backend{a.backend(true), b.backend(true)})
	// A connection in flight to b must survive b turning un-ready.
	held, heldID := hold(t, addr)
	if heldID != "a" && heldID != "b" {
		t.Fatalf("held connection reached %q", heldID)
	}
	p.SetBackends("cache", []Backend{a.backend(heldID != "a"), b.backend(heldID != "b")})
	for i := range 10 {
		if id, _ := exchange(t, addr, "", "x"); id == heldID || id == "" {
			t.Fatalf("connection %d after %s turned un-ready reached %q", i, heldID, id)
		}
	}
	if _, err := io.WriteString(held, "still here"); err != nil {
		t.Fatalf("in-flight connection broke when its backend turned un-ready: %v", err)
	}
	buf := make([]byte, len("still here"))
	_ = held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(held, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("in-flight connection: read %q, %v", buf, err)
	}
	p.SetBackends("cache", []Backend{a.backend(true), b.backend(true)})
	seen := map[string]bool{}
	for range 4 {
		id, _ := exchange(t, addr, "", "x")
		seen[id] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("after both are ready again, 4 connections reached %v; want a and b", seen)
	}
}

// TestDeadBackendIsSkippedWithARetry: a backend whose listener is closed
// refuses; every client is still answered, by the other backend, and the
// failures are counted. With every backend dead, the client's connection
// is closed without an answer.
func TestDeadBackendIsSkippedWithARetry(t *testing.T) {
	dead, live := startBackend(t, "dead"), startBackend(t, "live")
	dead.stop()
	for _, balance := range []api.Balance{api.BalanceRoundRobin, api.BalanceLeastConn, api.BalanceSourceHash} {
		t.Run(string(balance), func(t *testing.T) {
			p, addr := startProxy(t, Config{Spec: spec(balance)})
			p.SetBackends("cache", []Backend{dead.backend(true), live.backend(true)})
			for i := range 10 {
				if id, echo := exchange(t, addr, fmt.Sprintf("127.0.0.%d", 2+i), "hi"); id != "live" || echo != "hi" {
					t.Fatalf("connection %d: %q, echo %q; want live", i, id, echo)
				}
			}
			if st := backendStats(p, "cache", "dead"); st.Failures == 0 || st.Connections != 0 || st.Active != 0 {
				t.Errorf("stats of the dead backend: %+v; want failures, no connection, none active", st)
			}
		})
	}
	t.Run("all dead", func(t *testing.T) {
		p, addr := startProxy(t, Config{Spec: spec(api.BalanceRoundRobin)})
		p.SetBackends("cache", []Backend{dead.backend(true), {ID: "dead2", Addr: dead.addr, Ready: true}})
		if id, _ := exchange(t, addr, "", "hi"); id != "" {
			t.Fatalf("reached %q with every backend dead", id)
		}
		st := p.Stats()
		if st.Dropped != 1 || backendStats(p, "cache", "dead").Failures != 1 || backendStats(p, "cache", "dead2").Failures != 1 {
			t.Errorf("stats %+v; want 1 dropped and one failure on each backend (each tried once)", st)
		}
	})
}

// TestDialTimeoutBoundsEachTry: a backend that never answers the SYN
// costs one dial timeout, then the next backend answers.
func TestDialTimeoutBoundsEachTry(t *testing.T) {
	live := startBackend(t, "live")
	hung := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "192.0.2.1:9" { // TEST-NET: stands for a host that drops SYNs
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceRoundRobin), DialTimeout: 100 * time.Millisecond, Dial: hung})
	p.SetBackends("cache", []Backend{{ID: "a-hung", Addr: "192.0.2.1:9", Ready: true}, live.backend(true)})
	for i := range 2 { // one of them tries the hung backend first
		start := time.Now()
		if id, _ := exchange(t, addr, "", "x"); id != "live" {
			t.Fatalf("connection %d reached %q", i, id)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("connection %d took %s; the dial timeout is 100ms", i, d)
		}
	}
	if st := backendStats(p, "cache", "a-hung"); st.Failures != 1 {
		t.Errorf("hung backend: %+v; want 1 failure", st)
	}
}

// TestBackendsChangeLive: connections in flight keep their backend when
// it is removed; new ones go to the new set at once; a removed backend's
// counters stay while it has live connections.
func TestBackendsChangeLive(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p, addr := startProxy(t, Config{Spec: spec(api.BalanceRoundRobin)})
	p.SetBackends("cache", []Backend{a.backend(true)})
	held, id := hold(t, addr)
	if id != "a" {
		t.Fatalf("reached %q; want a", id)
	}
	p.SetBackends("cache", []Backend{b.backend(true)})
	if id, _ := exchange(t, addr, "", "x"); id != "b" {
		t.Fatalf("after the update, reached %q; want b", id)
	}
	if st := backendStats(p, "cache", "a"); st.Listed || st.Active != 1 {
		t.Errorf("removed backend with a live connection: %+v; want unlisted, 1 active", st)
	}
	if _, err := io.WriteString(held, "ping"); err != nil {
		t.Fatal(err)
	}
	held.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(held)
	if string(got) != "ping" {
		t.Fatalf("in-flight connection to the removed backend read %q; want ping", got)
	}
	waitFor(t, "the removed backend's counters are gone", func() bool { return backendStats(p, "cache", "a").ID == "" })
}

// TestCloseEndsEverything closes a proxy with live connections: Serve
// returns nil, the clients see their connections end, and every goroutine
// the proxy started is gone.
func TestCloseEndsEverything(t *testing.T) {
	a := startBackend(t, "a")
	before := runtime.NumGoroutine()
	p, err := New(Config{Spec: spec(api.BalanceRoundRobin), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	p.SetBackends("cache", []Backend{a.backend(true)})
	var held []net.Conn
	for range 5 {
		c, _ := hold(t, ln.Addr().String())
		held = append(held, c)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s: a connection it should have closed is still open")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Close = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	for i, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !isReset(err) {
			t.Errorf("held connection %d: %v; want it closed by the proxy", i, err)
		}
		c.Close()
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("the listener still accepts after Close")
	}
	waitFor(t, fmt.Sprintf("the goroutines are back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
	p.Close() // idempotent
}

func TestRunEndsWithItsContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Spec: spec(""), Listener: ln, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a := startBackend(t, "a")
	p.SetBackends("cache", []Backend{a.backend(true)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	if id, _ := exchange(t, ln.Addr().String(), "", "x"); id != "a" {
		t.Fatalf("through Run: reached %q", id)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
}

func TestNewRefusesWhatItCannotServe(t *testing.T) {
	shard := spec(api.BalanceShard)
	header := spec(api.BalanceRoundRobin)
	header.ShardHeader = "X-Key"
	tooMuch := spec("")
	tooMuch.Split = []api.SplitSpec{{Service: "a", Percent: 50}, {Service: "b", Percent: 50}}
	for name, cfg := range map[string]Config{
		"no service":             {Spec: api.AmbassadorSpec{Listen: "127.0.0.1:1"}},
		"unknown balance":        {Spec: spec("random")},
		"shard without function": {Spec: shard, Shards: 3},
		"shard without count":    {Spec: shard, ShardFunc: testShardOf},
		"header without shard":   {Spec: header},
		"splits of 100%":         {Spec: tooMuch},
	} {
		if _, err := New(cfg); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("%s: New = %v; want ErrInvalid", name, err)
		}
	}
}
