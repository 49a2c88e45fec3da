package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

// Preemption: a high-priority group applied on a full node runs once its
// victim has stopped. What the agent adds is the time to running minus
// the victim's own graceful stop minus a normal start of the same group,
// all measured in the same run on the same agent.

const (
	// preemptNS is the namespace of the bench's second agentd, which has
	// a node of one core so that one group fills it.
	preemptNS         = "berth-bench-preempt"
	minPreemptRounds  = 10
	preemptVictimTerm = 200 * time.Millisecond
)

// preemptConfig is the second agentd's config: one core to admit, and a
// quiet pressure monitor.
const preemptConfig = `[node]
cpu = "1"
memory = "1GiB"
pids = 100000

[eviction]
memory_hard = "0"
pids_hard = 0
`

// preemptVictim fills the node. Its SIGTERM handler takes
// preemptVictimTerm; it ticks once the handler is installed.
var preemptVictim = fmt.Sprintf(`name = "victim"
priority = 0
grace_period = "5s"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep", "--term-delay", %q, "--log-every", "50ms"]
resources = { requests = { cpu = "1" } }
`, preemptVictimTerm.String())

// preemptHigh needs the whole node. It may be deleted before its SIGTERM
// handler is set up, so a short grace keeps rounds quick.
const preemptHigh = `name = "high"
priority = 100
grace_period = "200ms"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep"]
resources = { requests = { cpu = "1" } }
`

// preemptResult holds one measurement per round.
type preemptResult struct {
	// preempt: apply of high on the full node → high's Started event.
	preempt []time.Duration
	// victim: the same apply → the victim's exit (containerd's time).
	victim []time.Duration
	// normal: apply of high on the empty node → its Started event.
	normal []time.Duration
}

// overhead is, per round, preempt − victim − normal: what the agent adds
// beyond the victim's exit and a normal start.
func (p *preemptResult) overhead() []time.Duration {
	out := make([]time.Duration, len(p.preempt))
	for i := range p.preempt {
		out[i] = p.preempt[i] - p.victim[i] - p.normal[i]
	}
	return out
}

// preemptAgent is the bench's second agentd.
type preemptAgent struct {
	cmd *exec.Cmd
	api *api.Client
	log string
}

// startPreemptAgent runs a second agentd on the bench's containerd, with
// its own config, directories and namespace, and imports the testapp
// image through it.
func (b *bench) startPreemptAgent(ctx context.Context) (*preemptAgent, error) {
	dir := filepath.Join(b.dir, "preempt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfg, []byte(preemptConfig), 0o644); err != nil {
		return nil, err
	}
	p := &preemptAgent{log: filepath.Join(dir, "agentd.log")}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	socket := filepath.Join(dir, "agent.sock")
	p.cmd = exec.Command(b.agentd, "--config", cfg, "--node-name", "bench-preempt",
		"--state-dir", filepath.Join(dir, "state"), "--run-dir", filepath.Join(dir, "run"),
		"--groups-dir", filepath.Join(dir, "groups"), "--socket", socket,
		"--containerd-address", containerdproc.DefaultConfig(filepath.Join(b.dir, "ctrd")).Address, "--namespace", preemptNS,
		"--managed-containerd", "never", "--log-level", "warn")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	p.api = api.NewClient(socket)
	up := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := p.api.Version(ctx); err == nil {
			up = true
			break
		}
	}
	if !up {
		p.stop()
		return nil, fmt.Errorf("second agentd did not answer within 20s (log: %s)", p.log)
	}
	f, err := os.Open(b.testapp)
	if err != nil {
		p.stop()
		return nil, err
	}
	defer f.Close()
	if _, err := p.api.ImportImage(ctx, "", f); err != nil {
		p.stop()
		return nil, fmt.Errorf("import testapp through the second agentd: %w", err)
	}
	return p, nil
}

// stop deletes the agent's groups, stops it and removes what its
// containers left in the cgroup and runc trees.
func (p *preemptAgent) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if gs, err := p.api.List(ctx); err == nil {
		for _, g := range gs {
			errs = append(errs, p.api.Delete(ctx, g.Name, true))
		}
	}
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		_ = p.cmd.Wait()
	}
	removeCgroups(preemptNS)
	_ = os.RemoveAll(filepath.Join("/run/containerd/runc", preemptNS))
	return errors.Join(errs...)
}

