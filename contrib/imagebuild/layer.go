package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the time stamped on every file and on the image config, so
// builds are reproducible.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultPath is the PATH set in every image's config.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// entry is one file system object of a layer.
type entry struct {
	name string // relative, slash-separated, no leading slash
	mode int64
	typ  byte
	link string // symlink target
	data []byte // regular file content, when src is empty
	src  string // host file to copy, for regular files
}

// layerFiles collects the entries of one layer.
type layerFiles struct {
	entries map[string]entry
}

func newLayerFiles() *layerFiles { return &layerFiles{entries: map[string]entry{}} }

// dir adds a directory and its parents.
func (l *layerFiles) dir(name string, mode int64) {
	if name == "." || name == "" {
		return
	}
	if _, ok := l.entries[name]; !ok {
		l.dir(path.Dir(name), 0o755)
	}
	l.entries[name] = entry{name: name, mode: mode, typ: tar.TypeDir}
}

func (l *layerFiles) file(name string, mode int64, data []byte) {
	l.dir(path.Dir(name), 0o755)
	l.entries[name] = entry{name: name, mode: mode, typ: tar.TypeReg, data: data}
}

func (l *layerFiles) hostFile(name string, mode int64, src string) {
	l.dir(path.Dir(name), 0o755)
	l.entries[name] = entry{name: name, mode: mode, typ: tar.TypeReg, src: src}
}

func (l *layerFiles) symlink(name, target string) {
	l.dir(path.Dir(name), 0o755)
	l.entries[name] = entry{name: name, mode: 0o777, typ: tar.TypeSymlink, link: target}
}

// base adds what every image here has: /tmp, /etc/passwd and /etc/group
// with root, and the mount points runc expects.
func (l *layerFiles) base() {
	l.dir("tmp", 0o1777)
	l.dir("root", 0o700)
	for _, d := range []string{"dev", "proc", "sys", "run"} {
		l.dir(d, 0o755)
	}
	l.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	l.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
}

// tar writes the entries as a tar stream, parents before children.
func (l *layerFiles) tar(w io.Writer) error {
	names := make([]string, 0, len(l.entries))
	for n := range l.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		e := l.entries[n]
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.link,
			Mode:     e.mode,
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		if e.typ == tar.TypeDir {
			hdr.Name += "/"
		}
		data := e.data
		if e.typ == tar.TypeReg && e.src != "" {
			var err error
			if data, err = os.ReadFile(e.src); err != nil {
				return fmt.Errorf("read %s for /%s: %w", e.src, e.name, err)
			}
		}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// layer returns the entries as one gzip-compressed OCI layer.
func (l *layerFiles) layer() (v1.Layer, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if err := l.tar(zw); err != nil {
		return nil, fmt.Errorf("build layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// image returns an OCI image for this machine's architecture with the one
// layer and the given config.
func image(layer v1.Layer, cfg v1.Config) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "berth imagebuild"},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set image config: %w", err)
	}
	return img, nil
}
