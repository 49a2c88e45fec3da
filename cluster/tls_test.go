package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster/pki"
)

// tlsTestTimeout bounds every wait of the TLS, transport and forwarding
// tests; they finish far sooner.
const tlsTestTimeout = 10 * time.Second

// testPKI is what `agentctl tls init` writes, in a temporary directory: a
// cluster CA, node certificates (server and client use, no IP addresses,
// so nothing can pass by matching the dialled host) and agentctl's
// client-only certificate.
type testPKI struct {
	dir string
	ca  *pki.CA
}

func newTestPKI(t *testing.T, nodes ...string) *testPKI {
	t.Helper()
	ca, err := pki.NewCA("test cluster CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: t.TempDir(), ca: ca}
	if err := pki.WriteCA(p.dir, ca, false); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		p.issue(t, n, pki.NodeCert{Name: n, Server: true, Client: true})
	}
	p.issue(t, ClientName, pki.NodeCert{Name: ClientName, Client: true})
	return p
}

// issue writes a certificate made from nc as dir/file.crt and .key.
func (p *testPKI) issue(t *testing.T, file string, nc pki.NodeCert) {
	t.Helper()
	cert, key, err := p.ca.Issue(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteNode(p.dir, file, cert, key, false); err != nil {
		t.Fatal(err)
	}
}

// tls loads node's TLS identity.
func (p *testPKI) tls(t *testing.T, node string) *TLS {
	t.Helper()
	tl, err := LoadTLS(p.dir, node)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// cert returns name's certificate and key, whatever their usage.
func (p *testPKI) cert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clientPresenting is a client configuration that presents c to any
// server without checking the server: what an attacker without the
// cluster CA's trust would use, so that only the server's verification is
// tested.
func clientPresenting(c *tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if c != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
	}
	return cfg
}

// serveHTTPS serves h with cfg on a kernel-chosen loopback port until the
// test ends, and returns the address.
func serveHTTPS(t *testing.T, cfg *tls.Config, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: tlsTestTimeout}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(ln, cfg))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// httpsGet GETs url with a fresh client using cfg.
func httpsGet(t *testing.T, cfg *tls.Config, method, url string) (int, string, error) {
	t.Helper()
	hc := api.RemoteHTTPClient(cfg)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), tlsTestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestLoadTLS(t *testing.T) {
	p := newTestPKI(t, "node-a", "node-b")
	// node-b's files under the name impostor.
	b, err := os.ReadFile(filepath.Join(p.dir, "node-b.crt"))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := os.ReadFile(filepath.Join(p.dir, "node-b.key"))
	if err := pki.WriteNode(p.dir, "impostor", b, k, false); err != nil {
		t.Fatal(err)
	}
	p.issue(t, "server-only", pki.NodeCert{Name: "server-only", Server: true})

	tl := p.tls(t, "node-a")
	if tl.Node() != "node-a" || tl.NotAfter().Before(time.Now()) {
		t.Fatalf("Node() = %q, NotAfter() = %v", tl.Node(), tl.NotAfter())
	}
	if tl.Server() == tl.Server() || tl.Client() == tl.Client() {
		t.Error("configurations are shared between callers; each must get its own")
	}

	for _, tc := range []struct {
		node  string
		class error
		msg   string
	}{
		{"node-z", api.ErrNotFound, "node-z.crt does not exist"},
		{ClientName, api.ErrInvalid, "agentctl's certificate name"},
		{"impostor", api.ErrInvalid, `names "node-b"`},
		{"server-only", api.ErrInvalid, "not for client use"},
	} {
		t.Run(tc.node, func(t *testing.T) {
			_, err := LoadTLS(p.dir, tc.node)
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("LoadTLS(%q) = %v, want %v saying %q", tc.node, err, tc.class, tc.msg)
			}
		})
	}
}

