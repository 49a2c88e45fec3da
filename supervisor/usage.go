package supervisor

import "time"

// Usage is a point-in-time sample of a container's resource use, read
// from its task's cgroup (cgroup v1 or v2, whichever the node runs).
//
// CPUNanos is cumulative since the task started: a rate is the difference
// of two samples divided by the difference of their At. The other fields
// are instantaneous.
type Usage struct {
	// CPUNanos is the CPU time (user and system) the task's processes
	// have used, in nanoseconds.
	CPUNanos uint64
	// MemoryBytes is the working set: memory in use minus the inactive
	// file cache the kernel can drop without the workload noticing, as
	// the kubelet counts it for eviction. Never negative.
	MemoryBytes uint64
	// MemoryLimit is the cgroup's memory limit in bytes; 0 when the
	// container has none.
	MemoryLimit uint64
	// Pids is the number of processes and threads in the cgroup.
	Pids uint64
	// At is when containerd read the cgroup.
	At time.Time
}
