package ambassador

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/api"
)

// Defaults of a Config.
const (
	// DefaultDialTimeout bounds each connection attempt to one backend.
	DefaultDialTimeout = 2 * time.Second
	// DefaultKeyTimeout bounds the wait for a client's shard key.
	DefaultKeyTimeout = 10 * time.Second
)

// Config is what a Proxy needs: the [[ambassador]] spec and, for
// balance = "shard", the shard count and function.
type Config struct {
	// Spec is the [[ambassador]] table. Service, Balance, ShardHeader and
	// Split are used here; Listen is where the agent opens Listener, and
	// Port is the service port the agent puts into each Backend.Addr.
	Spec api.AmbassadorSpec
	// Listener is what Run serves. Serve takes any listener instead.
	Listener net.Listener
	// Shards is the service's shard count, and ShardFunc its shard
	// function (cluster.ShardOf); both are needed for balance = "shard".
	// SetShards changes the count later (the service was re-sharded).
	Shards    int
	ShardFunc ShardFunc
	// DialTimeout bounds each attempt to connect to a backend; default
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// KeyTimeout bounds the wait for a client's shard key; default
	// DefaultKeyTimeout. A client that sends nothing first (a protocol in
	// which the server speaks first) cannot be sharded.
	KeyTimeout time.Duration
	// Dial connects to a backend; default a net.Dialer in the agent's
	// own network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Log receives connection failures; default slog.Default().
	Log *slog.Logger
}

// ServicePort is the port an ambassador connects to on each endpoint of
// its services: spec.Port, or else the port of spec.Listen. The agent
// builds each Backend.Addr from an endpoint's address and this port (or
// the node port it is published on).
func ServicePort(spec api.AmbassadorSpec) (int, error) {
	if spec.Port != 0 {
		if spec.Port < 1 || spec.Port > 65535 {
			return 0, fmt.Errorf("ambassador %s: port %d is out of range: %w", spec.Listen, spec.Port, api.ErrInvalid)
		}
		return spec.Port, nil
	}
	_, port, err := net.SplitHostPort(spec.Listen)
	if err != nil {
		return 0, fmt.Errorf("ambassador %s: listen is not host:port: %w", spec.Listen, api.ErrInvalid)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("ambassador %s: listen port %q is out of range: %w", spec.Listen, port, api.ErrInvalid)
	}
	return n, nil
}

// Proxy forwards the connections of one ambassador. Its methods are safe
// for concurrent use.
type Proxy struct {
	cfg      Config
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	log      *slog.Logger
	services map[string]*service // main and split services; fixed at New
	split    splitter
	key      keyReader

	ctx    context.Context // ends at Close: cancels dials in progress
	cancel context.CancelFunc

	shards   atomic.Int64  // the service's shard count, for balance = "shard"
	conns    atomic.Uint64 // new connections, for the split counter
	accepted atomic.Uint64
	dropped  atomic.Uint64

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	open      map[net.Conn]struct{} // client and backend conns
	wg        sync.WaitGroup        // Serve loops and connection handlers
	warned    map[string]time.Time  // last "no ready backend" warning per service
}