// TestAPIServerAdmitsClusterClientsOnly: the inter-agent API listener
// (TLS.Server) refuses plain connections and certificates of another CA
// before any handler runs; agentctl's client-only certificate gets to the
// API but not to the internal apply route, which only nodes may call.
func TestAPIServerAdmitsClusterClientsOnly(t *testing.T) {
	p := newTestPKI(t, "node-a", "node-b")
	foreign := newTestPKI(t, "node-b")

	var hits atomic.Int32
	store := &fakeStore{apply: func(context.Context, int) (uint64, error) { return 7, nil }}
	prop := NewProposer(store, p.tls(t, "node-a"), nil, tlsTestLogger())
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		name, err := pki.Peer(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, name)
	})
	mux.Handle(PathRaftApply, countHits(&hits, prop.Handler()))
	addr := serveHTTPS(t, p.tls(t, "node-a").Server(), mux)
	version, apply := "https://"+addr+api.PathVersion, "https://"+addr+PathRaftApply

	t.Run("plain TCP", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET "+api.PathVersion+" HTTP/1.1\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(c) // until the server closes
		if strings.Contains(string(b), "200 OK") {
			t.Fatalf("plain HTTP was served: %q", b)
		}
	})

	agentctl, nodeB, foreignB := p.cert(t, ClientName), p.cert(t, "node-b"), foreign.cert(t, "node-b")
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want string
	}{
		{"no client certificate", nil, "certificate required"},
		{"certificate from another CA", &foreignB, "unknown certificate authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := httpsGet(t, clientPresenting(tc.cert), http.MethodGet, version)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want the server's %q alert", err, tc.want)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("handlers reached %d times by refused clients", n)
	}

	t.Run("agentctl reaches the API but not the internal route", func(t *testing.T) {
		code, body, err := httpsGet(t, clientPresenting(&agentctl), http.MethodGet, version)
		if err != nil || code != http.StatusOK || body != ClientName {
			t.Fatalf("version: %d %q %v", code, body, err)
		}
		code, body, err = httpsGet(t, clientPresenting(&agentctl), http.MethodPost, apply)
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, "only cluster nodes") {
			t.Fatalf("raft apply: %d %q %v", code, body, err)
		}
		if n := store.applies.Load(); n != 0 {
			t.Fatalf("agentctl's request reached the store %d times", n)
		}
	})
	t.Run("a node reaches both", func(t *testing.T) {
		code, body, err := httpsGet(t, clientPresenting(&nodeB), http.MethodGet, version)
		if err != nil || code != http.StatusOK || body != "node-b" {
			t.Fatalf("version: %d %q %v", code, body, err)
		}
		code, body, err = httpsGet(t, clientPresenting(&nodeB), http.MethodPost, apply)
		if err != nil || code != http.StatusOK || strings.TrimSpace(body) != `{"index":7}` {
			t.Fatalf("raft apply: %d %q %v", code, body, err)
		}
	})
}

// TestClientChecksTheChainAndTheExpectedNode: a node dials peers by
// address, so the address need not be in the certificate; the chain must
// lead to the cluster CA with server usage, and ClientFor also pins the
// node's name.
func TestClientChecksTheChainAndTheExpectedNode(t *testing.T) {
	p := newTestPKI(t, "node-a", "node-b")
	foreign := newTestPKI(t, "node-a")
	nodeB := p.tls(t, "node-b")

	// server runs a TLS server presenting cert that completes handshakes
	// and returns its address.
	server := func(t *testing.T, cert tls.Certificate) string {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.(*tls.Conn).Handshake()
					_, _ = io.Copy(io.Discard, c)
				}()
			}
		}()
		return ln.Addr().String()
	}
	dial := func(addr string, cfg *tls.Config) (string, error) {
		d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: tlsTestTimeout}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		cs := c.(*tls.Conn).ConnectionState()
		return ServerNode(&cs)
	}

	nodeA := server(t, p.cert(t, "node-a"))
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"any node", nodeB.Client()},
		{"the expected node", nodeB.ClientFor("node-a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dial(nodeA, tc.cfg)
			if err != nil || got != "node-a" {
				t.Fatalf("dial = %q, %v; want node-a", got, err)
			}
		})
	}

	for _, tc := range []struct {
		name   string
		addr   string
		cfg    *tls.Config
		reason func(error) bool
	}{
		{"another node than expected", nodeA, nodeB.ClientFor("node-c"), func(err error) bool {
			return strings.Contains(err.Error(), `the server is node "node-a", not "node-c"`)
		}},
		{"certificate from another CA", server(t, foreign.cert(t, "node-a")), nodeB.Client(), func(err error) bool {
			var e x509.UnknownAuthorityError
			return errors.As(err, &e)
		}},
		{"client-only certificate", server(t, p.cert(t, ClientName)), nodeB.Client(), func(err error) bool {
			var e x509.CertificateInvalidError
			return errors.As(err, &e) && e.Reason == x509.IncompatibleUsage
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dial(tc.addr, tc.cfg)
			var cv *tls.CertificateVerificationError
			if !errors.As(err, &cv) || !tc.reason(err) {
				t.Fatalf("err = %v, want a verification failure", err)
			}
		})
	}
}

func TestPeerNodeRefusesNonNodes(t *testing.T) {
	if _, err := PeerNode(nil); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("PeerNode(nil) = %v, want ErrInvalid", err)
	}
	if _, err := ServerNode(&tls.ConnectionState{}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("ServerNode before a handshake = %v, want ErrInvalid", err)
	}
}

// countHits counts the requests that reach h.
func countHits(n *atomic.Int32, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}
