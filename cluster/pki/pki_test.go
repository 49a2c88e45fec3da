package pki

import (
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
)

var localhost = net.IPv4(127, 0, 0, 1)

func newTestCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

type pair struct{ cert, key []byte }

func issue(t *testing.T, ca *CA, n NodeCert) pair {
	t.Helper()
	c, k, err := ca.Issue(n)
	if err != nil {
		t.Fatal(err)
	}
	return pair{c, k}
}

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	der, err := pemBlock(certPEM, "CERTIFICATE")
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssuedCertificateShape(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	if !ca.Cert.IsCA || ca.Cert.MaxPathLen != 0 || !ca.Cert.MaxPathLenZero || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("ca: IsCA=%v MaxPathLen=%d zero=%v usage=%v", ca.Cert.IsCA, ca.Cert.MaxPathLen, ca.Cert.MaxPathLenZero, ca.Cert.KeyUsage)
	}
	node := issue(t, ca, NodeCert{Name: "node-a", DNSNames: []string{"a.example", "node-a"}, IPs: []net.IP{localhost}, Client: true, Server: true})
	c := parse(t, node.cert)
	if c.Subject.CommonName != "node-a" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if got := strings.Join(c.DNSNames, ","); got != "node-a,a.example" {
		t.Errorf("DNS SANs = %s, want node-a,a.example (name first, no duplicate)", got)
	}
	if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(localhost) {
		t.Errorf("IP SANs = %v", c.IPAddresses)
	}
	if c.IsCA {
		t.Error("node certificate is a CA")
	}
	if c.SerialNumber.BitLen() < 64 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial has %d bits", c.SerialNumber.BitLen())
	}
	if c.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("node certificate outlives its CA: %v > %v", c.NotAfter, ca.Cert.NotAfter)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "a.example", KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("verify for usage %v: %v", u, err)
		}
	}
	other := parse(t, issue(t, ca, NodeCert{Name: "node-b", Server: true}).cert)
	if other.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	cli := parse(t, issue(t, ca, NodeCert{Name: "agentctl", Client: true}).cert)
	if len(cli.ExtKeyUsage) != 1 || cli.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("client-only ExtKeyUsage = %v", cli.ExtKeyUsage)
	}
}

func TestInvalidRequestsAreRefused(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	for name, n := range map[string]NodeCert{
		"empty name":   {Client: true},
		"no usage":     {Name: "n"},
		"slash":        {Name: "../n", Client: true},
		"reserved ca":  {Name: "ca", Client: true},
		"negative ttl": {Name: "n", Client: true, Validity: -time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := ca.Issue(n); !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := NewCA("x", 0); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("NewCA with zero validity: err = %v", err)
	}
}

// server serves an HTTP handler that answers with the verified peer's name
// over TLS on 127.0.0.1:0. It returns the address and the number of requests
// that reached the handler.
func server(t *testing.T, cfg *tls.Config) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			name, err := Peer(r.TLS)
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			io.WriteString(w, name)
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), &hits
}

func get(cfg *tls.Config, url string) (string, error) {
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status + ": " + string(b))
	}
	return string(b), err
}

func TestMutualTLSAcceptsNodesOfTheClusterCA(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	srvPair := issue(t, ca, NodeCert{Name: "node-a", IPs: []net.IP{localhost}, Client: true, Server: true})
	scfg, err := ServerConfig(ca.CertPEM(), srvPair.cert, srvPair.key)
	if err != nil {
		t.Fatal(err)
	}
	addr, hits := server(t, scfg)

	for _, tc := range []struct {
		name   string
		client NodeCert
		sni    string
	}{
		{"node by server name", NodeCert{Name: "node-b", Client: true, Server: true}, "node-a"},
		{"node by IP SAN", NodeCert{Name: "node-c", Client: true, Server: true}, ""},
		{"client-only agentctl", NodeCert{Name: "agentctl", Client: true}, "node-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := issue(t, ca, tc.client)
			ccfg, err := ClientConfig(ca.CertPEM(), p.cert, p.key, tc.sni)
			if err != nil {
				t.Fatal(err)
			}
			got, err := get(ccfg, "https://"+addr+"/")
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.client.Name {
				t.Fatalf("Peer() on the server = %q, want %q", got, tc.client.Name)
			}
		})
	}
	if hits.Load() != 3 {
		t.Fatalf("handler reached %d times, want 3", hits.Load())
	}
}

