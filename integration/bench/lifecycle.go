package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/pkg/netns"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// Liveness failover: how long from a liveness failure to the restarted
// container being Ready again, against what detection and a start cost at
// the least.

// The probe timing of failoverGroup, for the baseline.
const (
	livenessPeriod           = 200 * time.Millisecond
	livenessFailureThreshold = 3
	minFailoverRounds        = 10
)

// failoverGroup has one testapp whose liveness exec probe fails once
// /run/dead exists. /run is a tmpfs each task gets anew, so the restarted
// task is alive again. factor = 1 keeps every round's restart delay at the
// same 100ms: the rounds follow each other well within reset_after.
var failoverGroup = fmt.Sprintf(`name = "failover"
grace_period = "1s"
restart_backoff = { initial = "100ms", factor = 1 }
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--term-delay", "0s"]
liveness = { exec = { command = ["sh", "-c", "test ! -e /run/dead"] }, period = %[1]q, timeout = %[1]q, failure_threshold = %[2]d }
readiness = { http = { path = "/ready", port = 8080 }, period = "100ms", timeout = "100ms" }
`, livenessPeriod.String(), livenessFailureThreshold)

// failoverResult holds one measurement per round.
type failoverResult struct {
	// failover: /run/dead written → the ContainerReady event of the
	// restarted container (the event's own time).
	failover []time.Duration
	// detect: /run/dead written → the LivenessProbeFailed event.
	detect []time.Duration
	// start: a new task of the same container with the containerd
	// client, from NewTask to the app answering 200 on /ready.
	start []time.Duration
}

// baseline is, per round, period × failure_threshold plus the measured
// start: the least any supervisor probing this way could do.
func (f *failoverResult) baseline() []time.Duration {
	out := make([]time.Duration, len(f.start))
	for i, s := range f.start {
		out[i] = livenessPeriod*livenessFailureThreshold + s
	}
	return out
}

// measureFailover runs at least minFailoverRounds rounds of: make the
// liveness probe fail, wait for the restarted container to be Ready; and
// in each round one plain container start for the baseline.
//
// The start of the baseline is a new task of an existing container with
// the containerd client (same image, options, log driver and shim
// grouping as the agent's, in a pinned network namespace), timed until
// the app answers /ready. That is exactly what a restart needs of
// containerd — the agent too keeps the container and makes a new task — so
// the ratio shows what the agent adds: stopping the old task, the 100ms
// backoff, probe granularity. A fresh start through the API would instead
// measure the agent against itself.
func (b *bench) measureFailover(ctx context.Context, rounds int) (*failoverResult, error) {
	rounds = max(rounds, minFailoverRounds)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan api.Event, 1024)
	go func() {
		_ = b.api.Events(ctx, api.EventOptions{Group: "failover", Follow: true}, func(e api.Event) error {
			events <- e
			return nil
		})
	}()
	if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "failover.toml", Content: failoverGroup}}}); err != nil {
		return nil, err
	}
	direct, err := b.newDirectApp(ctx)
	if err != nil {
		return nil, fmt.Errorf("direct container: %w", err)
	}
	defer direct.close()

	res := &failoverResult{}
	var lastSeq uint64
	for i := 0; i < rounds; i++ {
		nsPath, err := b.waitAlive(ctx, "failover")
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", i, err)
		}
		if err := postInNetns(ctx, nsPath, "http://127.0.0.1:8080/write?path=/run/dead"); err != nil {
			return nil, fmt.Errorf("round %d: write /run/dead: %w", i, err)
		}
		t0 := time.Now()
		var failed time.Time
		timeout := time.After(30 * time.Second)
	wait:
		for {
			select {
			case e := <-events:
				if e.Seq <= lastSeq {
					continue
				}
				lastSeq = e.Seq
				switch {
				case e.Container == "app" && e.Reason == "LivenessProbeFailed":
					failed = e.Time
				case e.Container == "app" && e.Reason == "ContainerReady" && !failed.IsZero():
					res.failover = append(res.failover, e.Time.Sub(t0))
					res.detect = append(res.detect, failed.Sub(t0))
					break wait
				case e.Reason == "StartFailed" || e.Reason == "ImageUnavailable":
					return nil, fmt.Errorf("round %d: %s: %s", i, e.Reason, e.Message)
				}
			case <-timeout:
				return nil, fmt.Errorf("round %d: no LivenessProbeFailed then ContainerReady within 30s", i)
			}
		}

		took, err := direct.start(ctx)
		if err != nil {
			return nil, fmt.Errorf("round %d: direct start: %w", i, err)
		}
		res.start = append(res.start, took)
	}
	return res, b.api.Delete(ctx, "failover", true)
}

