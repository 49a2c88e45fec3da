package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) startCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "start GROUP...",
		Short:             "Start stopped groups",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeGroups,
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			c := a.client()
			return a.forEach(names, func(name string) error {
				if err := c.Start(ctx, name); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "group/%s started\n", name)
				return nil
			})
		},
	}
}
