package imagebuild

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-project/berth/supervisor/containerdproc"
)

// TestArchivesImportIntoContainerd proves the archives are what a real
// containerd expects: the Go client's Import names the image exactly as
// given, and it unpacks into the overlayfs snapshotter.
func TestArchivesImportIntoContainerd(t *testing.T) {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		missing = append(missing, "containerd in PATH")
	}
	if _, err := os.Stat(DefaultBusybox); err != nil {
		missing = append(missing, DefaultBusybox)
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
		}
		t.Skip(msg)
	}

	dir, err := os.MkdirTemp("", "berth-imagebuild-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := containerdproc.DefaultConfig(dir)
	cfg.Binary = bin
	p, err := containerdproc.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	client, err := containerd.New(cfg.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	ctx := namespaces.WithNamespace(context.Background(), "berth-imagebuild-"+hex.EncodeToString(suffix))

	images := []struct {
		ref   string
		build func() (v1.Image, error)
	}{
		{"berth.local/busybox:latest", func() (v1.Image, error) { return Busybox(DefaultBusybox) }},
		{"berth.local/testapp:latest", func() (v1.Image, error) { return GoBinary("../../integration/testapp", "testapp") }},
	}
	for _, im := range images {
		t.Run(im.ref, func(t *testing.T) {
			start := time.Now()
			img, err := im.build()
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := WriteOCIArchive(img, im.ref, &buf); err != nil {
				t.Fatal(err)
			}
			built, size := time.Since(start), buf.Len()
			imported, err := client.Import(ctx, &buf)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if len(imported) != 1 || imported[0].Name != im.ref {
				t.Fatalf("Import created %v, want exactly one image named %s", imported, im.ref)
			}
			want, _ := img.Digest()
			if got := imported[0].Target.Digest.String(); got != want.String() {
				t.Fatalf("imported image targets %s, want manifest %s", got, want)
			}
			image := containerd.NewImage(client, imported[0])
			if err := image.Unpack(ctx, "overlayfs"); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			ok, err := image.IsUnpacked(ctx, "overlayfs")
			if err != nil || !ok {
				t.Fatalf("IsUnpacked = %v, %v after Unpack", ok, err)
			}
			t.Logf("%s: build+archive %s (%d bytes), import+unpack %s", im.ref,
				built.Round(time.Millisecond), size, (time.Since(start) - built).Round(time.Millisecond))
			if err := client.ImageService().Delete(ctx, im.ref); err != nil {
				t.Fatal(err)
			}
		})
	}
}