// waitAlive waits until the group's app runs, is ready and its current
// task has passed a liveness probe; it returns the group's netns path.
func (b *bench) waitAlive(ctx context.Context, name string) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := b.api.Get(ctx, name)
		if err == nil && st.State == api.GroupRunning && len(st.Containers) == 1 && st.Containers[0].Ready {
			c := st.Containers[0]
			for _, p := range c.Probes {
				if p.Kind == "liveness" && p.Result == "success" && p.LastProbe.After(c.StartedAt) {
					return st.NetNS, nil
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("group %s not running, ready and alive within 30s", name)
}

// directApp is the baseline's container: created once, started with a
// new task every round.
type directApp struct {
	b   *bench
	ctx context.Context // in directNS
	c   containerd.Container
	ns  *netns.NetNS
	ioc cio.Creator
}

func (b *bench) newDirectApp(ctx context.Context) (*directApp, error) {
	ctx = namespaces.WithNamespace(ctx, directNS)
	img, err := b.client.GetImage(ctx, "berth.local/testapp:latest")
	if err != nil {
		return nil, err
	}
	nsDir := filepath.Join(b.dir, "direct-netns")
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return nil, err
	}
	ns, err := netns.NewNetNS(nsDir)
	if err != nil {
		return nil, err
	}
	if err := inNetns(ns.GetPath(), func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		_ = ns.Remove()
		return nil, fmt.Errorf("loopback up: %w", err)
	}
	const id = "failover.app"
	c, err := b.client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime("io.containerd.runc.v2", nil),
		containerd.WithNewSpec(oci.WithImageConfigArgs(img, []string{"serve", "--listen", ":8080"}),
			oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ns.GetPath()}),
			oci.WithHostname("failover"), oci.WithNoNewPrivileges, seccomp.WithDefaultProfile(),
			oci.WithAnnotations(map[string]string{supervisor.ShimGroupAnnotation: "failover"})))
	if err != nil {
		_ = ns.Remove()
		return nil, err
	}
	v := url.Values{"dir": {filepath.Join(b.dir, "direct-logs")}, "max_size": {"10485760"}, "max_files": {"3"}}
	ioc := cio.BinaryIO(b.agentd, map[string]string{supervisor.LogDriverArg: v.Encode()})
	return &directApp{b: b, ctx: ctx, c: c, ns: ns, ioc: ioc}, nil
}

// start makes and starts a new task, times it until /ready answers 200,
// and then kills and deletes the task (untimed).
func (d *directApp) start(ctx context.Context) (time.Duration, error) {
	ctx = namespaces.WithNamespace(ctx, directNS)
	t0 := time.Now()
	task, err := d.c.NewTask(ctx, d.ioc)
	if err != nil {
		return 0, err
	}
	defer func() {
		_, _ = task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	}()
	exitC, err := task.Wait(ctx)
	if err != nil {
		return 0, err
	}
	if err := task.Start(ctx); err != nil {
		return 0, err
	}
	client := netnsClient(d.ns.GetPath(), time.Second)
	deadline := t0.Add(30 * time.Second)
	var took time.Duration
	for {
		resp, err := client.Get("http://127.0.0.1:8080/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				took = time.Since(t0)
				break
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("/ready did not answer 200 within 30s (last error %v)", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		return 0, err
	}
	select {
	case <-exitC:
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("task did not exit within 10s of SIGKILL")
	}
	return took, nil
}

func (d *directApp) close() {
	_ = d.c.Delete(d.ctx, containerd.WithSnapshotCleanup)
	_ = d.ns.Remove()
}

// inNetns runs fn on a thread that entered the network namespace pinned
// at nsPath. The thread never leaves it: it stays locked, so the runtime
// discards it with the goroutine.
func inNetns(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// netnsClient returns an HTTP client whose connections are made from
// inside the network namespace pinned at nsPath, so that 127.0.0.1 is a
// group's loopback (the pattern of integration/util_test.go's netnsHTTP).
func netnsClient(nsPath string, timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(nsPath, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// postInNetns POSTs a one-byte body to target from inside a group's
// network namespace and wants 200.
func postInNetns(ctx context.Context, nsPath, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader("x"))
	if err != nil {
		return err
	}
	resp, err := netnsClient(nsPath, 10*time.Second).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", target, resp.Status)
	}
	return nil
}

// printFailover prints the failover measurement after the others.
func printFailover(f *failoverResult) {
	base := f.baseline()
	recovery := make([]time.Duration, len(f.failover))
	for i := range f.failover {
		recovery[i] = f.failover[i] - f.detect[i]
	}
	fmt.Printf("\nliveness failover (exec probe every %s × %d, readiness every 100ms, backoff 100ms; %d rounds)\n",
		livenessPeriod, livenessFailureThreshold, len(f.failover))
	fmt.Printf("  %-52s %9s %9s\n", "", "p50", "max")
	printPair := func(name string, d []time.Duration) {
		fmt.Printf("  %-52s %9s %9s\n", name, ms(pct(d, 50)), ms(pct(d, 100)))
	}
	printPair("(f) agentd: marker written → restarted app Ready", f.failover)
	printPair("    of which: → LivenessProbeFailed", f.detect)
	printPair("    of which: LivenessProbeFailed → Ready", recovery)
	printPair("(s) containerd client: new task → /ready 200", f.start)
	printPair(fmt.Sprintf("(g) baseline: %s (period × threshold) + (s)", ms(livenessPeriod*livenessFailureThreshold)), base)
	fmt.Printf("  ratio (f)/(g)  p50 %.3f  max %.3f\n", ratio(f.failover, base, 50), ratio(f.failover, base, 100))
}
