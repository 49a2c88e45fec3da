package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster/pki"
)

// ClientName is the name of the certificate `agentctl tls init` issues to
// agentctl: client usage only. A peer presenting it is an operator, never
// a node; every other name the cluster CA vouches for (with server usage)
// is a node.
const ClientName = "agentctl"

// TLS is one agent's identity on the inter-agent network: its node
// certificate and the cluster CA, as TLS configurations for the API server
// (Server), for dialling peers (Client, ClientFor) and for the Raft stream
// layer (NewRaftTransport). The CA is the only trust anchor; the system
// roots are never consulted.
//
// How each side is verified:
//
//   - A server (the API listener, the Raft listener) requires a client
//     certificate for client auth from the cluster CA: plain TCP and
//     certificates of another CA fail the handshake. The API server also
//     admits agentctl; the Raft listener and the internal routes admit
//     nodes only (PeerNode).
//   - A client checks the server's chain against the cluster CA with
//     server usage, but not the host name it dialled: peers are dialled by
//     host:port (Raft addresses, API addresses from memberlist metadata),
//     and node certificates need not list every address a node is reached
//     by. This is Consul's rule without verify_server_hostname; since the
//     CA is private to the cluster, a server that passes is a member of it.
//     When the caller knows which node it wants (ClientFor, e.g. the leader
//     by its Raft ID), the certificate's name must also be that node.
//
// Certificates are read once; rotating them means restarting the agent. A
// TLS is safe for concurrent use; every method returns a fresh *tls.Config
// the caller may change.
type TLS struct {
	node   string
	leaf   *x509.Certificate
	server *tls.Config // mutual TLS, any client certificate of the CA
	client *tls.Config // presents the node certificate; RootCAs = the CA
}

// LoadTLS reads the files `agentctl tls init` wrote for node from dir:
// dir/ca.crt, dir/NODE.crt and dir/NODE.key. A missing file is an
// api.ErrNotFound; a certificate that is not node's, lacks server or client
// usage, or has expired is an api.ErrInvalid.
func LoadTLS(dir, node string) (*TLS, error) {
	caPEM, certPEM, keyPEM, err := pki.ReadNode(dir, node)
	if err != nil {
		return nil, fmt.Errorf("cluster tls: %w", err)
	}
	t, err := NewTLS(node, caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (files %s)", err, filepath.Join(dir, node+".{crt,key}"))
	}
	return t, nil
}

// NewTLS is LoadTLS from PEM data in memory.
func NewTLS(node string, caPEM, certPEM, keyPEM []byte) (*TLS, error) {
	if node == ClientName {
		return nil, fmt.Errorf("cluster tls: %q is agentctl's certificate name, not a node name: %w", node, api.ErrInvalid)
	}
	server, err := pki.ServerConfig(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster tls: node %q: %w", node, err)
	}
	client, err := pki.ClientConfig(caPEM, certPEM, keyPEM, "")
	if err != nil {
		return nil, fmt.Errorf("cluster tls: node %q: %w", node, err)
	}
	leaf := server.Certificates[0].Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(server.Certificates[0].Certificate[0]); err != nil {
			return nil, fmt.Errorf("cluster tls: node %q: %v: %w", node, err, api.ErrInvalid)
		}
	}
	if leaf.Subject.CommonName != node {
		return nil, fmt.Errorf("cluster tls: the certificate of node %q names %q: %w", node, leaf.Subject.CommonName, api.ErrInvalid)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:     server.ClientCAs,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		// Mostly expiry: say so now rather than in every peer's log.
		return nil, fmt.Errorf("cluster tls: certificate of node %q (valid until %s) is not accepted by its own CA: %v; reissue it with agentctl tls init: %w",
			node, leaf.NotAfter.Format(time.RFC3339), err, api.ErrInvalid)
	}
	return &TLS{node: node, leaf: leaf, server: server, client: client}, nil
}

// Node is the node name of this agent's certificate.
func (t *TLS) Node() string { return t.node }

// NotAfter is when this agent's certificate expires.
func (t *TLS) NotAfter() time.Time { return t.leaf.NotAfter }

// Server returns the configuration of the inter-agent API listener: TLS
// 1.3, this node's certificate, and a client certificate from the cluster
// CA required of every client (nodes and agentctl). Handlers that only
// nodes may use check PeerNode(r.TLS).
func (t *TLS) Server() *tls.Config { return t.server.Clone() }

// Client returns the configuration for dialling any node by address: it
// presents this node's certificate and accepts a server whose certificate
// the cluster CA issued for server use, whatever address was dialled.
func (t *TLS) Client() *tls.Config { return t.ClientFor("") }

// ClientFor is Client that also requires the server's certificate to name
// node (its CommonName), when node is not empty: for dialling a peer known
// by name, such as the Raft leader.
func (t *TLS) ClientFor(node string) *tls.Config {
	c := t.client.Clone()
	// The chain and the name are checked in VerifyConnection instead of by
	// crypto/tls, which would also require the dialled host in the SANs.
	c.InsecureSkipVerify = true
	c.VerifyConnection = verifyServer(t.client.RootCAs, node)
	return c
}

// nodeServer is Server admitting nodes only: the Raft listener's.
func (t *TLS) nodeServer() *tls.Config {
	c := t.Server()
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		_, err := PeerNode(&cs)
		return err
	}
	return c
}

// verifyServer checks a server's certificate chain against roots for server
// usage and, when want is set, that it is node want's.
func verifyServer(roots *x509.CertPool, want string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("cluster tls: the server presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		if want != "" && leaf.Subject.CommonName != want {
			return &tls.CertificateVerificationError{
				UnverifiedCertificates: cs.PeerCertificates,
				Err:                    fmt.Errorf("the server is node %q, not %q as expected", leaf.Subject.CommonName, want),
			}
		}
		return nil
	}
}

// PeerNode returns the node name of the verified client of a connection
// served with Server (r.TLS in a handler). It fails, wrapping
// api.ErrInvalid, on a plain connection and on a client that is not a
// node: agentctl's certificate (ClientName) or any certificate without
// server usage.
func PeerNode(cs *tls.ConnectionState) (string, error) {
	name, err := pki.Peer(cs)
	if err != nil {
		return "", err
	}
	leaf := cs.VerifiedChains[0][0]
	if name == ClientName || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return "", fmt.Errorf("peer %q is a client, not a cluster node: %w", name, api.ErrInvalid)
	}
	return name, nil
}

// ServerNode returns the node name of the server of a client connection
// made with Client or ClientFor, once its handshake succeeded (their
// VerifyConnection has then checked the certificate).
func ServerNode(cs *tls.ConnectionState) (string, error) {
	if cs == nil || !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("server node: no completed TLS handshake: %w", api.ErrInvalid)
	}
	return cs.PeerCertificates[0].Subject.CommonName, nil
}