func TestMutualTLSRefusesUntrustedClients(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	otherCA := newTestCA(t, "other-ca")
	srvPair := issue(t, ca, NodeCert{Name: "node-a", IPs: []net.IP{localhost}, Client: true, Server: true})
	scfg, err := ServerConfig(ca.CertPEM(), srvPair.cert, srvPair.key)
	if err != nil {
		t.Fatal(err)
	}
	addr, hits := server(t, scfg)

	t.Run("plain http", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("plain HTTP request succeeded")
			}
		}
	})

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	foreign := issue(t, otherCA, NodeCert{Name: "node-x", Client: true, Server: true})
	expired := pair{}
	expired.cert, expired.key, err = ca.Issue(NodeCert{Name: "node-old", Client: true, Server: true,
		Validity: time.Hour, notBefore: time.Now().Add(-2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	serverOnly := issue(t, ca, NodeCert{Name: "node-s", Server: true})

	for _, tc := range []struct {
		name  string
		certs pair
		alert string // what the server tells the client
	}{
		{"no client certificate", pair{}, "certificate required"},
		{"certificate from another CA", foreign, "unknown certificate authority"},
		{"expired certificate", expired, "expired certificate"},
		{"server-only certificate", serverOnly, "bad certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "node-a"}
			if tc.certs.cert != nil {
				c, err := tls.X509KeyPair(tc.certs.cert, tc.certs.key)
				if err != nil {
					t.Fatal(err)
				}
				// Sent whatever CAs the server names as acceptable, so
				// the server's own verification is what refuses it.
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
			}
			_, err := get(cfg, "https://"+addr+"/")
			if err == nil {
				t.Fatal("request succeeded")
			}
			if !strings.Contains(err.Error(), tc.alert) {
				t.Fatalf("err = %v, want the server's %q alert", err, tc.alert)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("handler reached %d times by refused clients", n)
	}
}

func TestClientRefusesServersItCannotTrust(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	otherCA := newTestCA(t, "other-ca")
	node := issue(t, ca, NodeCert{Name: "node-b", Client: true, Server: true})
	ccfg, err := ClientConfig(ca.CertPEM(), node.cert, node.key, "node-a")
	if err != nil {
		t.Fatal(err)
	}

	clientOnly := issue(t, ca, NodeCert{Name: "node-a", Client: true})
	if _, err := ServerConfig(ca.CertPEM(), clientOnly.cert, clientOnly.key); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("ServerConfig with a client-only certificate: err = %v, want ErrInvalid", err)
	}
	foreign := issue(t, otherCA, NodeCert{Name: "node-a", Client: true, Server: true})

	for _, tc := range []struct {
		name  string
		certs pair
		check func(error) bool
	}{
		{"client-only certificate", clientOnly, func(err error) bool {
			var e x509.CertificateInvalidError
			return errors.As(err, &e) && e.Reason == x509.IncompatibleUsage
		}},
		{"certificate from another CA", foreign, func(err error) bool {
			var e x509.UnknownAuthorityError
			return errors.As(err, &e)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.X509KeyPair(tc.certs.cert, tc.certs.key)
			if err != nil {
				t.Fatal(err)
			}
			// Built by hand: ServerConfig itself refuses a client-only certificate.
			addr, hits := server(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c}})
			_, err = get(ccfg, "https://"+addr+"/")
			if err == nil || !tc.check(err) {
				t.Fatalf("err = %v, want a verification failure", err)
			}
			if hits.Load() != 0 {
				t.Fatal("request reached the handler")
			}
		})
	}
}

func TestPeerRefusesUnverifiedConnections(t *testing.T) {
	if _, err := Peer(nil); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("Peer(nil): err = %v", err)
	}
	if _, err := Peer(&tls.ConnectionState{}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("Peer without verified chains: err = %v", err)
	}
}

func TestFilesRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca := newTestCA(t, "test-ca")
	if err := WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	node := issue(t, ca, NodeCert{Name: "node-a", Client: true, Server: true})
	if err := WriteNode(dir, "node-a", node.cert, node.key, false); err != nil {
		t.Fatal(err)
	}
	for base, perm := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600, "node-a.crt": 0o644, "node-a.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, base))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want %v", base, fi.Mode().Perm(), perm)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("directory holds %d entries, want 4 (no temporary files left)", len(entries))
	}

	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("loaded CA certificate differs")
	}
	// The loaded CA signs certificates that the original CA's pool accepts.
	later := parse(t, issue(t, loaded, NodeCert{Name: "node-b", Client: true}).cert)
	if err := later.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("certificate issued by loaded CA: %v", err)
	}

	caPEM, certPEM, keyPEM, err := ReadNode(dir, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ServerConfig(caPEM, certPEM, keyPEM); err != nil {
		t.Fatalf("ServerConfig from files: %v", err)
	}
	if _, _, _, err := ReadNode(dir, "node-z"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("ReadNode of a missing node: err = %v, want ErrNotFound", err)
	}
	if _, err := LoadCA(t.TempDir()); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("LoadCA of an empty dir: err = %v, want ErrNotFound", err)
	}
}

func TestWritesRefuseToOverwrite(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "test-ca")
	if err := WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	second := newTestCA(t, "second-ca")
	if err := WriteCA(dir, second, false); !errors.Is(err, api.ErrAlreadyExists) {
		t.Fatalf("second WriteCA: err = %v, want ErrAlreadyExists", err)
	}
	if loaded, err := LoadCA(dir); err != nil || !loaded.Cert.Equal(ca.Cert) {
		t.Fatalf("CA changed by a refused write (err %v)", err)
	}

	// Only the key exists: nothing is written, not even the certificate.
	n1 := issue(t, ca, NodeCert{Name: "node-a", Client: true, Server: true})
	if err := os.WriteFile(filepath.Join(dir, "node-a.key"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteNode(dir, "node-a", n1.cert, n1.key, false); !errors.Is(err, api.ErrAlreadyExists) {
		t.Fatalf("WriteNode over an existing key: err = %v, want ErrAlreadyExists", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node-a.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused WriteNode left node-a.crt behind (stat err %v)", err)
	}

	// force replaces, with the right permissions.
	if err := os.Chmod(filepath.Join(dir, "node-a.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteNode(dir, "node-a", n1.cert, n1.key, true); err != nil {
		t.Fatal(err)
	}
	if err := WriteCA(dir, second, true); err != nil {
		t.Fatal(err)
	}
	if loaded, err := LoadCA(dir); err != nil || !loaded.Cert.Equal(second.Cert) {
		t.Fatalf("forced WriteCA did not replace the CA (err %v)", err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "node-a.key"))
	if err != nil || string(key) != string(n1.key) {
		t.Fatalf("forced WriteNode did not replace the key (err %v)", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "node-a.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("forced key mode %v, want 0600", fi.Mode().Perm())
	}
	if err := WriteNode(dir, "../escape", n1.cert, n1.key, true); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("WriteNode with a path in the name: err = %v, want ErrInvalid", err)
	}
}
