// Package imagebuild builds small OCI images locally, without a registry or
// a Docker daemon, with go-containerregistry: a busybox image from the
// host's busybox-static binary (Busybox) and an image holding one static Go
// binary of this module (GoBinary). WriteOCIArchive and WriteFile write an
// image as an OCI image-layout tarball that containerd's Import (and
// `ctr image import`, and agentctl's image import) turn into an image named
// exactly as given.
//
// It owns image assembly and the archive format. It does not import images
// into containerd or push them anywhere.
//
// Images are reproducible: file times and the config's creation time are
// fixed, so the same inputs give the same digests and a re-import is a
// no-op.
//
// Use:
//
//	img, err := imagebuild.Busybox("/bin/busybox")
//	err = imagebuild.WriteFile(img, "berth.local/busybox:latest", "busybox.tar")
//
//	app, err := imagebuild.GoBinary("./integration/testapp", "testapp")
//
// The build-images command (cmd/build-images) writes the two images the
// integration tests, `make run` and the benchmark use.
package imagebuild