// New checks cfg and returns a Proxy with no backends yet: connections
// are refused (accepted and closed) until SetBackends lists ready ones.
func New(cfg Config) (*Proxy, error) {
	s := cfg.Spec
	if s.Service == "" {
		return nil, fmt.Errorf("ambassador %s: no service: %w", s.Listen, api.ErrInvalid)
	}
	switch s.Balance {
	case "", api.BalanceRoundRobin, api.BalanceLeastConn, api.BalanceSourceHash:
		if s.ShardHeader != "" {
			return nil, fmt.Errorf("ambassador %s: shard_header needs balance = \"shard\": %w", s.Listen, api.ErrInvalid)
		}
	case api.BalanceShard:
		if cfg.ShardFunc == nil || cfg.Shards < 1 {
			return nil, fmt.Errorf("ambassador %s: balance = \"shard\" needs the shard count of service %q and a shard function (got %d shards): %w",
				s.Listen, s.Service, cfg.Shards, api.ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("ambassador %s: unknown balance %q: %w", s.Listen, s.Balance, api.ErrInvalid)
	}
	total := 0
	for _, sp := range s.Split {
		if sp.Service == "" || sp.Service == s.Service || sp.Percent < 1 || sp.Percent > 99 {
			return nil, fmt.Errorf("ambassador %s: split %+v: want another service and 1 to 99 percent: %w", s.Listen, sp, api.ErrInvalid)
		}
		total += sp.Percent
	}
	if total >= 100 {
		return nil, fmt.Errorf("ambassador %s: splits add up to %d%%, nothing left for %q: %w", s.Listen, total, s.Service, api.ErrInvalid)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.KeyTimeout <= 0 {
		cfg.KeyTimeout = DefaultKeyTimeout
	}
	p := &Proxy{
		cfg:       cfg,
		dial:      cfg.Dial,
		log:       cfg.Log,
		services:  make(map[string]*service),
		split:     splitter{main: s.Service, splits: slices.Clone(s.Split)},
		key:       keyReader{header: s.ShardHeader},
		listeners: make(map[net.Listener]struct{}),
		open:      make(map[net.Conn]struct{}),
		warned:    make(map[string]time.Time),
	}
	if p.dial == nil {
		p.dial = (&net.Dialer{}).DialContext
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("ambassador", s.Listen, "service", s.Service)
	for _, name := range p.Services() {
		p.services[name] = newService(name)
	}
	p.shards.Store(int64(cfg.Shards))
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// SetShards changes the shard count of the service, for balance =
// "shard": new connections map their key with it at once. A count below
// 1 is ignored.
func (p *Proxy) SetShards(n int) {
	if n >= 1 {
		p.shards.Store(int64(n))
	}
}

// Shards returns the shard count new connections map their key with.
func (p *Proxy) Shards() int { return int(p.shards.Load()) }

// Services returns the services the proxy routes to: the main service
// first, then the split services. The agent feeds SetBackends for each.
func (p *Proxy) Services() []string {
	out := []string{p.cfg.Spec.Service}
	for _, sp := range p.cfg.Spec.Split {
		out = append(out, sp.Service)
	}
	return out
}

// SetBackends replaces the endpoint set of service: new connections use
// it at once; connections in flight keep their backend. Only backends
// with Ready set receive new connections. A service the proxy does not
// route to is ignored.
func (p *Proxy) SetBackends(service string, backends []Backend) {
	s := p.services[service]
	if s == nil {
		p.log.Debug("ambassador: endpoints of a service it does not route to", "for", service)
		return
	}
	s.set(backends)
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	st := Stats{Accepted: p.accepted.Load(), Dropped: p.dropped.Load()}
	for _, name := range p.Services() {
		st.Backends = p.services[name].stats(st.Backends)
	}
	return st
}

// Run serves cfg.Listener until ctx ends, then closes the proxy (every
// connection with it) and returns nil; or returns the error that stopped
// the listener.
func (p *Proxy) Run(ctx context.Context) error {
	if p.cfg.Listener == nil {
		return fmt.Errorf("ambassador %s: no listener: %w", p.cfg.Spec.Listen, api.ErrInvalid)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(p.cfg.Listener) }()
	select {
	case <-ctx.Done():
		p.Close()
		<-errc
		return nil
	case err := <-errc:
		p.Close()
		return err
	}
}

// Serve accepts connections on ln and proxies each until Close, when it
// returns nil; or until ln fails, when it returns the error. ln is closed
// in either case.
func (p *Proxy) Serve(ln net.Listener) error {
	if !p.add(func() { p.listeners[ln] = struct{}{} }) {
		ln.Close()
		return nil
	}
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: wait, as
				// net/http does, rather than spin or give up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("ambassador: accept", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-p.ctx.Done():
				}
				continue
			}
			return fmt.Errorf("ambassador %s: accept: %w", p.cfg.Spec.Listen, err)
		}
		backoff = 0
		p.accepted.Add(1)
		if !p.add(func() { p.open[c] = struct{}{} }) {
			c.Close()
			return nil
		}
		go p.handle(c)
	}
}

// isTemporary reports an accept error worth retrying (EMFILE, ENFILE,
// ECONNABORTED…), which the net package still marks Temporary.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// add runs register and counts one goroutine in wg, unless the proxy is
// closed; under p.mu, so that Close never waits on a WaitGroup that is
// still growing.
func (p *Proxy) add(register func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	register()
	p.wg.Add(1)
	return true
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// track registers a backend conn so that Close closes it; false when the
// proxy is already closed (the caller closes c).
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
	c.Close()
}

// Close stops every Serve, closes every connection and waits until every
// goroutine of the proxy has ended. It is idempotent and returns nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.cancel()
		for ln := range p.listeners {
			ln.Close()
		}
		for c := range p.open {
			c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// handle proxies one client connection: choose the service, read the
// shard key if the policy needs one, connect to the first candidate that
// answers, replay what was read, and copy both ways.
func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)

	name := p.split.choose(p.conns.Add(1) - 1)
	r := route{source: sourceIP(client.RemoteAddr()), shard: -1}
	var head []byte
	if p.cfg.Spec.Balance == api.BalanceShard {
		_ = client.SetReadDeadline(time.Now().Add(p.cfg.KeyTimeout))
		key, ok, data, err := p.key.read(client)
		_ = client.SetReadDeadline(time.Time{})
		if err != nil {
			if !p.isClosed() {
				p.dropped.Add(1)
				p.log.Debug("ambassador: reading the shard key", "client", client.RemoteAddr(), "err", err)
			}
			return
		}
		if len(data) == 0 { // the client closed without a byte
			return
		}
		head = data
		if ok {
			r.shard = p.cfg.ShardFunc(key, p.Shards())
		}
	}

	cands := p.services[name].candidates(p.cfg.Spec.Balance, r)
	if name != p.cfg.Spec.Service {
		// An experiment that cannot take the connection hands it back
		// to the main service.
		cands = append(cands, p.services[p.cfg.Spec.Service].candidates(p.cfg.Spec.Balance, r)...)
	}
	backend, t, ok := p.connect(cands)
	if !ok {
		if !p.isClosed() {
			p.dropped.Add(1)
			if len(cands) == 0 {
				p.warnNoBackend(name, r)
			}
		}
		return
	}
	defer t.release()
	if !p.track(backend) {
		backend.Close()
		return
	}
	defer p.untrack(backend)
	if len(head) > 0 {
		if _, err := backend.Write(head); err != nil {
			return
		}
	}
	splice(client, backend)
}

