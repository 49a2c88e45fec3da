package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/berth-project/berth/api"
)

// DefaultNodeValidity is used when NodeCert.Validity is zero.
const DefaultNodeValidity = 365 * 24 * time.Hour

// NodeCert describes a certificate to issue.
type NodeCert struct {
	// Name is the CommonName, always also a DNS SAN, and the file name
	// under WriteNode: letters, digits, '-', '_' and '.', not "ca".
	Name string
	// DNSNames and IPs are extra subject alternative names: what peers
	// dial this node by.
	DNSNames []string
	IPs      []net.IP
	// Validity from now; zero means DefaultNodeValidity. It is cut at the
	// CA's own expiry.
	Validity time.Duration
	// Client and Server select the extended key usages. An agent needs
	// both; agentctl gets Client only, so it can never serve as a node.
	Client, Server bool

	// notBefore, when set, replaces "now" as the start of validity and is
	// not backdated: tests use it to issue certificates already expired.
	notBefore time.Time
}

// Issue creates a key and a certificate for n signed by ca, and returns
// both in PEM form (the key as PKCS#8).
func (ca *CA) Issue(n NodeCert) (certPEM, keyPEM []byte, err error) {
	if err := validName(n.Name); err != nil {
		return nil, nil, fmt.Errorf("issue: %w", err)
	}
	if !n.Client && !n.Server {
		return nil, nil, fmt.Errorf("issue %q: neither client nor server usage requested: %w", n.Name, api.ErrInvalid)
	}
	validity := n.Validity
	switch {
	case validity == 0:
		validity = DefaultNodeValidity
	case validity < 0:
		return nil, nil, fmt.Errorf("issue %q: validity %v is negative: %w", n.Name, validity, api.ErrInvalid)
	}
	start := time.Now()
	notBefore := start.Add(-ClockSkew)
	if !n.notBefore.IsZero() {
		start, notBefore = n.notBefore, n.notBefore
	}
	notAfter := start.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}

	var usage []x509.ExtKeyUsage
	if n.Server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if n.Client {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	dns := []string{n.Name}
	for _, d := range n.DNSNames {
		if d != "" && !slices.Contains(dns, d) {
			dns = append(dns, d)
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: generate key: %w", n.Name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: %w", n.Name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: n.Name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           slices.Clone(n.IPs),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: create certificate: %w", n.Name, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: %w", n.Name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// validName reports whether name can be a CommonName, a DNS SAN and a file
// name in a pki directory.
func validName(name string) error {
	if name == "" {
		return fmt.Errorf("empty node name: %w", api.ErrInvalid)
	}
	if len(name) > 253 || name[0] == '.' || name[0] == '-' || name == caBase {
		return fmt.Errorf("node name %q: must not be %q, start with '.' or '-', or exceed 253 characters: %w", name, caBase, api.ErrInvalid)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("node name %q: character %q not allowed (use letters, digits, '-', '_', '.'): %w", name, r, api.ErrInvalid)
		}
	}
	return nil
}
