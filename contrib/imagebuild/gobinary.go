package imagebuild

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// GoBinary builds the main package in pkgDir (a directory of this module,
// relative to the working directory or absolute) as a static binary
// (CGO_ENABLED=0, GOOS=linux, this machine's GOARCH) and returns an image
// with it at /<binName> and Entrypoint ["/<binName>"]. When DefaultBusybox
// exists, the image also holds it at /bin/busybox with a /bin/sh symlink,
// for exec and debugging. The go command is found in PATH.
func GoBinary(pkgDir, binName string) (v1.Image, error) {
	if binName == "" || strings.ContainsAny(binName, "/\x00") {
		return nil, fmt.Errorf("go binary image: invalid binary name %q", binName)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("go binary image: %w", err)
	}
	tmp, err := os.MkdirTemp("", "berth-imagebuild-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, binName)
	cmd := exec.Command(goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = pkgDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go binary image: go build in %s: %w\n%s", pkgDir, err, strings.TrimSpace(stderr.String()))
	}

	files := newLayerFiles()
	files.base()
	files.hostFile(binName, 0o755, out)
	if checkBusybox(DefaultBusybox) == nil {
		addBusybox(files, DefaultBusybox, []string{"sh"})
	}
	// The layer is built now, while the binary still exists.
	layer, err := files.layer()
	if err != nil {
		return nil, err
	}
	return image(layer, v1.Config{
		Entrypoint: []string{"/" + binName},
		Env:        []string{DefaultPath},
		WorkingDir: "/",
	})
}
