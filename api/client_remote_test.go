package api_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster/pki"
)

// remoteFixture is an agent's TLS API on 127.0.0.1 and a client
// configuration that trusts it, both from one cluster CA.
type remoteFixture struct {
	addr   string
	client func() *api.Client
	conns  *atomic.Int32 // connections the server accepted
}

func newRemoteFixture(t *testing.T, h http.Handler) remoteFixture {
	t.Helper()
	ca, err := pki.NewCA("test-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := ca.Issue(pki.NodeCert{Name: "node-a", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := ca.Issue(pki.NodeCert{Name: "agentctl", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := pki.ServerConfig(ca.CertPEM(), srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := pki.ClientConfig(ca.CertPEM(), cliCert, cliKey, "")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(ln, scfg))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	addr := ln.Addr().String()
	return remoteFixture{addr: addr, conns: &conns, client: func() *api.Client { return api.NewRemoteClient(addr, ccfg) }}
}

func TestRemoteClientTalksHTTPSAndKeepsErrorClasses(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(api.VersionInfo{Version: "1.5.0", Node: "node-a"})
	})
	mux.HandleFunc("GET "+api.PathGroups+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: `group "nope" not found`, Class: "not_found"})
	})
	f := newRemoteFixture(t, mux)
	c := f.client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for range 3 {
		v, err := c.Version(ctx)
		if err != nil || v.Node != "node-a" {
			t.Fatalf("Version = %+v, %v", v, err)
		}
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("3 calls opened %d connections, want 1 (kept alive)", n)
	}
	if _, err := c.Get(ctx, "nope"); !errors.Is(err, api.ErrNotFound) || err.Error() != `group "nope" not found` {
		t.Errorf("Get = %v, want the agent's ErrNotFound", err)
	}
	if got, want := c.Socket(), "https://"+f.addr; got != want {
		t.Errorf("Socket() = %q, want %q", got, want)
	}
}

func TestRemoteClientUnreachableAgentIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	c := api.NewRemoteClient(closed, nil)
	_, err = c.Version(context.Background())
	if !errors.Is(err, api.ErrUnavailable) || !strings.HasPrefix(err.Error(), "cannot reach agentd at https://"+closed+": is agentd running?") {
		t.Fatalf("err = %v, want ErrUnavailable naming https://%s", err, closed)
	}
}