// measurePreemption runs at least minPreemptRounds rounds (plus one to
// warm up) of: apply high on the empty node and time it to Started;
// delete it; fill the node with the victim; apply high again and time it
// to Started, and the victim's exit; delete both.
func (b *bench) measurePreemption(ctx context.Context, rounds int) (res *preemptResult, retErr error) {
	rounds = max(rounds, minPreemptRounds)
	p, err := b.startPreemptAgent(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := p.stop(); err != nil && retErr == nil {
			retErr = err
		}
		if retErr != nil {
			retErr = fmt.Errorf("%w (second agentd's log: %s)", retErr, p.log)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ev := followEvents(ctx, p.api, "")

	res = &preemptResult{}
	apply := func(content string) (time.Time, error) {
		t0 := time.Now()
		_, err := p.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "g.toml", Content: content}}})
		return t0, err
	}
	for i := 0; i < rounds+1; i++ { // round 0 warms up (first shim, snapshots)
		t0, err := apply(preemptHigh)
		if err != nil {
			return nil, err
		}
		normal, err := ev.started(ctx, "high")
		if err != nil {
			return nil, fmt.Errorf("round %d, empty node: %w", i, err)
		}
		if err := p.api.Delete(ctx, "high", true); err != nil {
			return nil, err
		}

		if _, err := apply(preemptVictim); err != nil {
			return nil, err
		}
		if _, err := ev.started(ctx, "victim"); err != nil {
			return nil, fmt.Errorf("round %d, victim: %w", i, err)
		}
		if err := waitTick(ctx, p.api, "victim"); err != nil {
			return nil, fmt.Errorf("round %d: %w", i, err)
		}
		t1, err := apply(preemptHigh)
		if err != nil {
			return nil, err
		}
		running, err := ev.started(ctx, "high")
		if err != nil {
			return nil, fmt.Errorf("round %d, full node: %w", i, err)
		}
		v, err := p.api.Get(ctx, "victim")
		if err != nil {
			return nil, err
		}
		if v.State != api.GroupEvicted || len(v.Containers) != 1 || v.Containers[0].FinishedAt.IsZero() {
			return nil, fmt.Errorf("round %d: victim %s (%s), want Evicted with an exited container", i, v.State, v.Reason)
		}
		exited := v.Containers[0].FinishedAt
		if code := v.Containers[0].ExitCode; code == nil || *code != 0 {
			return nil, fmt.Errorf("round %d: victim exit code %v, want 0 (its SIGTERM handler)", i, code)
		}
		// The victim first: evicted, it holds nothing and goes at once;
		// deleted second, high would let it back in.
		for _, g := range []string{"victim", "high"} {
			if err := p.api.Delete(ctx, g, true); err != nil {
				return nil, err
			}
		}
		if i > 0 {
			res.normal = append(res.normal, normal.Sub(t0))
			res.preempt = append(res.preempt, running.Sub(t1))
			res.victim = append(res.victim, exited.Sub(t1))
		}
	}
	return res, nil
}

// waitTick waits for a tick in the group's log: testapp installs its
// SIGTERM handler before it ticks.
func waitTick(ctx context.Context, c *api.Client, group string) error {
	found := errors.New("found")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		err := c.Logs(ctx, group, api.LogOptions{Tail: -1}, func(e api.LogEntry) error {
			if strings.HasPrefix(e.Line, "tick ") {
				return found
			}
			return nil
		})
		if errors.Is(err, found) {
			return nil
		}
	}
	return fmt.Errorf("group %s logged no tick within 10s", group)
}

// printPreemption prints the preemption measurement after the others.
func printPreemption(p *preemptResult) {
	fmt.Printf("\npreemption on a full node (1-core node, victim's SIGTERM handler %s; %d rounds)\n",
		preemptVictimTerm, len(p.preempt))
	fmt.Printf("  %-52s %9s %9s\n", "", "p50", "max")
	printPair := func(name string, d []time.Duration) {
		fmt.Printf("  %-52s %9s %9s\n", name, ms(pct(d, 50)), ms(pct(d, 100)))
	}
	printPair("(p) agentd: apply high on a full node → Started", p.preempt)
	printPair("(v)   of which: → victim exited (its graceful stop)", p.victim)
	printPair("(n) agentd: apply high on an empty node → Started", p.normal)
	printPair("(o) overhead: (p) − (v) − (n)   (target ≤ 100ms)", p.overhead())
}
