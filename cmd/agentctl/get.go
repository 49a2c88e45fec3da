package main

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) getCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get [GROUP...]",
		Short: "List groups and their state",
		Long: `List groups: NAME STATE READY RESTARTS AGE, where READY is running
containers / all containers. -o wide adds GENERATION SOURCE REASON; -o json
prints the full objects (one object when one GROUP is named, else a list).`,
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
			return err
		},
	}
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
	now := a.now()
	tw := newTable(a.stdout)
	fmt.Fprint(tw, "NAME\tSTATE\tREADY\tRESTARTS\tAGE")
	if wide {
		fmt.Fprint(tw, "\tGENERATION\tSOURCE\tREASON")
	}
	fmt.Fprintln(tw)
	for _, g := range groups {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s", g.Name, g.State, g.Running(), len(g.Containers), g.Restarts, age(now, g.CreatedAt))
		if wide {
			fmt.Fprintf(tw, "\t%d\t%s\t%s", g.Generation, orDash(g.Source), orDash(g.Reason))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
