package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/berth-project/berth/api"
)

// Layout of a pki directory:
//
//	DIR/ca.crt     CA certificate                    0644
//	DIR/ca.key     CA private key                    0600
//	DIR/NODE.crt   certificate of node (or agentctl) 0644
//	DIR/NODE.key   its private key                   0600
const (
	caBase   = "ca"
	certExt  = ".crt"
	keyExt   = ".key"
	certPerm = 0o644
	keyPerm  = 0o600
	dirPerm  = 0o755
)

// WriteCA writes ca.crt and ca.key into dir, creating dir if needed. Unless
// force is set it writes nothing when either file exists, and fails with an
// error wrapping api.ErrAlreadyExists.
func WriteCA(dir string, ca *CA, force bool) error {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return fmt.Errorf("write ca: %w", err)
	}
	return writeFiles(dir, []file{
		{caBase + certExt, ca.CertPEM(), certPerm},
		{caBase + keyExt, keyPEM, keyPerm},
	}, force)
}

// LoadCA reads the CA written by WriteCA from dir. A missing file yields an
// error wrapping api.ErrNotFound; a key that does not match the certificate,
// api.ErrInvalid.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := readFile(filepath.Join(dir, caBase+certExt))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	keyPEM, err := readFile(filepath.Join(dir, caBase+keyExt))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	certDER, err := pemBlock(certPEM, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("load ca: %s: %w", filepath.Join(dir, caBase+certExt), err)
	}
	keyPath := filepath.Join(dir, caBase+keyExt)
	keyDER, err := pemBlock(keyPEM, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("load ca: %s: %w", keyPath, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("load ca: %s: %v: %w", keyPath, err, api.ErrInvalid)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load ca: %s: not an ECDSA key: %w", keyPath, api.ErrInvalid)
	}
	ca, err := newCA(certDER, key)
	if err != nil {
		return nil, fmt.Errorf("load ca from %s: %w", dir, err)
	}
	return ca, nil
}

// WriteNode writes NAME.crt and NAME.key into dir, creating dir if needed,
// with the same refusal to overwrite as WriteCA.
func WriteNode(dir, name string, certPEM, keyPEM []byte, force bool) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("write node: %w", err)
	}
	return writeFiles(dir, []file{
		{name + certExt, certPEM, certPerm},
		{name + keyExt, keyPEM, keyPerm},
	}, force)
}

// ReadNode reads what an agent (or agentctl) named name needs from dir: the
// CA certificate, its own certificate and its key, ready for ServerConfig
// and ClientConfig.
func ReadNode(dir, name string) (caPEM, certPEM, keyPEM []byte, err error) {
	if err := validName(name); err != nil {
		return nil, nil, nil, fmt.Errorf("read node: %w", err)
	}
	for _, f := range []struct {
		dst  *[]byte
		base string
	}{
		{&caPEM, caBase + certExt},
		{&certPEM, name + certExt},
		{&keyPEM, name + keyExt},
	} {
		if *f.dst, err = readFile(filepath.Join(dir, f.base)); err != nil {
			return nil, nil, nil, fmt.Errorf("read node %q: %w", name, err)
		}
	}
	return caPEM, certPEM, keyPEM, nil
}

type file struct {
	base string
	data []byte
	perm os.FileMode
}

// writeFiles writes files into dir, each atomically (temporary file, then
// link or rename) with exactly its permission. Without force it first checks
// that none exists, and if one appears meanwhile or a later write fails it
// removes the ones it created.
func writeFiles(dir string, files []file, force bool) (retErr error) {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("create pki directory: %w", err)
	}
	if !force {
		for _, f := range files {
			p := filepath.Join(dir, f.base)
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("refusing to overwrite %s (remove it or force): %w", p, api.ErrAlreadyExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("check %s: %w", p, err)
			}
		}
	}
	var created []string
	defer func() {
		if retErr != nil {
			for _, p := range created {
				os.Remove(p)
			}
		}
	}()
	for _, f := range files {
		p := filepath.Join(dir, f.base)
		if err := writeFile(p, f.data, f.perm, force); err != nil {
			return err
		}
		if !force {
			created = append(created, p)
		}
	}
	return nil
}

func writeFile(path string, data []byte, perm os.FileMode, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the link or rename; no-op if renamed
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if force {
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	// Link fails if path exists, so a file created since the check is
	// never replaced.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("refusing to overwrite %s (remove it or force): %w", path, api.ErrAlreadyExists)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist (run agentctl tls init?): %w", path, api.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// pemBlock returns the DER bytes of the first PEM block of type typ.
func pemBlock(data []byte, typ string) ([]byte, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("no %s PEM block: %w", typ, api.ErrInvalid)
		}
		if b.Type == typ {
			return b.Bytes, nil
		}
	}
}
