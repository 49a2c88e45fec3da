package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestImageImportStreamsTheFile(t *testing.T) {
	f := newFakeAgent(t)
	archive := filepath.Join(t.TempDir(), "app.tar")
	data := bytes.Repeat([]byte("layer"), 40000) // 200000 bytes
	if err := os.WriteFile(archive, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := f.run("", "image", "import", archive, "--name", "local/app:1")
	wantCode(t, r, exitOK)
	if !bytes.Equal(f.imported, data) {
		t.Errorf("agent received %d bytes, want the %d of the file", len(f.imported), len(data))
	}
	if got := f.requestLog(); got[0] != "POST /v1/images/import?name=local%2Fapp%3A1" {
		t.Errorf("requests = %q", got)
	}
	if r.stdout != "imported local/app:1 (sha256:aaaaaaaaaaaa, 195.3 KiB)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("progress shown on a stderr that is not a terminal: %q", r.stderr)
	}
}

func TestImageImportShowsProgressOnATerminal(t *testing.T) {
	f := newFakeAgent(t)
	archive := filepath.Join(t.TempDir(), "app.tar")
	if err := os.WriteFile(archive, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runAgentctl(context.Background(), func(a *app) {
		a.isTerminal = func(w io.Writer) bool { return w == a.stderr }
		start := time.Now()
		a.now = func() time.Time { return testNow.Add(time.Since(start)) }
	}, "", "--socket", f.sock, "image", "import", archive)
	wantCode(t, r, exitOK)
	last := r.stderr[strings.LastIndex(r.stderr, "\r")+1:]
	want := "importing " + archive + ": 3.0 MiB / 3.0 MiB ("
	if !strings.HasPrefix(last, want) || !strings.HasSuffix(last, "/s)\x1b[K\n") {
		t.Errorf("final progress line = %q, want %q… ending in a rate and a newline", last, want)
	}
}

func TestImageImportFromStdin(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("tarball", "image", "import", "-")
	wantCode(t, r, exitOK)
	if string(f.imported) != "tarball" {
		t.Errorf("agent received %q", f.imported)
	}
	if r.stdout != "imported import-tar (sha256:aaaaaaaaaaaa, 7 B)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestImagePull(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "image", "pull", "docker.io/library/redis:7")
	wantCode(t, r, exitOK)
	if got := f.requestLog(); got[0] != "POST /v1/images/pull?ref=docker.io%2Flibrary%2Fredis%3A7" {
		t.Errorf("requests = %q", got)
	}
	if r.stdout != "pulled docker.io/library/redis:7 (sha256:bbbbbbbbbbbb, 5.0 MiB)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestImageList(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "image", "ls")
	wantCode(t, r, exitOK)
	want := `NAME        DIGEST               SIZE
busybox:1   sha256:fedcba987654  2.0 MiB
nginx:1.25  sha256:0123456789ab  70.0 MiB
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}

	r = f.run("", "image", "list", "-o", "wide")
	if !strings.Contains(r.stdout, f.images[0].Digest) {
		t.Errorf("wide output lacks the full digest:\n%s", r.stdout)
	}

	r = f.run("", "image", "ls", "-o", "json")
	var imgs []api.ImageInfo
	if err := json.Unmarshal([]byte(r.stdout), &imgs); err != nil || len(imgs) != 2 {
		t.Errorf("not the images as JSON (%v):\n%s", err, r.stdout)
	}
}
