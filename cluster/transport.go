package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// maxHandshakes bounds the TLS handshakes the Raft listener runs at once;
// further connections wait in the kernel's backlog.
const maxHandshakes = 64

// NewRaftTransport listens on bind (host:port; port 0 picks a free port)
// and returns the Raft transport of this agent: raft's NetworkTransport
// over mutual TLS with t, for raftstore.Open. Only nodes of the cluster CA
// get through to raft (PeerNode); a plain TCP connection, a certificate of
// another CA and agentctl's certificate fail the handshake and are logged
// and closed without raft seeing them. Outgoing connections accept any
// node of the cluster CA at the dialled address (see TLS).
//
// advertise is the address the other members dial, recorded in the Raft
// configuration: a specific IP and port. Empty means the bound address,
// which then must be a specific IP; a port of 0 means the bound port.
// maxPool is how many idle connections are kept per peer and timeout the
// I/O deadline of an RPC and of a handshake; zero means raftstore's
// defaults (DefaultMaxPool, DefaultTransportTimeout). The transport logs
// as "raft.transport" to logger.
//
// raftstore.Open owns the transport from then on; raft closes it when the
// store closes. Close it yourself only when Open fails.
func NewRaftTransport(bind, advertise string, t *TLS, maxPool int, timeout time.Duration, logger *slog.Logger) (*raft.NetworkTransport, error) {
	if t == nil {
		return nil, fmt.Errorf("raft transport: no TLS configuration: agents talk to each other over mutual TLS only: %w", api.ErrInvalid)
	}
	if maxPool < 0 || timeout < 0 {
		return nil, fmt.Errorf("raft transport: max pool %d and timeout %s must not be negative: %w", maxPool, timeout, api.ErrInvalid)
	}
	if maxPool == 0 {
		maxPool = raftstore.DefaultMaxPool
	}
	if timeout == 0 {
		timeout = raftstore.DefaultTransportTimeout
	}
	if logger == nil {
		logger = slog.Default()
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft transport: %w", err)
	}
	adv, err := advertiseAddr(advertise, ln.Addr().(*net.TCPAddr))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("raft transport: %w", err)
	}
	stream := newStreamLayer(ln, adv, t, timeout, logger.With("logger", "raft.transport"))
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: maxPool,
		Timeout: timeout,
		Logger:  raftstore.NewHCLogger(logger, "raft.transport"),
	}), nil
}

// advertiseAddr is the address to advertise for a listener bound at bound.
func advertiseAddr(advertise string, bound *net.TCPAddr) (*net.TCPAddr, error) {
	if advertise == "" {
		if bound.IP == nil || bound.IP.IsUnspecified() {
			return nil, fmt.Errorf("bound to %s, which other members cannot dial: set an advertise address: %w", bound, api.ErrInvalid)
		}
		return bound, nil
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("advertise %q: %v: %w", advertise, err, api.ErrInvalid)
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("advertise %q: give a specific IP address, not a host name or %s: %w", advertise, host, api.ErrInvalid)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("advertise %q: bad port: %w", advertise, api.ErrInvalid)
	}
	if p == 0 {
		p = uint64(bound.Port)
	}
	return &net.TCPAddr{IP: ip, Port: int(p)}, nil
}

// streamLayer is a raft.StreamLayer over mutual TLS. Its own accept loop
// runs every handshake in a goroutine of its own, bounded by the
// transport's timeout, so that a peer that connects and says nothing
// blocks no one; Accept hands raft only connections from verified nodes.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config // nodes only
	client    *tls.Config
	timeout   time.Duration
	log       *slog.Logger

	conns  chan net.Conn
	ctx    context.Context // cancelled by Close: ends handshakes
	cancel context.CancelFunc
	slots  chan struct{} // maxHandshakes
	wg     sync.WaitGroup
	once   sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(ln net.Listener, advertise net.Addr, t *TLS, timeout time.Duration, log *slog.Logger) *streamLayer {
	ctx, cancel := context.WithCancel(context.Background())
	s := &streamLayer{
		ln:        ln,
		advertise: advertise,
		server:    t.nodeServer(),
		client:    t.Client(),
		timeout:   timeout,
		log:       log,
		conns:     make(chan net.Conn),
		ctx:       ctx,
		cancel:    cancel,
		slots:     make(chan struct{}, maxHandshakes),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *streamLayer) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-s.slots
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as
			// net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("raft listener: accept failed", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		s.wg.Add(1)
		go s.handshake(c)
	}
}

// handshake verifies one incoming connection and hands it to Accept.
func (s *streamLayer) handshake(c net.Conn) {
	defer s.wg.Done()
	tc := tls.Server(c, s.server)
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	<-s.slots
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("raft listener: refused a connection", "remote", c.RemoteAddr().String(), "error", err)
		}
		c.Close()
		return
	}
	select {
	case s.conns <- tc:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection from a verified node.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, fmt.Errorf("raft listener %s: %w", s.advertise, net.ErrClosed)
	}
}

// Close stops listening and ends the handshakes under way. Connections
// already accepted are raft's to close.
func (s *streamLayer) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		err = s.ln.Close()
		s.wg.Wait()
	})
	return err
}

// Addr is the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to the member at address and completes the TLS handshake
// within timeout (the transport's timeout when zero).
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = s.timeout
	}
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(address), s.client)
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", address, err)
	}
	return c, nil
}
