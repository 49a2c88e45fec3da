package containerdproc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/berth-project/berth/api"
)

func TestValidate(t *testing.T) {
	ok := DefaultConfig("/tmp/x")
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"default is valid", func(*Config) {}, ""},
		{"empty binary", func(c *Config) { c.Binary = "" }, "binary is empty"},
		{"relative root", func(c *Config) { c.Root = "root" }, "root \"root\" must be an absolute path"},
		{"relative state", func(c *Config) { c.State = "" }, "state \"\" must be an absolute path"},
		{"relative address", func(c *Config) { c.Address = "c.sock" }, "address \"c.sock\" must be an absolute path"},
		{"relative log", func(c *Config) { c.LogPath = "c.log" }, "log path"},
		{"empty log is fine", func(c *Config) { c.LogPath = "" }, ""},
		{"socket path too long", func(c *Config) { c.Address = "/" + strings.Repeat("a", 120) }, "longer than the 107"},
		{"root equals state", func(c *Config) { c.State = c.Root + "/" }, "must differ"},
		{"newline in path", func(c *Config) { c.Root = "/a\nb" }, "control character"},
		{"negative timeout", func(c *Config) { c.StartTimeout = -1 }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("Validate() = %v, want it to wrap api.ErrInvalid", err)
			}
		})
	}
}

func TestWriteConfigDisablesCRIAndSetsPaths(t *testing.T) {
	dir := t.TempDir()
	c := DefaultConfig(filepath.Join(dir, "sub"))
	path, err := writeConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.State, ConfigFile); path != want {
		t.Fatalf("config path = %s, want %s", path, want)
	}
	for _, d := range []string{c.Root, c.State, filepath.Dir(c.Address)} {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			t.Fatalf("directory %s not created: %v", d, err)
		}
	}
	var got daemonConfig
	if _, err := toml.DecodeFile(path, &got); err != nil {
		t.Fatalf("decode generated config: %v", err)
	}
	want := daemonConfig{
		Version:         2,
		Root:            c.Root,
		State:           c.State,
		DisabledPlugins: []string{"io.containerd.grpc.v1.cri"},
		GRPC:            grpcConfig{Address: c.Address},
	}
	if got.Version != want.Version || got.Root != want.Root || got.State != want.State ||
		got.GRPC != want.GRPC || strings.Join(got.DisabledPlugins, ",") != strings.Join(want.DisabledPlugins, ",") {
		t.Fatalf("generated config = %+v, want %+v", got, want)
	}
}

func TestReadTailKeepsLastLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100 {
		b.WriteString(strings.Repeat("x", 50))
		b.WriteString(" line ")
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString("\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tail, err := readTail(path, 300, 3)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(tail, "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[2], "line v") {
		t.Fatalf("tail = %q, want the last 3 lines ending in \"line v\"", tail)
	}
	tail, err = readTail(path, 130, 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(tail, "\n") {
		if !strings.HasPrefix(l, "xxxxx") {
			t.Fatalf("tail %q starts mid-line", tail)
		}
	}
}
