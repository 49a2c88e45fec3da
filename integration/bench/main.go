package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/contrib/imagebuild"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

func main() {
	rounds := flag.Int("rounds", 20, "rounds of each start measurement")
	graceRounds := flag.Int("grace-rounds", 10, "rounds of the SIGKILL-at-grace measurement")
	keep := flag.Bool("keep", false, "keep the temp dir (for debugging)")
	flag.IntVar(&fpGroups, "footprint-groups", 100, "running groups for the RSS and idle CPU measurement (0 skips the footprint)")
	flag.IntVar(&fpScale, "scale-groups", 200, "running groups for the apply-latency-under-load measurement")
	flag.DurationVar(&fpIdle, "idle", 60*time.Second, "window of the idle CPU measurement")
	flag.IntVar(&clusterTrials, "cluster-trials", 10, "trials of the node-loss and leader-loss measurements (0 skips the cluster benchmarks)")
	flag.Parse()
	if !*clusterOnly && !*queueOnly && !*leaseOnly {
		ambassadorFirst() // needs neither root nor containerd; alone with -ambassador-only
	}
	if err := run(*rounds, *graceRounds, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	dir      string
	ctrdAddr string
	ctrd     *containerdproc.Process
	client   *containerd.Client
	agentd   string
	agent    *exec.Cmd
	socket   string
	api      *api.Client
	busybox  string
	testapp  string
}

func run(rounds, graceRounds int, keep bool) (retErr error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root (it starts containerd and containers)")
	}
	dir, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	b := &bench{dir: dir}
	defer func() {
		if err := b.cleanup(keep); err != nil && retErr == nil {
			retErr = err
		}
	}()
	ctx := context.Background()
	fmt.Printf("machine: %s, %d cores, %s\n", hostInfo(), runtime.NumCPU(), runtime.Version())
	if err := b.setup(ctx); err != nil {
		return err
	}
	if *clusterOnly {
		return b.clusterOnly(ctx)
	}
	if *leaseOnly {
		return b.leaseBenchOnly(ctx) // lease.go
	}
	if *queueOnly {
		return b.queueBenchOnly(ctx)
	}

	if *netOnly {
		return b.benchNetwork(ctx, rounds)
	}
	apply, err := b.measureApply(ctx, rounds)
	if err != nil {
		return fmt.Errorf("apply through agentd: %w", err)
	}
	direct, err := b.measureDirect(ctx, rounds, true)
	if err != nil {
		return fmt.Errorf("direct containerd client: %w", err)
	}
	plain, err := b.measureDirect(ctx, rounds, false)
	if err != nil {
		return fmt.Errorf("plain containerd client: %w", err)
	}
	grace, err := b.measureGrace(ctx, graceRounds)
	if err != nil {
		return fmt.Errorf("grace: %w", err)
	}
	failover, err := b.measureFailover(ctx, rounds)
	if err != nil {
		return fmt.Errorf("liveness failover: %w", err)
	}
	preempt, err := b.measurePreemption(ctx, rounds)
	if err != nil {
		return fmt.Errorf("preemption: %w", err)
	}

	fmt.Printf("\n3-container group, apply → all tasks running (%d rounds each)\n", rounds)
	fmt.Printf("  %-44s %9s %9s %9s\n", "", "min", "median", "p95")
	printRow("(a) agentd: API apply → Running event", apply)
	printRow("(b) containerd client, same containers", direct)
	printRow("(b') containerd client, plain sequential", plain)
	fmt.Printf("  ratio (a)/(b)  median %.3f  p95 %.3f   (target ≤ 1.10)\n", ratio(apply, direct, 50), ratio(apply, direct, 95))
	fmt.Printf("  ratio (a)/(b') median %.3f  p95 %.3f\n", ratio(apply, plain, 50), ratio(apply, plain, 95))
	fmt.Printf("\nSIGKILL at grace (1s grace, SIGTERM ignored, %d rounds): error median %s, max %s   (target ≤ 50ms)\n",
		graceRounds, ms(pct(grace, 50)), ms(pct(grace, 100)))
	printFailover(failover)
	printPreemption(preempt)
	if clusterTrials > 0 {
		cr, err := b.measureCluster(ctx, clusterTrials)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		cr.print()
	}
	if *leaseTrials > 0 {
		if err := b.leaseBenchOnly(ctx); err != nil {
			return err
		}
	}
	if *queueItems > 0 {
		qr, err := b.measureQueues(ctx) // queue.go
		if err != nil {
			return fmt.Errorf("queues: %w", err)
		}
		qr.print()
	}
	if fpGroups > 0 {
		fp, err := b.measureFootprint(ctx, fpGroups, max(fpScale, fpGroups), 10, fpIdle)
		if err != nil {
			return fmt.Errorf("footprint: %w", err)
		}
		fp.print()
	}
	if err := b.benchNetwork(ctx, rounds); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// clusterTrials is -cluster-trials.
var clusterTrials int

// Footprint options (flags).
var (
	fpGroups, fpScale int
	fpIdle            time.Duration
)

func (b *bench) setup(ctx context.Context) error {
	t0 := time.Now()
	cfg := containerdproc.DefaultConfig(filepath.Join(b.dir, "ctrd"))
	p, err := containerdproc.Start(ctx, cfg)
	if err != nil {
		return err
	}
	b.ctrd = p
	b.client, err = containerd.New(cfg.Address)
	if err != nil {
		return err
	}
	// Images, built here and written as OCI archives.
	bb, err := imagebuild.Busybox(busyboxPath())
	if err != nil {
		return err
	}
	b.busybox = filepath.Join(b.dir, "busybox.tar")
	if err := imagebuild.WriteFile(bb, "berth.local/busybox:latest", b.busybox); err != nil {
		return err
	}
	ta, err := imagebuild.GoBinary(filepath.Join(repoRoot(), "integration", "testapp"), "testapp")
	if err != nil {
		return err
	}
	b.testapp = filepath.Join(b.dir, "testapp.tar")
	if err := imagebuild.WriteFile(ta, "berth.local/testapp:latest", b.testapp); err != nil {
		return err
	}
	b.agentd = filepath.Join(b.dir, "agentd")
	build := exec.Command("go", "build", "-o", b.agentd, "./cmd/agentd")
	build.Dir, build.Stdout, build.Stderr = repoRoot(), os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build agentd: %w", err)
	}
	b.ctrdAddr = cfg.Address
	if err := b.startAgent(ctx, cfg.Address); err != nil {
		return err
	}
	for _, p := range []string{b.busybox, b.testapp} {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = b.api.ImportImage(ctx, "", f)
		f.Close()
		if err != nil {
			return fmt.Errorf("import %s through agentd: %w", p, err)
		}
		if err := importDirect(ctx, b.client, directNS, p); err != nil {
			return err
		}
	}
	fmt.Printf("setup: containerd, images, agentd in %s\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

const agentNS, directNS = "berth-bench", "berth-bench-direct"

func (b *bench) startAgent(ctx context.Context, addr string) error {
	b.socket = filepath.Join(b.dir, "agent.sock")
	logf, err := os.Create(filepath.Join(b.dir, "agentd.log"))
	if err != nil {
		return err
	}
	cfg, err := b.agentConfig() // network.go: a bridge of its own
	if err != nil {
		return err
	}
	b.agent = exec.Command(b.agentd, "--config", cfg, "--node-name", "bench", "--state-dir", filepath.Join(b.dir, "state"),
		"--run-dir", filepath.Join(b.dir, "run"), "--groups-dir", filepath.Join(b.dir, "groups"),
		"--socket", b.socket, "--containerd-address", addr, "--namespace", agentNS,
		"--managed-containerd", "never", "--log-level", "warn")
	b.agent.Stdout, b.agent.Stderr = logf, logf
	if err := b.agent.Start(); err != nil {
		return err
	}
	b.api = api.NewClient(b.socket)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := b.api.Version(ctx); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("agentd did not answer within 20s (log: %s)", logf.Name())
}

func (b *bench) cleanup(keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []string
	if b.api != nil {
		if gs, err := b.api.List(ctx); err == nil {
			for _, g := range gs {
				if err := b.api.Delete(ctx, g.Name, true); err != nil {
					errs = append(errs, err.Error())
				}
			}
		}
	}
	if b.agent != nil && b.agent.Process != nil {
		_ = b.agent.Process.Signal(os.Interrupt)
		_ = b.agent.Wait()
	}
	if b.client != nil {
		_ = cleanDirect(namespaces.WithNamespace(ctx, directNS), b.client)
		b.client.Close()
	}
	if err := cleanupNetwork(); err != nil {
		errs = append(errs, err.Error())
	}
	if b.ctrd != nil {
		_ = b.ctrd.Stop(10 * time.Second)
	}
	for _, ns := range []string{agentNS, directNS} {
		removeCgroups(ns)
		_ = os.RemoveAll(filepath.Join("/run/containerd/runc", ns))
	}
	if !keep {
		unmountBelow(b.dir)
		_ = os.RemoveAll(b.dir)
	} else {
		fmt.Println("kept", b.dir)
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup: %s", strings.Join(errs, "; "))
	}
	return nil
}

func printRow(name string, d []time.Duration) {
	fmt.Printf("  %-44s %9s %9s %9s\n", name, ms(pct(d, 0)), ms(pct(d, 50)), ms(pct(d, 95)))
}

// pct returns the p-th percentile (0 = min, 100 = max), nearest rank.
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (p*len(s) + 99) / 100
	if i > 0 {
		i--
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func ratio(a, b []time.Duration, p int) float64 {
	return float64(pct(a, p)) / float64(pct(b, p))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func hostInfo() string {
	out, err := exec.Command("uname", "-srm").Output()
	if err != nil {
		return runtime.GOOS
	}
	return strings.TrimSpace(string(out))
}

func busyboxPath() string {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "busybox"
}

// repoRoot is the module root: the bench runs from it (make bench).
func repoRoot() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}
