package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// progressInterval is how often the import progress line is redrawn.
const progressInterval = 200 * time.Millisecond

func (a *app) imageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Import, pull and list images in agentd's containerd namespace",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.imageImportCommand(), a.imagePullCommand(), a.imageListCommand())
	return cmd
}

func (a *app) imageImportCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Import an OCI or docker image archive",
		Long: `Import an OCI or docker image archive (as written by "docker save" or
"ctr image export"), streaming it to agentd. When stderr is a terminal a
progress line shows the bytes sent and the rate.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				r     io.Reader = a.stdin
				total int64     = -1
				label           = "stdin"
			)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
					total = fi.Size()
				}
				r, label = f, args[0]
			}
			cr := &countingReader{r: r}
			stop := func() {}
			if a.isTerminal(a.stderr) {
				stop = a.showProgress("importing "+label, cr, total)
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			imgs, err := a.client().ImportImage(ctx, name, cr)
			stop()
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, imgs)
			}
			for _, img := range imgs {
				fmt.Fprintf(a.stdout, "imported %s (%s, %s)\n", img.Name, shortDigest(img.Digest), humanBytes(img.Size))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "image reference to give the imported image")
	return cmd
}

func (a *app) imagePullCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image with agentd's registry credentials",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			img, err := a.client().PullImage(ctx, args[0])
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, img)
			}
			fmt.Fprintf(a.stdout, "pulled %s (%s, %s)\n", img.Name, shortDigest(img.Digest), humanBytes(img.Size))
			return nil
		},
	}
}

func (a *app) imageListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images: NAME DIGEST SIZE (-o wide: full digests)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			imgs, err := a.client().Images(ctx)
			if err != nil {
				return err
			}
			sort.Slice(imgs, func(i, j int) bool { return imgs[i].Name < imgs[j].Name })
			if a.output == outputJSON {
				if imgs == nil {
					imgs = []api.ImageInfo{}
				}
				return printJSON(a.stdout, imgs)
			}
			if len(imgs) == 0 {
				fmt.Fprintln(a.stderr, "no images")
				return nil
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE")
			for _, img := range imgs {
				digest := shortDigest(img.Digest)
				if a.output == outputWide {
					digest = img.Digest
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", img.Name, orDash(digest), humanBytes(img.Size))
			}
			return tw.Flush()
		},
	}
}

// countingReader counts the bytes read through it; Count may be called
// from another goroutine.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Count() int64 { return c.n.Load() }

// showProgress redraws a progress line on stderr until the returned stop
// is called; stop draws the final line and ends it.
func (a *app) showProgress(label string, cr *countingReader, total int64) (stop func()) {
	start := a.now()
	line := func() string {
		n := cr.Count()
		s := label + ": " + humanBytes(n)
		if total >= 0 {
			s += " / " + humanBytes(total)
		}
		if secs := a.now().Sub(start).Seconds(); secs > 0 {
			s += fmt.Sprintf(" (%s/s)", humanBytes(int64(float64(n)/secs)))
		}
		return s
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(a.stderr, "\r%s\x1b[K", line())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		fmt.Fprintf(a.stderr, "\r%s\x1b[K\n", line())
	}
}
