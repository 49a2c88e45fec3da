package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// tlsTestLogger discards logs unless CLUSTER_TEST_LOG is set.
func tlsTestLogger() *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func tlsTestContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), tlsTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// eventuallyTLS polls cond until it holds, failing after tlsTestTimeout.
func eventuallyTLS(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(tlsTestTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// raftMember is one Raft member on the TLS transport.
type raftMember struct {
	name  string
	tls   *TLS
	store *raftstore.Store
}

// startTLSRaft starts one Raft member per name on NewRaftTransport over
// 127.0.0.1 with raft's test timings: the first bootstraps, the leader
// adds the others as voters. It returns them once all know one leader.
func startTLSRaft(t *testing.T, p *testPKI, names ...string) []*raftMember {
	t.Helper()
	ctx := tlsTestContext(t)
	var members []*raftMember
	for i, name := range names {
		tl := p.tls(t, name)
		tr, err := NewRaftTransport("127.0.0.1:0", "", tl, 0, 0, tlsTestLogger())
		if err != nil {
			t.Fatal(err)
		}
		cfg := raftstore.DefaultConfig()
		cfg.NodeID = name
		cfg.DataDir = t.TempDir()
		cfg.Bootstrap = i == 0
		cfg.HeartbeatTimeout = 50 * time.Millisecond
		cfg.ElectionTimeout = 50 * time.Millisecond
		cfg.LeaderLeaseTimeout = 50 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.Logger = tlsTestLogger()
		st, err := raftstore.Open(cfg, tr)
		if err != nil {
			tr.Close()
			t.Fatalf("open %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := st.Close(); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
		})
		m := &raftMember{name: name, tls: tl, store: st}
		if i == 0 {
			eventuallyTLS(t, name+" to lead", st.IsLeader)
		} else if err := leaderOf(t, members).store.AddVoter(ctx, name, st.Addr()); err != nil {
			t.Fatalf("add voter %s: %v", name, err)
		}
		members = append(members, m)
	}
	leaderOf(t, members)
	return members
}

// leaderOf waits until exactly one member leads and all name it.
func leaderOf(t *testing.T, members []*raftMember) *raftMember {
	t.Helper()
	var leader *raftMember
	eventuallyTLS(t, "one leader known to all", func() bool {
		leader = nil
		for _, m := range members {
			if m.store.IsLeader() {
				if leader != nil {
					return false
				}
				leader = m
			}
		}
		if leader == nil {
			return false
		}
		for _, m := range members {
			if id, _ := m.store.Leader(); id != leader.name {
				return false
			}
		}
		return true
	})
	return leader
}

func putNodeCommand(t *testing.T, name string) raftstore.Command {
	t.Helper()
	cmd, err := raftstore.NewCommand(raftstore.CmdPutNode, raftstore.NodeInfo{Name: name, Status: raftstore.NodeAlive})
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestRaftOverMutualTLSReplicatesToEveryMember(t *testing.T) {
	ctx := tlsTestContext(t)
	p := newTestPKI(t, "node-a", "node-b", "node-c")
	members := startTLSRaft(t, p, "node-a", "node-b", "node-c")
	leader := leaderOf(t, members)

	servers, err := leader.store.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 {
		t.Fatalf("servers = %+v, want 3 voters", servers)
	}
	for _, s := range servers {
		if s.Suffrage != raftstore.Voter || !strings.HasPrefix(s.Address, "127.0.0.1:") {
			t.Errorf("server %+v: want a voter at a concrete 127.0.0.1 port", s)
		}
	}

	idx, err := leader.store.Apply(ctx, putNodeCommand(t, "worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if err := m.store.WaitIndex(ctx, idx); err != nil {
			t.Fatalf("%s WaitIndex(%d): %v", m.name, idx, err)
		}
		if n, ok := m.store.Node("worker-1"); !ok || n.Status != raftstore.NodeAlive {
			t.Errorf("%s: node worker-1 = %+v, %v", m.name, n, ok)
		}
	}
}

// TestRaftListenerAdmitsNodesOnly: connections that are not from a node of
// the cluster CA fail the handshake and never reach raft (Accept); the
// next node connection is the first thing Accept returns.
func TestRaftListenerAdmitsNodesOnly(t *testing.T) {
	p := newTestPKI(t, "node-a", "node-b")
	foreign := newTestPKI(t, "node-b")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newStreamLayer(ln, ln.Addr(), p.tls(t, "node-a"), tlsTestTimeout, tlsTestLogger())
	t.Cleanup(func() { s.Close() })
	addr := ln.Addr().String()

	accepted := make(chan net.Conn, 10)
	acceptDone := make(chan error, 1)
	go func() {
		for {
			c, err := s.Accept()
			if err != nil {
				acceptDone <- err
				return
			}
			accepted <- c
		}
	}()

	t.Run("plain TCP", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// An AppendEntries request starts with its type byte; anything
		// that is not a TLS record ends the connection.
		if _, err := c.Write([]byte{0, 'h', 'e', 'l', 'l', 'o', '\n'}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(tlsTestTimeout))
		if _, err := io.ReadAll(c); err != nil && !isConnReset(err) {
			t.Fatalf("read: %v, want the server to close the connection", err)
		}
	})
	agentctl, foreignB := p.cert(t, ClientName), foreign.cert(t, "node-b")
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want string
	}{
		{"no client certificate", nil, "certificate required"},
		{"certificate from another CA", &foreignB, "unknown certificate authority"},
		{"agentctl's client-only certificate", &agentctl, "bad certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: tlsTestTimeout}, "tcp", addr, clientPresenting(tc.cert))
			if err == nil {
				// TLS 1.3: the server's verdict arrives with the first read.
				c.SetReadDeadline(time.Now().Add(tlsTestTimeout))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want the server's %q alert", err, tc.want)
			}
		})
	}

	// A node gets through, by the stream layer's own Dial.
	nodeB := newStreamLayer(mustListen(t), nil, p.tls(t, "node-b"), tlsTestTimeout, tlsTestLogger())
	t.Cleanup(func() { nodeB.Close() })
	out, err := nodeB.Dial(raft.ServerAddress(addr), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var in net.Conn
	select {
	case in = <-accepted:
	case <-time.After(tlsTestTimeout):
		t.Fatal("the node's connection was not accepted")
	}
	defer in.Close()
	cs := in.(*tls.Conn).ConnectionState()
	if name, err := PeerNode(&cs); err != nil || name != "node-b" {
		t.Fatalf("first accepted connection is from %q (%v), want node-b: a refused client got through", name, err)
	}
	if _, err := out.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(in, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}

	// Dialling a server of another CA fails.
	other := newStreamLayer(mustListen(t), nil, foreign.tls(t, "node-b"), tlsTestTimeout, tlsTestLogger())
	t.Cleanup(func() { other.Close() })
	if c, err := nodeB.Dial(raft.ServerAddress(other.ln.Addr().String()), 0); err == nil {
		c.Close()
		t.Fatal("dialled a member of another cluster")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acceptDone:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(tlsTestTimeout):
		t.Fatal("Accept did not return after Close")
	}
}

func TestNewRaftTransportAdvertise(t *testing.T) {
	tl := newTestPKI(t, "node-a").tls(t, "node-a")
	for _, tc := range []struct {
		name, bind, advertise string
		want                  string // prefix of LocalAddr; empty: an ErrInvalid
	}{
		{"bound IP", "127.0.0.1:0", "", "127.0.0.1:"},
		{"advertised IP and port", "127.0.0.1:0", "127.0.0.9:7947", "127.0.0.9:7947"},
		{"advertised port 0 is the bound port", "127.0.0.1:0", "127.0.0.9:0", "127.0.0.9:"},
		{"wildcard bind without advertise", "0.0.0.0:0", "", ""},
		{"host name", "127.0.0.1:0", "localhost:7947", ""},
		{"wildcard advertise", "127.0.0.1:0", "0.0.0.0:7947", ""},
		{"no port", "127.0.0.1:0", "127.0.0.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewRaftTransport(tc.bind, tc.advertise, tl, 0, 0, tlsTestLogger())
			if tc.want == "" {
				if !errors.Is(err, api.ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			got := string(tr.LocalAddr())
			if !strings.HasPrefix(got, tc.want) || strings.HasSuffix(got, ":0") {
				t.Fatalf("LocalAddr = %s, want %s… with a concrete port", got, tc.want)
			}
		})
	}
	if _, err := NewRaftTransport("127.0.0.1:0", "", nil, 0, 0, nil); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("without TLS: err = %v, want ErrInvalid", err)
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func isConnReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}
