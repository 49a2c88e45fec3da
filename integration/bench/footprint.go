package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
)

// footprint is what the operations benchmark measured.
type footprint struct {
	rssIdle, rssLoaded  int64 // bytes
	groups              int
	idleCPU             float64 // fraction of one core
	idleWindow          time.Duration
	latEmpty, latLoaded []time.Duration
	loadedGroups        int
}

func sleeperGroup(name string) api.ApplyFile {
	return api.ApplyFile{Name: name + ".toml", Content: fmt.Sprintf(`name = %q
grace_period = "100ms"
[[container]]
name = "sleep"
image = "berth.local/busybox:latest"
command = ["sleep", "86400"]
`, name)}
}

// measureFootprint measures agentd's RSS with no groups and with n
// running, its CPU while idle with n groups over window, and the
// apply-to-running latency of one more group with none vs scale groups
// running.
func (b *bench) measureFootprint(ctx context.Context, n, scale, rounds int, window time.Duration) (*footprint, error) {
	fp := &footprint{groups: n, idleWindow: window, loadedGroups: scale}
	pid := b.agent.Process.Pid
	time.Sleep(2 * time.Second) // let the idle agent settle
	var err error
	if fp.rssIdle, err = rss(pid); err != nil {
		return nil, err
	}
	if fp.latEmpty, err = b.applyLatency(ctx, rounds); err != nil {
		return nil, err
	}
	if err := b.applyMany(ctx, 0, n); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	if fp.rssLoaded, err = rss(pid); err != nil {
		return nil, err
	}
	t0, err := cpuTime(pid)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	time.Sleep(window)
	t1, err := cpuTime(pid)
	if err != nil {
		return nil, err
	}
	fp.idleCPU = (t1 - t0).Seconds() / time.Since(start).Seconds()
	if err := b.applyMany(ctx, n, scale); err != nil {
		return nil, err
	}
	if fp.latLoaded, err = b.applyLatency(ctx, rounds); err != nil {
		return nil, err
	}
	return fp, b.deleteMany(ctx, scale)
}

// applyMany applies groups fill-from..to-1 in one request and waits until
// they all run.
func (b *bench) applyMany(ctx context.Context, from, to int) error {
	var files []api.ApplyFile
	for i := from; i < to; i++ {
		files = append(files, sleeperGroup(fmt.Sprintf("fill-%d", i)))
	}
	if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: files}); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		gs, err := b.api.List(ctx)
		if err != nil {
			return err
		}
		running := 0
		for _, g := range gs {
			if strings.HasPrefix(g.Name, "fill-") && g.State == api.GroupRunning && g.Running() == 1 {
				running++
			}
		}
		if running == to {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%d groups not running within 5 minutes", to)
}

func (b *bench) deleteMany(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := b.api.Delete(ctx, fmt.Sprintf("fill-%d", i), true); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// applyLatency times apply → Running of one single-container group.
func (b *bench) applyLatency(ctx context.Context, rounds int) ([]time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ev := followEvents(ctx, b.api, "probe-one")
	var out []time.Duration
	for i := 0; i < rounds+1; i++ {
		start := time.Now()
		if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{sleeperGroup("probe-one")}}); err != nil {
			return nil, err
		}
		at, err := ev.started(ctx, "probe-one")
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, at.Sub(start))
		}
		if err := b.api.Delete(ctx, "probe-one", true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func rss(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuTime is the user+system CPU time of a process.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100, nil
}

func (fp *footprint) print() {
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Printf("\nagentd footprint (anchors: k3s agent ≈ 275 MB; kubelet's own ceiling 200 MB)\n")
	fmt.Printf("  RSS idle, no groups:          %s   (target ≤ 40 MB)\n", mib(fp.rssIdle))
	fmt.Printf("  RSS with %d running groups:  %s   (target ≤ 60 MB)\n", fp.groups, mib(fp.rssLoaded))
	fmt.Printf("  idle CPU with %d groups over %s: %.2f%% of a core   (target ≤ 1%%)\n", fp.groups, fp.idleWindow, fp.idleCPU*100)
	fmt.Printf("  apply → running of one group (%d rounds): median %s with no groups, %s with %d running; ratio %.3f   (target ≤ 1.2)\n",
		len(fp.latEmpty), ms(pct(fp.latEmpty, 50)), ms(pct(fp.latLoaded, 50)), fp.loadedGroups, ratio(fp.latLoaded, fp.latEmpty, 50))
}
