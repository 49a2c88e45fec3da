package supervisor

import (
	"context"

	"github.com/berth-project/berth/api"
)

// Usage sums the resource usage of a group's running containers. It
// returns false when the runtime cannot measure usage or the group is
// unknown.
func (s *Supervisor) Usage(ctx context.Context, name string) (Usage, bool) {
	u, ok := s.cfg.Runtime.(usager)
	if !ok {
		return Usage{}, false
	}
	st, found := s.Status(name)
	if !found {
		return Usage{}, false
	}
	var sum Usage
	for _, c := range st.Containers {
		if c.State != api.ContainerRunning {
			continue
		}
		cu, err := u.Usage(ctx, c.ID)
		if err != nil {
			continue
		}
		sum.CPUNanos += cu.CPUNanos
		sum.MemoryBytes += cu.MemoryBytes
		sum.MemoryLimit += cu.MemoryLimit
		sum.Pids += cu.Pids
		sum.At = cu.At
	}
	return sum, true
}

// usager is implemented by runtimes that measure containers.
type usager interface {
	Usage(ctx context.Context, id string) (Usage, error)
}
