package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) deleteCommand() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "delete GROUP...",
		Short: "Stop groups and remove them",
		Long: `Stop groups and remove them with their containers and volumes.

Waits until each group is gone unless --wait=false.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeGroups,
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			c := a.client()
			return a.forEach(names, func(name string) error {
				if err := c.Delete(ctx, name, wait); err != nil {
					return err
				}
				if wait {
					fmt.Fprintf(a.stdout, "group/%s deleted\n", name)
				} else {
					fmt.Fprintf(a.stdout, "group/%s deleting\n", name)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until each group is gone")
	return cmd
}
