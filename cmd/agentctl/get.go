package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) getCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get [GROUP...]",
		Short: "List groups and their state",
		Long: `List groups: NAME STATE READY RESTARTS AGE, where READY is ready
containers / containers, init containers not counted. A group in BackOff
shows the time left until its next restart: "BackOff (3s)". -o wide adds
ADDRESS PORTS GENERATION SOURCE REASON AFTER REQUEST, where ADDRESS is
the group's address on the node bridge ("host" or "none" for those network
modes), PORTS its published ports ("8080->80/tcp") and REQUEST what
admission counts for the group ("cpu 500m, mem 256MiB"); ADDRESS and PORTS
are left out when no group reports its network (an agent without
networking). -o json prints the full objects (one object when one GROUP is
named, else a list).`,
		ValidArgsFunction: a.completeGroups,
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			c := a.client()
			var (
				groups []api.GroupStatus
				err    error
			)
			if len(names) == 0 {
				groups, err = c.List(ctx)
				if err != nil {
					return err
				}
				sort.Slice(groups, func(i, j int) bool { return groups[i].Name < groups[j].Name })
				if a.output == outputWide {
					// AFTER is in the spec, which List leaves out.
					if groups, err = fetchSpecs(ctx, c, groups); err != nil {
						return err
					}
				}
			} else {
				err = a.forEach(names, func(name string) error {
					g, err := c.Get(ctx, name)
					if err == nil {
						groups = append(groups, *g)
					}
					return err
				})
			}
			if perr := a.printGroups(groups, len(names) == 1); perr != nil {
				return perr
			}
			if len(names) == 0 && a.output != outputJSON {
				// Cluster groups follow, with their allocations per node.
				cgs, cerr := c.ClusterGroups(ctx)
				if cerr == nil && len(cgs) > 0 {
					fmt.Fprintln(a.stdout)
					if perr := printClusterGroups(a.stdout, cgs, a.output == outputWide); perr != nil {
						return perr
					}
				}
			}
			return err
		},
	}
}

// fetchSpecs fills in the spec of every listed group, which List leaves
// out. A group deleted since it was listed is left out.
func fetchSpecs(ctx context.Context, c *api.Client, groups []api.GroupStatus) ([]api.GroupStatus, error) {
	out := groups[:0]
	for _, g := range groups {
		if g.Spec == nil {
			full, err := c.Get(ctx, g.Name)
			switch {
			case errors.Is(err, api.ErrNotFound):
				continue
			case err != nil:
				return nil, err
			}
			g.Spec = full.Spec
		}
		out = append(out, g)
	}
	return out, nil
}

// printGroups prints groups in the -o format; single prints one JSON
// object instead of a list.
func (a *app) printGroups(groups []api.GroupStatus, single bool) error {
	if a.output == outputJSON {
		if single {
			if len(groups) == 0 {
				return nil
			}
			return printJSON(a.stdout, groups[0])
		}
		if groups == nil {
			groups = []api.GroupStatus{}
		}
		return printJSON(a.stdout, groups)
	}
	if len(groups) == 0 {
		if !single {
			fmt.Fprintln(a.stderr, "no groups")
		}
		return nil
	}
	wide := a.output == outputWide
	network := wide && slices.ContainsFunc(groups, func(g api.GroupStatus) bool { return g.Network != nil })
	now := a.now()
	tw := newTable(a.stdout)
	fmt.Fprint(tw, "NAME\tSTATE\tREADY\tRESTARTS\tAGE")
	if network {
		fmt.Fprint(tw, "\tADDRESS\tPORTS")
	}
	if wide {
		fmt.Fprint(tw, "\tGENERATION\tSOURCE\tREASON\tAFTER\tREQUEST")
	}
	fmt.Fprintln(tw)
	for _, g := range groups {
		ready, total := readyCount(&g)
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s", g.Name, groupState(&g, now), ready, total, g.Restarts, age(now, g.CreatedAt))
		if network {
			address, ports := networkCells(g.Network)
			fmt.Fprintf(tw, "\t%s\t%s", address, ports)
		}
		if wide {
			var after []string
			if g.Spec != nil {
				after = g.Spec.After
			}
			fmt.Fprintf(tw, "\t%d\t%s\t%s\t%s\t%s", g.Generation, orDash(g.Source), orDash(g.Reason), orDash(strings.Join(after, ",")),
				describeRequest(groupRequest(&g)))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// networkCells are the ADDRESS and PORTS cells: the group's address on
// the node bridge, or its network mode when it has none ("host", "none");
// its published ports, "8080->80/tcp,127.0.0.1:53->53/udp". "-" for what
// the agent does not report (a group not started yet).
func networkCells(n *api.NetworkStatus) (address, ports string) {
	if n == nil {
		return "-", "-"
	}
	address = n.Address
	if address == "" {
		address = string(n.Mode)
	}
	ps := make([]string, len(n.Ports))
	for i, p := range n.Ports {
		ps[i] = p.String()
	}
	return orDash(address), orDash(strings.Join(ps, ","))
}

// groupState is the STATE cell: the state, and for a group in BackOff
// the time left until its next restart, "BackOff (3s)".
func groupState(g *api.GroupStatus, now time.Time) string {
	if g.State == api.GroupBackOff && !g.NextRestart.IsZero() {
		return fmt.Sprintf("%s (%s)", g.State, countdown(now, g.NextRestart))
	}
	return string(g.State)
}

// countdown renders the time from now until t in whole seconds: "3s",
// "1m30s"; "0s" once t has passed.
func countdown(now, t time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d < 0 {
		d = 0 // overdue, or clock skew between agentd and here
	}
	return d.String()
}

// readyCount counts the ready containers of g and the containers that
// count towards readiness: all but init containers, which run to
// completion and are never ready.
func readyCount(g *api.GroupStatus) (ready, total int) {
	for i := range g.Containers {
		c := &g.Containers[i]
		if containerRole(g, c) == api.RoleInit {
			continue
		}
		total++
		if c.Ready {
			ready++
		}
	}
	return ready, total
}

// containerRole is the role of a container as its status reports it, else
// as its spec (when there is one) has it; main when neither says.
func containerRole(g *api.GroupStatus, c *api.ContainerStatus) api.Role {
	if c.Role != "" {
		return c.Role
	}
	if g.Spec != nil {
		if s, ok := g.Spec.Container(c.Name); ok {
			return s.EffectiveRole()
		}
	}
	return api.RoleMain
}
