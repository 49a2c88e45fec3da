package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/cluster/pki"
)

func TestTLSInitWritesCAAndCertificatesThatWorkTogether(t *testing.T) {
	dir := t.TempDir()
	out, code := runAgentctlForTLS(t, "tls", "init", "--dir", dir, "--node", "a=127.0.0.1", "--node", "b")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, f := range []string{"ca.crt", "ca.key", "a.crt", "a.key", "b.crt", "b.key", "agentctl.crt", "agentctl.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	caPEM, certPEM, keyPEM, err := pki.ReadNode(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.ServerConfig(caPEM, certPEM, keyPEM); err != nil {
		t.Errorf("node a's files do not make a server config: %v", err)
	}
	// A second init without --force refuses to overwrite: exit 1, files kept.
	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	out, code = runAgentctlForTLS(t, "tls", "init", "--dir", dir, "--node", "a")
	after, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if code == 0 || string(before) != string(after) || !strings.Contains(out, "exist") {
		t.Errorf("second init: exit %d, CA changed %v, output %q", code, string(before) != string(after), out)
	}
	if _, code := runAgentctlForTLS(t, "tls", "init", "--dir", dir); code != 3 {
		t.Errorf("init without --node: exit %d, want 3", code)
	}
}

func runAgentctlForTLS(t *testing.T, args ...string) (string, int) {
	t.Helper()
	r := runAgentctl(context.Background(), nil, "", args...)
	return r.stdout + r.stderr, r.code
}

func TestKeygenPrintsAKeyTheClusterAccepts(t *testing.T) {
	out, code := runAgentctlForTLS(t, "keygen")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	cfg := cluster.DefaultConfig()
	cfg.NodeName, cfg.Join, cfg.EncryptKey = "a", []string{"127.0.0.1:7946"}, strings.TrimSpace(out)
	if err := cfg.Validate(); err != nil {
		t.Errorf("the key is not accepted: %v", err)
	}
}