// connect dials the candidates in order until one answers, each once.
// The returned target is acquired: release it when the connection ends.
func (p *Proxy) connect(cands []target) (net.Conn, target, bool) {
	for _, t := range cands {
		if p.ctx.Err() != nil {
			break
		}
		t.acquire()
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
		c, err := p.dial(ctx, "tcp", t.addr)
		cancel()
		if err == nil {
			t.c.conns.Add(1)
			return c, t, true
		}
		t.release()
		if p.ctx.Err() != nil {
			break
		}
		t.c.fails.Add(1)
		p.log.Debug("ambassador: backend did not answer; trying the next", "backend", t.id, "addr", t.addr, "err", err)
	}
	return nil, target{}, false
}

// warnNoBackend logs that a connection found no ready backend, at most
// once per service every 10 seconds.
func (p *Proxy) warnNoBackend(service string, r route) {
	p.mu.Lock()
	last, now := p.warned[service], time.Now()
	due := now.Sub(last) >= 10*time.Second
	if due {
		p.warned[service] = now
	}
	p.mu.Unlock()
	if !due {
		return
	}
	if r.shard >= 0 {
		p.log.Warn("ambassador: no ready endpoint of the key's shard; closing the client's connection", "to", service, "shard", r.shard)
		return
	}
	p.log.Warn("ambassador: no ready endpoint; closing the client's connection", "to", service)
}

// sourceIP is the client's IP address without the port.
func sourceIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// splice copies client→backend and backend→client until both directions
// end. A direction that reaches EOF half-closes its destination
// (CloseWrite), so a client that shuts down its sending side still gets
// the whole answer; a direction that fails closes both connections, which
// ends the other one.
func splice(client, backend net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(client, backend)
	}()
	copyHalf(backend, client)
	<-done
}

// copyBufSize is the buffer of one direction of one connection. Bigger
// buffers measured no faster on loopback (integration/bench).
const copyBufSize = 16 << 10

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// Wrappers that hide ReadFrom and WriteTo from io.CopyBuffer, so that it
// copies through the buffer with read(2) and write(2).
type (
	readerOnly struct{ io.Reader }
	writerOnly struct{ io.Writer }
)

// copyHalf copies src to dst, then half-closes dst; on an error it closes
// both.
//
// It copies through a user-space buffer rather than letting io.Copy
// splice(2): for request/response traffic of a few KiB the buffer is
// faster (one read and one write per chunk, where splice makes two calls
// through a pipe and parks the same way), and it holds no pipe — two
// file descriptors per direction for the whole life of the connection.
func copyHalf(dst, src net.Conn) {
	buf := copyBufs.Get().(*[copyBufSize]byte)
	_, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf[:])
	copyBufs.Put(buf)
	if err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			dst.Close()
			src.Close()
		}
		return
	}
	dst.Close()
}
