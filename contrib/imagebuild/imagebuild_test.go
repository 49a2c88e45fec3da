package imagebuild

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fakeBusybox writes an executable standing in for busybox.
func fakeBusybox(t *testing.T) (path string, content []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "busybox")
	content = []byte("#!/bin/false\nnot really busybox\n")
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	return path, content
}

// layerEntries reads the image's only layer into name → header and content.
func layerEntries(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("image has %d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if _, dup := hdrs[name]; dup {
			t.Fatalf("layer has %s twice", name)
		}
		if dir := filepath.Dir(name); dir != "." && hdrs[dir] == nil {
			t.Fatalf("layer has %s before its parent %s", name, dir)
		}
		hdrs[name] = h
		data[name], _ = io.ReadAll(tr)
	}
	return hdrs, data
}

func TestBusyboxImageHasAppletsAndConfig(t *testing.T) {
	bb, content := fakeBusybox(t)
	img, err := Busybox(bb)
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := layerEntries(t, img)
	if h := hdrs["bin/busybox"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 || !bytes.Equal(data["bin/busybox"], content) {
		t.Fatalf("bin/busybox = %+v, want an executable copy of %s", h, bb)
	}
	for _, a := range []string{"sh", "sleep", "cat", "echo", "ls", "wget", "nc", "kill", "ps", "seq", "dd", "yes", "tee", "printf"} {
		if h := hdrs["bin/"+a]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s = %+v, want a symlink to busybox", a, h)
		}
	}
	if h := hdrs["tmp"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode&0o1777 != 0o1777 {
		t.Errorf("tmp = %+v, want a sticky world-writable dir", h)
	}
	if !strings.HasPrefix(string(data["etc/passwd"]), "root:x:0:0:") {
		t.Errorf("etc/passwd = %q, want a root entry", data["etc/passwd"])
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Cmd, []string{"sh"}) || !slices.Contains(cf.Config.Env, DefaultPath) {
		t.Errorf("config = %+v, want Cmd [sh] and %s", cf.Config, DefaultPath)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform = %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
}

func TestBusyboxIsReproducible(t *testing.T) {
	bb, _ := fakeBusybox(t)
	digests := make([]v1.Hash, 2)
	for i := range digests {
		img, err := Busybox(bb)
		if err != nil {
			t.Fatal(err)
		}
		if digests[i], err = img.Digest(); err != nil {
			t.Fatal(err)
		}
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds gave %s and %s", digests[0], digests[1])
	}
}

func TestBusyboxMissingBinary(t *testing.T) {
	_, err := Busybox(filepath.Join(t.TempDir(), "busybox"))
	if err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Fatalf("Busybox(missing) = %v, want an error suggesting busybox-static", err)
	}
}

func TestWriteOCIArchiveIsAValidLayout(t *testing.T) {
	bb, _ := fakeBusybox(t)
	img, err := Busybox(bb)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "berth.local/busybox:latest"
	var buf bytes.Buffer
	if err := WriteOCIArchive(img, ref, &buf); err != nil {
		t.Fatal(err)
	}

	// Every blob is named by its digest; extract for the layout reader.
	dir := t.TempDir()
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		target := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(target, 0o755)
			continue
		}
		b, _ := io.ReadAll(tr)
		if rest, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != rest {
				t.Fatalf("blob %s has digest %x", h.Name, sum)
			}
		}
		if err := os.WriteFile(target, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(names) < 2 || names[0] != "oci-layout" || names[1] != "index.json" {
		t.Fatalf("archive starts with %v, want oci-layout, index.json", names)
	}

	var index v1.IndexManifest
	raw, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	m := index.Manifests[0]
	want, _ := img.Digest()
	if m.Digest != want || m.Annotations[AnnotationOCIRefName] != ref || m.Annotations[AnnotationContainerdImgRef] != ref {
		t.Fatalf("index manifest = %+v, want digest %s named %s", m, want, ref)
	}
	if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != runtime.GOARCH {
		t.Fatalf("index manifest platform = %+v", m.Platform)
	}

	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	back, err := p.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(back); err != nil {
		t.Fatalf("image read back from the archive is invalid: %v", err)
	}
}

func TestWriteFileReplacesAtomically(t *testing.T) {
	bb, _ := fakeBusybox(t)
	img, err := Busybox(bb)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "busybox.tar")
	for range 2 {
		if err := WriteFile(img, "berth.local/busybox:latest", path); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "busybox.tar" {
		t.Fatalf("dir holds %v, want only busybox.tar", entries)
	}
	if err := WriteFile(img, "", path); err == nil {
		t.Fatal("WriteFile with an empty ref succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("a failed WriteFile left %v behind", entries)
	}
}

func TestGoBinaryImageRunsTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go binary")
	}
	img, err := GoBinary("../../integration/testapp", "testapp")
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := layerEntries(t, img)
	if h := hdrs["testapp"]; h == nil || h.Mode&0o111 == 0 || !bytes.HasPrefix(data["testapp"], []byte("\x7fELF")) {
		t.Fatalf("testapp = %+v, want an executable ELF file", h)
	}
	if _, err := os.Stat(DefaultBusybox); err == nil {
		if hdrs["bin/busybox"] == nil || hdrs["bin/sh"] == nil || hdrs["bin/sh"].Linkname != "busybox" {
			t.Errorf("busybox present on the host but not as /bin/busybox + /bin/sh in the image")
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/testapp"}) {
		t.Fatalf("entrypoint = %v, want [/testapp]", cf.Config.Entrypoint)
	}
}

func TestGoBinaryReportsBuildErrors(t *testing.T) {
	_, err := GoBinary(t.TempDir(), "x")
	if err == nil || !strings.Contains(err.Error(), "go build") {
		t.Fatalf("GoBinary(empty dir) = %v, want a go build error", err)
	}
	if _, err := GoBinary(".", "a/b"); err == nil {
		t.Fatal("GoBinary accepted a binary name with a slash")
	}
}
