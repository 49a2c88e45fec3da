package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) logsCommand() *cobra.Command {
	var (
		follow     bool
		tail       int
		since      string
		timestamps bool
	)
	cmd := &cobra.Command{
		Use:   "logs GROUP[/CONTAINER]",
		Short: "Print the output of a group's containers",
		Long: `Print the output of a group's containers: stdout lines to stdout, stderr
lines to stderr. Without CONTAINER, when the group has several containers,
each line starts with [container]. -o json prints one JSON object a line.`,
		Example: `  agentctl logs web
  agentctl logs web/app -f --tail 100
  agentctl logs web --since 10m --timestamps`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeGroupContainer,
		RunE: func(cmd *cobra.Command, args []string) error {
			group, container, _ := strings.Cut(args[0], "/")
			if group == "" {
				return usageErrorf("invalid %q: want GROUP or GROUP/CONTAINER", args[0])
			}
			if tail < -1 {
				return usageErrorf("invalid --tail %d: use a number of lines, or -1 for all", tail)
			}
			if err := checkSince(since); err != nil {
				return err
			}
			prefix := false
			if container == "" && a.output != outputJSON {
				ctx, cancel := a.requestContext(cmd.Context())
				g, err := a.client().Get(ctx, group)
				cancel()
				if err != nil {
					return err
				}
				prefix = len(containerNames(g)) > 1
			}
			ctx, cancel := cmd.Context(), context.CancelFunc(func() {})
			if !follow {
				ctx, cancel = a.requestContext(ctx)
			}
			defer cancel()
			opts := api.LogOptions{Container: container, Follow: follow, Tail: tail, Since: since}
			err := a.client().Logs(ctx, group, opts, func(e api.LogEntry) error {
				return a.printLogEntry(e, prefix, timestamps)
			})
			if follow && errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
				return nil // interrupted: the normal end of -f
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	f.IntVar(&tail, "tail", -1, "print only the last N lines of the past (-1: all)")
	f.StringVar(&since, "since", "", `only lines newer than a duration ("10m") or an RFC 3339 time`)
	f.BoolVar(&timestamps, "timestamps", false, "start each line with its RFC 3339 time")
	return cmd
}

// checkSince accepts what the API accepts for since: a positive duration
// or an RFC 3339 time.
func checkSince(since string) error {
	if since == "" {
		return nil
	}
	if d, err := time.ParseDuration(since); err == nil && d > 0 {
		return nil
	}
	if _, err := time.Parse(time.RFC3339, since); err == nil {
		return nil
	}
	return usageErrorf(`invalid --since %q: use a duration like "10m" or an RFC 3339 time like "2024-05-01T10:00:00Z"`, since)
}

func (a *app) printLogEntry(e api.LogEntry, prefix, timestamps bool) error {
	if a.output == outputJSON {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	var b strings.Builder
	if prefix && e.Container != "" {
		b.WriteString("[" + e.Container + "] ")
	}
	if timestamps {
		b.WriteString(e.Time.Format(time.RFC3339Nano) + " ")
	}
	b.WriteString(e.Line)
	b.WriteByte('\n')
	w := a.stdout
	if e.Stream == "stderr" {
		w = a.stderr
	}
	_, err := fmt.Fprint(w, b.String())
	return err
}
