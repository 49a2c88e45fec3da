package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) topCommand() *cobra.Command {
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the CPU, memory and pids every running container uses now",
		Long: `Show what every running container uses now: CPU in cores over a short
sampling window (1.00 = one core), memory working set (and its limit),
and pids. --watch 2s refreshes until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for {
				ctx, cancel := a.requestContext(cmd.Context())
				us, err := a.client().Top(ctx)
				cancel()
				if err != nil {
					return err
				}
				if a.output == outputJSON {
					if err := printJSON(a.stdout, us); err != nil {
						return err
					}
				} else {
					if watch > 0 {
						fmt.Fprint(a.stdout, "\033[H\033[2J") // clear the screen
					}
					if err := printTop(a.stdout, us); err != nil {
						return err
					}
				}
				if watch <= 0 {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
			}
		},
	}
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "refresh this often until interrupted, e.g. 2s")
	return cmd
}

func printTop(w io.Writer, us []api.ContainerUsage) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "GROUP\tCONTAINER\tCPU\tMEMORY\tLIMIT\tPIDS")
	for _, u := range us {
		limit := "-"
		if u.MemoryLimit > 0 {
			limit = shortBytes(u.MemoryLimit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%d\n", u.Group, u.Container, u.CPU, shortBytes(u.Memory), limit, u.Pids)
	}
	return tw.Flush()
}
