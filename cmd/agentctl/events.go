package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) eventsCommand() *cobra.Command {
	var (
		follow bool
		group  string
	)
	cmd := &cobra.Command{
		Use:   "events [-f] [--group GROUP]",
		Short: "Print recent events, oldest first",
		Long: `Print recent events, oldest first, as a table: AGE TYPE REASON GROUP
CONTAINER MESSAGE. -f keeps printing new events until interrupted.
-o json prints one JSON object a line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := cmd.Context(), context.CancelFunc(func() {})
			if !follow {
				ctx, cancel = a.requestContext(ctx)
			}
			defer cancel()

			var emit func(api.Event) error
			var flush func() error
			switch {
			case a.output == outputJSON:
				emit = func(e api.Event) error {
					b, err := json.Marshal(e)
					if err == nil {
						_, err = fmt.Fprintf(a.stdout, "%s\n", b)
					}
					return err
				}
				flush = func() error { return nil }
			case follow:
				// Rows print as they come, so columns cannot be measured
				// first: pad them to fixed widths instead.
				fmt.Fprintf(a.stdout, followRow, "AGE", "TYPE", "REASON", "GROUP", "CONTAINER", "MESSAGE")
				emit = func(e api.Event) error {
					_, err := fmt.Fprintf(a.stdout, followRow, eventCells(e, a.now())...)
					return err
				}
				flush = func() error { return nil }
			default:
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "AGE\tTYPE\tREASON\tGROUP\tCONTAINER\tMESSAGE")
				rows := 0
				emit = func(e api.Event) error {
					rows++
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", eventCells(e, a.now())...)
					return nil
				}
				flush = func() error {
					if rows == 0 {
						fmt.Fprintln(a.stderr, "no events")
						return nil
					}
					return tw.Flush()
				}
			}
			err := a.client().Events(ctx, api.EventOptions{Group: group, Follow: follow}, emit)
			if err == nil {
				err = flush()
			}
			if follow && errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
				return nil // interrupted: the normal end of -f
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().StringVar(&group, "group", "", "only events of this group")
	_ = cmd.RegisterFlagCompletionFunc("group", a.completeOneGroup)
	return cmd
}

// followRow is one row of the streamed events table.
const followRow = "%-5s  %-7s  %-18s  %-16s  %-12s  %s\n"

func eventCells(e api.Event, now time.Time) []any {
	return []any{age(now, e.Time), e.Type, e.Reason, orDash(e.Group), orDash(e.Container), oneLine(e.Message)}
}
