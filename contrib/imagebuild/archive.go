package imagebuild

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on the manifest in index.json that name the image. containerd
// prefers its own (taken as is), then the OCI one (taken as is by the Go
// client's Import unless an image-ref translator is given, as `ctr import`
// does); both carry the full reference.
const (
	AnnotationOCIRefName       = "org.opencontainers.image.ref.name"
	AnnotationContainerdImgRef = "io.containerd.image.name"
)

// WriteOCIArchive writes img as an OCI image-layout tarball to w: oci-layout,
// index.json naming the manifest ref (e.g. "berth.local/busybox:latest"),
// and the manifest, config and layer blobs under blobs/sha256/.
func WriteOCIArchive(img v1.Image, ref string, w io.Writer) error {
	if ref == "" {
		return fmt.Errorf("write oci archive: empty image reference")
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("write oci archive: manifest: %w", err)
	}
	mdigest, err := img.Digest()
	if err != nil {
		return err
	}
	mtype, err := img.MediaType()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("write oci archive: config: %w", err)
	}
	cdigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mtype,
			Digest:    mdigest,
			Size:      int64(len(manifest)),
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
			Annotations: map[string]string{
				AnnotationOCIRefName:       ref,
				AnnotationContainerdImgRef: ref,
			},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	if err := writeTarFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := writeTarFile(tw, "index.json", indexJSON); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	if err := writeTarFile(tw, blobPath(mdigest), manifest); err != nil {
		return err
	}
	if err := writeTarFile(tw, blobPath(cdigest), config); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		if err := writeLayer(tw, l); err != nil {
			return fmt.Errorf("write oci archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write oci archive: %w", err)
	}
	return nil
}

// WriteFile writes img as an OCI archive (see WriteOCIArchive) to path,
// atomically: the file appears complete or not at all.
func WriteFile(img v1.Image, ref, path string) (retErr error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write oci archive: %w", err)
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := WriteOCIArchive(img, ref, f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write oci archive: %w", err)
	}
	return os.Rename(f.Name(), path)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write oci archive: %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("write oci archive: %s: %w", name, err)
	}
	return nil
}

// writeLayer streams one compressed layer blob, checking its size.
func writeLayer(tw *tar.Writer, l v1.Layer) error {
	digest, err := l.Digest()
	if err != nil {
		return err
	}
	size, err := l.Size()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: blobPath(digest), Mode: 0o644, Size: size, ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, rc)
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	if n != size {
		return fmt.Errorf("layer %s: wrote %d bytes, want %d", digest, n, size)
	}
	return nil
}
