package supervisor

import (
	"context"

	"github.com/berth-project/berth/api"
)

// ContainerUsage returns the resource usage of each running container of
// a group, by container name. Containers that are not running, or whose
// usage cannot be read (the task just exited, ctx ended), are left out.
// It returns nil when the runtime cannot measure usage or the group is
// unknown. It makes one runtime call per running container, in turn:
// bound it with ctx.
func (s *Supervisor) ContainerUsage(ctx context.Context, group string) map[string]Usage {
	u, ok := s.cfg.Runtime.(usager)
	if !ok {
		return nil
	}
	st, found := s.Status(group)
	if !found {
		return nil
	}
	out := make(map[string]Usage, len(st.Containers))
	for _, c := range st.Containers {
		if c.State != api.ContainerRunning {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		cu, err := u.Usage(ctx, c.ID)
		if err != nil {
			continue
		}
		out[c.Name] = cu
	}
	return out
}
