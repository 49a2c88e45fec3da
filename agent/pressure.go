package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// meminfo reads one field of /proc/meminfo, in bytes.
func meminfo(field string) (api.ByteSize, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			break
		}
		n, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return api.ByteSize(n * 1024), nil // the kernel writes kB
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", field)
}

// pidsFree is pid_max minus the threads that exist now.
func pidsFree() (int64, error) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 0, err
	}
	max, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, err
	}
	la, err := os.ReadFile("/proc/loadavg") // "0.00 0.01 0.05 1/123 4567": running/total
	if err != nil {
		return 0, err
	}
	fs := strings.Fields(string(la))
	if len(fs) < 4 {
		return 0, fmt.Errorf("parse /proc/loadavg")
	}
	_, total, _ := strings.Cut(fs[3], "/")
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return 0, err
	}
	return max - n, nil
}

// watchPressure reads available memory and pids every interval. Below
// eviction.memory_hard (or pids_hard), or below memory_soft for
// soft_grace, it evicts one group at a time, picked by pressureVictim,
// with its grace period (hard_grace caps it for hard pressure), and waits
// for that eviction to finish before it picks another.
func (a *Agent) watchPressure(ctx context.Context) error {
	ec := a.cfg.Eviction
	t := time.NewTicker(ec.Interval.D())
	defer t.Stop()
	var softSince time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		avail, err := meminfo("MemAvailable")
		if err != nil {
			a.log.Warn("pressure monitor", "err", err)
			continue
		}
		free, _ := pidsFree()
		now := time.Now()
		var pressure string
		hard := true
		switch {
		case ec.MemoryHard > 0 && avail < ec.MemoryHard:
			pressure = fmt.Sprintf("memory available %s < eviction.memory_hard %s", avail, ec.MemoryHard)
		case ec.PidsHard > 0 && free > 0 && free < ec.PidsHard:
			pressure = fmt.Sprintf("free pids %d < eviction.pids_hard %d", free, ec.PidsHard)
		case ec.MemorySoft > 0 && avail < ec.MemorySoft:
			hard = false
			if softSince.IsZero() {
				softSince = now
			}
			if now.Sub(softSince) >= ec.SoftGrace.D() {
				pressure = fmt.Sprintf("memory available %s < eviction.memory_soft %s for %s", avail, ec.MemorySoft, ec.SoftGrace)
			}
		default:
			softSince = time.Time{}
		}
		a.mu.Lock()
		a.memAvailable, a.pressure = avail, pressure
		busy := false
		var cands []usageGroup
		for name, g := range a.groups {
			if g.adm.evicting != nil && g.adm.evicting.Reason == "NodePressure" {
				busy = true
			}
			if g.adm.admitted {
				cands = append(cands, usageGroup{admitGroup: a.admitGroupOf(name, g)})
			}
		}
		a.mu.Unlock()
		if pressure == "" || busy || len(cands) == 0 {
			if pressure == "" && busy {
				a.mu.Lock()
				a.admitLocked()
				a.mu.Unlock()
			}
			continue
		}
		for i := range cands {
			if u, ok := a.sup.Usage(ctx, cands[i].Name); ok {
				cands[i].MemoryUsage = api.ByteSize(u.MemoryBytes)
			}
		}
		victim := pressureVictim(cands)
		if victim == "" {
			continue
		}
		a.mu.Lock()
		if g, ok := a.groups[victim]; ok && g.adm.admitted {
			cause := &supervisor.StopCause{State: api.GroupEvicted, Reason: "NodePressure", Message: "evicted for node pressure: " + pressure}
			if hard && ec.HardGrace > 0 {
				d := ec.HardGrace.D()
				cause.Grace = &d
			}
			g.adm.admitted, g.adm.evicting = false, cause
			// It may come back once the pressure is gone for a while.
			g.adm.notBefore = now.Add(max(ec.SoftGrace.D(), 30*time.Second))
			a.events.Publish(api.Event{Time: now, Type: api.EventWarning, Group: victim, Reason: "NodePressure", Message: cause.Message})
			a.pushLocked(victim)
		}
		a.mu.Unlock()
	}
}
