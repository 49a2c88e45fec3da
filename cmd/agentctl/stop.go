package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) stopCommand() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "stop GROUP...",
		Short: "Stop groups and keep their definitions",
		Long: `Stop groups: run their stop sequence and keep their definitions, so
"agentctl start" can start them again.

Waits until each group is stopped unless --wait=false.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeGroups,
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			c := a.client()
			return a.forEach(names, func(name string) error {
				if err := c.Stop(ctx, name, wait); err != nil {
					return err
				}
				if wait {
					fmt.Fprintf(a.stdout, "group/%s stopped\n", name)
				} else {
					fmt.Fprintf(a.stdout, "group/%s stopping\n", name)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until each group is stopped")
	return cmd
}
