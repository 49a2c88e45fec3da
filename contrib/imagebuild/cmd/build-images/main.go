// Command build-images writes the OCI archives of the images Berth's
// integration tests, `make run` and the benchmark use:
//
//	DIR/busybox.tar  berth.local/busybox:latest  (from busybox-static)
//	DIR/testapp.tar  berth.local/testapp:latest  (from ./integration/testapp)
//
// Run it from the repository root: build-images -out DIR.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-project/berth/contrib/imagebuild"
)

func main() {
	out := flag.String("out", ".", "directory to write busybox.tar and testapp.tar to")
	busybox := flag.String("busybox", imagebuild.DefaultBusybox, "static busybox binary")
	testapp := flag.String("testapp", "./integration/testapp", "package directory of the test app")
	flag.Parse()
	if err := run(*out, *busybox, *testapp); err != nil {
		fmt.Fprintln(os.Stderr, "build-images:", err)
		os.Exit(1)
	}
}

func run(out, busybox, testapp string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	images := []struct {
		file, ref string
		build     func() (v1.Image, error)
	}{
		{"busybox.tar", "berth.local/busybox:latest", func() (v1.Image, error) { return imagebuild.Busybox(busybox) }},
		{"testapp.tar", "berth.local/testapp:latest", func() (v1.Image, error) { return imagebuild.GoBinary(testapp, "testapp") }},
	}
	for _, im := range images {
		img, err := im.build()
		if err != nil {
			return err
		}
		path := filepath.Join(out, im.file)
		if err := imagebuild.WriteFile(img, im.ref, path); err != nil {
			return err
		}
		digest, _ := img.Digest()
		fmt.Printf("%s\t%s\t%s\n", path, im.ref, digest)
	}
	return nil
}
