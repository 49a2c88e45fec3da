//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	cgroup1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/typeurl/v2"
)

// noMemoryLimit is the smallest limit read as "no limit". An unlimited
// cgroup reports the largest page-aligned int64 (v1) or MaxUint64 (v2);
// no machine has 4 EiB of memory.
const noMemoryLimit = 1 << 62

// Usage reads the resource use of container id's task from its cgroup,
// through containerd's task metrics. It returns api.ErrNotFound when the
// container or its task does not exist.
//
// The metrics payload is decoded by its type URL: cgroup v1
// (io.containerd.cgroups.v1.Metrics) or cgroup v2
// (io.containerd.cgroups.v2.Metrics), as the shim reports them; the
// packages imported here register both with typeurl.
func (r *containerdRuntime) Usage(ctx context.Context, id string) (Usage, error) {
	nctx := r.ns(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w", id, convertErr(err))
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: task: %w", id, convertErr(err))
	}
	m, err := task.Metrics(nctx)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: metrics: %w", id, convertErr(err))
	}
	u, err := usageFromMetric(m)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w", id, err)
	}
	return u, nil
}

// usageFromMetric decodes a task metric of either cgroup version.
func usageFromMetric(m *types.Metric) (Usage, error) {
	if m.GetData() == nil {
		return Usage{}, errors.New("metrics carry no data")
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return Usage{}, fmt.Errorf("decode metrics: %w", err)
	}
	var u Usage
	switch s := v.(type) {
	case *cgroup1.Metrics:
		u = usageFromCgroup1(s)
	case *cgroup2.Metrics:
		u = usageFromCgroup2(s)
	default:
		return Usage{}, fmt.Errorf("metrics of type %s: not cgroup v1 or v2 metrics", m.Data.GetTypeUrl())
	}
	u.At = time.Now()
	if ts := m.GetTimestamp(); ts != nil {
		u.At = ts.AsTime()
	}
	return u, nil
}

// usageFromCgroup1 reads a cgroup v1 sample. The working set subtracts
// total_inactive_file (hierarchical, as the usage is).
func usageFromCgroup1(s *cgroup1.Metrics) Usage {
	mem := s.GetMemory()
	return Usage{
		CPUNanos:    s.GetCPU().GetUsage().GetTotal(),
		MemoryBytes: workingSet(mem.GetUsage().GetUsage(), mem.GetTotalInactiveFile()),
		MemoryLimit: memoryLimit(mem.GetUsage().GetLimit()),
		Pids:        s.GetPids().GetCurrent(),
	}
}

// usageFromCgroup2 reads a cgroup v2 sample (CPU time in microseconds).
func usageFromCgroup2(s *cgroup2.Metrics) Usage {
	mem := s.GetMemory()
	return Usage{
		CPUNanos:    s.GetCPU().GetUsageUsec() * 1000,
		MemoryBytes: workingSet(mem.GetUsage(), mem.GetInactiveFile()),
		MemoryLimit: memoryLimit(mem.GetUsageLimit()),
		Pids:        s.GetPids().GetCurrent(),
	}
}

// workingSet is usage minus inactive file cache, floored at 0.
func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile >= usage {
		return 0
	}
	return usage - inactiveFile
}

func memoryLimit(limit uint64) uint64 {
	if limit >= noMemoryLimit {
		return 0
	}
	return limit
}
