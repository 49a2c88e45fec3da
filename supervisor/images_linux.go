//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/platforms"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/config"
	dockerconfig "github.com/docker/cli/cli/config"

	"github.com/berth-project/berth/api"
)

// Images pulls, imports and lists images in the agent's namespace, and
// unpacks them for the snapshotter. Pulls of one reference are
// deduplicated: concurrent callers wait for the same pull.
type Images struct {
	client      *containerd.Client
	namespace   string
	snapshotter string
	// authFile is a docker-style config.json with registry credentials.
	authFile string

	mu       sync.Mutex
	inflight map[string]*pull
	// unpacked and configs cache what never changes for a digest, so a
	// start costs one GetImage round trip, not five.
	unpacked map[string]bool
	configs  map[string]*ImageConfig
}

type pull struct {
	done chan struct{}
	img  containerd.Image
	err  error
}

// NewImages returns the image store of a namespace.
func NewImages(client *containerd.Client, namespace, snapshotter, authFile string) *Images {
	return &Images{client: client, namespace: namespace, snapshotter: snapshotter, authFile: authFile, inflight: map[string]*pull{},
		unpacked: map[string]bool{}, configs: map[string]*ImageConfig{}}
}

func (m *Images) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, m.namespace)
}

// Ensure returns the image, unpacked, pulling it if it is not present.
func (m *Images) Ensure(ctx context.Context, ref string) (containerd.Image, error) {
	ctx = m.ctx(ctx)
	img, err := m.client.GetImage(ctx, ref)
	if err == nil {
		if err := m.unpack(ctx, img); err != nil {
			return nil, err
		}
		return img, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %s: %w", ref, convertErr(err))
	}
	return m.Pull(ctx, ref)
}

func (m *Images) unpack(ctx context.Context, img containerd.Image) error {
	key := img.Target().Digest.String()
	m.mu.Lock()
	done := m.unpacked[key]
	m.mu.Unlock()
	if done {
		return nil
	}
	ok, err := img.IsUnpacked(ctx, m.snapshotter)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name(), err)
	}
	if !ok {
		if err := img.Unpack(ctx, m.snapshotter); err != nil {
			return fmt.Errorf("unpack image %s: %w", img.Name(), err)
		}
	}
	m.mu.Lock()
	m.unpacked[key] = true
	m.mu.Unlock()
	return nil
}

// Config returns what the supervisor needs of an image's config.
func (m *Images) Config(ctx context.Context, img containerd.Image) (*ImageConfig, error) {
	key := img.Target().Digest.String()
	m.mu.Lock()
	c, ok := m.configs[key]
	m.mu.Unlock()
	if ok {
		return c, nil
	}
	ic, err := img.Spec(m.ctx(ctx))
	if err != nil {
		return nil, fmt.Errorf("read config of image %s: %w", img.Name(), err)
	}
	c = &ImageConfig{Ref: img.Name(), StopSignal: ic.Config.StopSignal}
	m.mu.Lock()
	m.configs[key] = c
	m.mu.Unlock()
	return c, nil
}

// Pull fetches ref from its registry with the credentials of the auth
// file, and unpacks it.
func (m *Images) Pull(ctx context.Context, ref string) (containerd.Image, error) {
	ctx = m.ctx(ctx)
	m.mu.Lock()
	p, ok := m.inflight[ref]
	if !ok {
		p = &pull{done: make(chan struct{})}
		m.inflight[ref] = p
		go func() {
			// The pull outlives any one caller's ctx; it is bounded by its own.
			pctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), m.namespace), pullTimeout)
			defer cancel()
			p.img, p.err = m.client.Pull(pctx, ref,
				containerd.WithPullUnpack,
				containerd.WithPullSnapshotter(m.snapshotter),
				containerd.WithResolver(m.resolver(pctx)))
			if p.err != nil {
				p.err = fmt.Errorf("pull image %s: %w (if it is a local image, import it with `agentctl image import`)", ref, convertErr(p.err))
			}
			m.mu.Lock()
			delete(m.inflight, ref)
			m.mu.Unlock()
			close(p.done)
		}()
	}
	m.mu.Unlock()
	select {
	case <-p.done:
		return p.img, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

const pullTimeout = 30 * time.Minute

func (m *Images) resolver(ctx context.Context) remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{Credentials: m.credentials}),
	})
}

// credentials reads the auth file on each pull, so edits apply without a
// restart.
func (m *Images) credentials(host string) (string, string, error) {
	if m.authFile == "" {
		return "", "", nil
	}
	f, err := os.Open(m.authFile)
	if err != nil {
		if os.IsNotExist(err) {
			return "", "", nil
		}
		return "", "", fmt.Errorf("registry auth file: %w", err)
	}
	defer f.Close()
	cf, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return "", "", fmt.Errorf("registry auth file %s: %w", m.authFile, err)
	}
	key := host
	if host == "registry-1.docker.io" || host == "docker.io" {
		key = "https://index.docker.io/v1/"
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return "", "", err
	}
	if ac.IdentityToken != "" {
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}

// Import reads an OCI image layout or docker archive from r, stores every
// image in it (named by its ref annotation, or name when given), and
// unpacks them.
func (m *Images) Import(ctx context.Context, name string, r io.Reader) ([]api.ImageInfo, error) {
	ctx = m.ctx(ctx)
	opts := []containerd.ImportOpt{containerd.WithImportPlatform(platforms.Default())}
	if name != "" {
		opts = append(opts, containerd.WithImageRefTranslator(func(string) string { return name }))
	}
	imgs, err := m.client.Import(ctx, r, opts...)
	if err != nil {
		return nil, fmt.Errorf("import image: %w: %w", err, api.ErrInvalid)
	}
	out := make([]api.ImageInfo, 0, len(imgs))
	for _, i := range imgs {
		img := containerd.NewImage(m.client, i)
		if err := m.unpack(ctx, img); err != nil {
			return nil, err
		}
		out = append(out, m.info(ctx, i))
	}
	return out, nil
}

// List returns the images of the namespace.
func (m *Images) List(ctx context.Context) ([]api.ImageInfo, error) {
	ctx = m.ctx(ctx)
	imgs, err := m.client.ImageService().List(ctx)
	if err != nil {
		return nil, convertErr(err)
	}
	out := make([]api.ImageInfo, 0, len(imgs))
	for _, i := range imgs {
		out = append(out, m.info(ctx, i))
	}
	return out, nil
}

func (m *Images) info(ctx context.Context, i images.Image) api.ImageInfo {
	size, _ := containerd.NewImage(m.client, i).Size(ctx)
	return api.ImageInfo{Name: i.Name, Digest: i.Target.Digest.String(), Size: size}
}

// Info describes one image, pulled-or-imported.
func (m *Images) Info(ctx context.Context, img containerd.Image) api.ImageInfo {
	return m.info(m.ctx(ctx), img.Metadata())
}
