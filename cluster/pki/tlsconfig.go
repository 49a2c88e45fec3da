package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/berth-project/berth/api"
)

// ServerConfig returns the TLS configuration of an inter-agent server: TLS
// 1.3 only, presenting certPEM/keyPEM, and requiring every client to present
// a certificate for client auth issued by the CA in caPEM (the system roots
// are not trusted). The certificate must carry server usage: a client-only
// certificate (agentctl's) is refused here.
func ServerConfig(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("server tls config: %w", err)
	}
	cert, err := keyPair(certPEM, keyPEM, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, fmt.Errorf("server tls config: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientConfig returns the TLS configuration of an inter-agent client: TLS
// 1.3 only, presenting certPEM/keyPEM, and trusting only servers whose
// certificate for server auth was issued by the CA in caPEM. serverName is
// the name checked against the server's SANs; when empty, net/http fills in
// the host of the URL.
func ClientConfig(caPEM, certPEM, keyPEM []byte, serverName string) (*tls.Config, error) {
	pool, err := caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("client tls config: %w", err)
	}
	cert, err := keyPair(certPEM, keyPEM, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("client tls config: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}

// Peer returns the CommonName of the verified certificate of the other end
// of a connection: the node name (or "agentctl") of the caller in a
// handler, given r.TLS. It fails on a plain connection or one whose peer
// presented no verified certificate.
func Peer(cs *tls.ConnectionState) (string, error) {
	if cs == nil {
		return "", fmt.Errorf("peer: plain connection, not TLS: %w", api.ErrInvalid)
	}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", fmt.Errorf("peer: no verified certificate: %w", api.ErrInvalid)
	}
	name := cs.VerifiedChains[0][0].Subject.CommonName
	if name == "" {
		return "", fmt.Errorf("peer: verified certificate has no common name: %w", api.ErrInvalid)
	}
	return name, nil
}

// caPool builds a pool holding only the CA certificates in caPEM.
func caPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no CA certificate in PEM data: %w", api.ErrInvalid)
	}
	return pool, nil
}

// keyPair parses a certificate and its key and checks that the certificate
// allows usage.
func keyPair(certPEM, keyPEM []byte, usage x509.ExtKeyUsage) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate and key: %v: %w", err, api.ErrInvalid)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("parse certificate: %v: %w", err, api.ErrInvalid)
		}
	}
	if !slices.Contains(leaf.ExtKeyUsage, usage) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		what := "server"
		if usage == x509.ExtKeyUsageClientAuth {
			what = "client"
		}
		return tls.Certificate{}, fmt.Errorf("certificate %q is not for %s use; issue one with %s usage: %w",
			leaf.Subject.CommonName, what, what, api.ErrInvalid)
	}
	return cert, nil
}
