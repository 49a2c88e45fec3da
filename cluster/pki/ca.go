package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/berth-project/berth/api"
)

// ClockSkew is how far back NotBefore is set on every certificate, so that a
// node whose clock runs slightly behind the issuer's accepts it at once.
const ClockSkew = 5 * time.Minute

// CA is a cluster certificate authority: a self-signed ECDSA P-256
// certificate that may sign leaf certificates only (MaxPathLen 0).
// A CA is safe for concurrent use.
type CA struct {
	// Cert is the parsed CA certificate. Do not modify it.
	Cert *x509.Certificate

	key     *ecdsa.PrivateKey
	certPEM []byte
}

// NewCA creates a CA named name (its CommonName) valid for validity from now.
func NewCA(name string, validity time.Duration) (*CA, error) {
	if name == "" {
		return nil, fmt.Errorf("new ca: empty name: %w", api.ErrInvalid)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("new ca %q: validity %v is not positive: %w", name, validity, api.ErrInvalid)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ca %q: generate key: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new ca %q: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new ca %q: create certificate: %w", name, err)
	}
	return newCA(der, key)
}

// newCA builds a CA from a DER certificate and its key, checking that they
// belong together and that the certificate is a CA.
func newCA(der []byte, key *ecdsa.PrivateKey) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("certificate %q is not a CA: %w", cert.Subject.CommonName, api.ErrInvalid)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("ca %q: key does not match certificate: %w", cert.Subject.CommonName, api.ErrInvalid)
	}
	return &CA{
		Cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// CertPEM returns the CA certificate in PEM form: what every node and
// client trusts.
func (ca *CA) CertPEM() []byte {
	return append([]byte(nil), ca.certPEM...)
}

// KeyPEM returns the CA private key as PKCS#8 PEM. Keep it off the nodes
// where possible: whoever holds it can join the cluster.
func (ca *CA) KeyPEM() ([]byte, error) {
	return encodeKey(ca.key)
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// randomSerial returns a random, positive, non-zero 128-bit serial number.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}
