package supervisor

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

// TestRegistryCredentialsFromDockerConfig: pulls authenticate with the
// docker-style config.json named by registry.auth_file (no registry can be
// reached here, so the lookup is tested on its own).
func TestRegistryCredentialsFromDockerConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	auth := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	config := `{"auths": {
		"registry.example:5000": {"auth": "` + auth("alice", "s3cret") + `"},
		"https://index.docker.io/v1/": {"auth": "` + auth("bob", "hub-token") + `"},
		"tokens.example": {"identitytoken": "refresh-me"}
	}}`
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &Images{authFile: path}
	for _, tt := range []struct {
		host, user, secret string
	}{
		{"registry.example:5000", "alice", "s3cret"},
		{"registry-1.docker.io", "bob", "hub-token"}, // Docker Hub's pull host maps to its auth key
		{"docker.io", "bob", "hub-token"},
		{"tokens.example", "", "refresh-me"}, // an identity token goes as the secret
		{"unknown.example", "", ""},          // anonymous
	} {
		t.Run(tt.host, func(t *testing.T) {
			u, s, err := m.credentials(tt.host)
			if err != nil || u != tt.user || s != tt.secret {
				t.Errorf("credentials(%s) = %q, %q, %v; want %q, %q", tt.host, u, s, err, tt.user, tt.secret)
			}
		})
	}
	// No auth file configured, or a missing one: anonymous pulls.
	for _, m := range []*Images{{}, {authFile: filepath.Join(dir, "nope.json")}} {
		if u, s, err := m.credentials("registry.example:5000"); u != "" || s != "" || err != nil {
			t.Errorf("without an auth file: %q, %q, %v", u, s, err)
		}
	}
	// A broken file is an error that names it.
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.credentials("registry.example:5000"); err == nil {
		t.Errorf("a broken auth file gave no error")
	}
}
