package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// Limits of one push request: agentctl sends a long list of items in
// several requests of at most this many items and bytes.
const (
	pushBatchItems = 1000
	pushBatchBytes = 4 << 20
)

func (a *app) queueCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "queue",
		Aliases: []string{"queues"},
		Short:   "Work queues: push items, follow their progress, retry dead letters",
		Long: `Work queues are defined by a cluster group's [queue] section; their items live
in the cluster state. A container-mode queue runs the group's containers once
per item (the item at /berth/work/item, results under /berth/work/out); a
pull-mode queue hands items to the group's workers over the downward API.`,
	}
	cmd.AddCommand(a.queueListCommand(), a.queueStatusCommand(), a.queueItemsCommand(),
		a.queuePushCommand(), a.queueWaitCommand(), a.queueRetryCommand())
	return cmd
}

func (a *app) queueListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the queues of the cluster with their progress",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			qs, err := a.client().Queues(ctx)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, qs)
			}
			if len(qs) == 0 {
				fmt.Fprintln(a.stderr, "no queues (a cluster group defines one with a [queue] section)")
				return nil
			}
			return printQueues(a.stdout, qs)
		},
	}
}

func printQueues(w io.Writer, qs []api.QueueInfo) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tGROUP\tMODE\tPARALLELISM\tQUEUED\tRUNNING\tDONE\tDEAD\tTOTAL")
	for _, q := range qs {
		s := q.Status
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", q.Name, q.Group, q.Spec.Mode,
			parallelism(q.Spec), s.Queued, s.Leased, s.Done, s.Dead, s.Total)
	}
	return tw.Flush()
}

func parallelism(q api.QueueSpec) string {
	if p := q.EffectiveParallelism(); p > 0 {
		return strconv.Itoa(p)
	}
	return "-"
}

func (a *app) queueStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "status QUEUE",
		Short:             "Show a queue's definition and progress",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeQueue,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			q, err := a.client().Queue(ctx, args[0])
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, q)
			}
			return printQueueStatus(a.stdout, a.now(), q)
		},
	}
}

func printQueueStatus(w io.Writer, now time.Time, q *api.QueueInfo) error {
	s, sp := q.Status, q.Spec
	tw := newTable(w)
	row := func(k, f string, v ...any) { fmt.Fprintf(tw, k+":\t"+f+"\n", v...) }
	row("Name", "%s", q.Name)
	row("Group", "%s", q.Group)
	row("Mode", "%s", sp.Mode)
	row("Parallelism", "%s", parallelism(sp))
	row("Max attempts", "%d", sp.EffectiveMaxAttempts())
	row("Backoff", "%s (doubling up to %s)", sp.EffectiveBackoff(), sp.EffectiveMaxBackoff())
	row("Visibility timeout", "%s", sp.EffectiveVisibility())
	row("Max item size", "%s", humanBytes(int64(sp.EffectiveMaxItemSize())))
	delayed := ""
	if s.Delayed > 0 {
		delayed = fmt.Sprintf(" (%d waiting out a retry backoff)", s.Delayed)
	}
	row("Queued", "%d%s", s.Queued, delayed)
	row("Running", "%d", s.Leased)
	row("Done", "%d", s.Done)
	row("Dead", "%d", s.Dead)
	row("Total", "%d", s.Total)
	row("Failed attempts", "%d", s.FailedAttempts)
	rate := "-"
	if s.Rate > 0 {
		rate = fmt.Sprintf("%.1f/s", s.Rate)
	}
	row("Rate", "%s", rate)
	row("Last done", "%s", timeAndAge(now, s.LastDoneAt))
	return tw.Flush()
}

func (a *app) queueItemsCommand() *cobra.Command {
	var (
		state string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "items QUEUE",
		Short: "List a queue's items",
		Long: `List a queue's items by ID: state, attempts, size, where the current or last
attempt ran (NODE, WORKER), and the last error or, for a done item, the size
of its result and the node that holds its output files (under the state dir
of that node's agent: queues/QUEUE/ID/out). --state picks one state: queued,
leased, done or dead.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeQueue,
		RunE: func(cmd *cobra.Command, args []string) error {
			st := api.ItemState(state)
			if st != "" && !st.Valid() {
				return usageErrorf("invalid --state %q: use queued, leased, done or dead", state)
			}
			if limit < 0 {
				return usageErrorf("invalid --limit %d: use 0 (all) or more", limit)
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			items, err := a.listItems(ctx, args[0], st, limit)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, items)
			}
			if len(items) == 0 {
				what := "items"
				if st != "" {
					what = string(st) + " items"
				}
				fmt.Fprintf(a.stderr, "no %s in queue %s\n", what, args[0])
				return nil
			}
			return printItems(a.stdout, a.now(), items, a.output == outputWide)
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only items in this state: queued, leased, done or dead")
	cmd.Flags().IntVar(&limit, "limit", 0, "list at most this many (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(
		[]string{string(api.ItemQueued), string(api.ItemLeased), string(api.ItemDone), string(api.ItemDead)}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// listItems pages through a queue's items.
func (a *app) listItems(ctx context.Context, queue string, st api.ItemState, limit int) ([]api.QueueItem, error) {
	const page = 1000
	out := []api.QueueItem{}
	var after uint64
	for {
		n := page
		if limit > 0 {
			n = min(page, limit-len(out))
		}
		items, err := a.client().QueueItems(ctx, queue, api.ItemFilter{State: st, After: after, Limit: n})
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if len(items) < n || (limit > 0 && len(out) >= limit) {
			return out, nil
		}
		after = items[len(items)-1].ID
	}
}

func printItems(w io.Writer, now time.Time, items []api.QueueItem, wide bool) error {
	tw := newTable(w)
	head := "ID\tSTATE\tATTEMPTS\tSIZE\tNODE\tAGE\tINFO"
	if wide {
		head = "ID\tSTATE\tATTEMPTS\tSIZE\tNODE\tWORKER\tTOKEN\tAGE\tINFO"
	}
	fmt.Fprintln(tw, head)
	for _, it := range items {
		node, info := it.Node, it.LastError
		switch it.State {
		case api.ItemDone:
			node = it.DoneNode
			info = "result " + humanBytes(int64(it.ResultSize))
		case api.ItemLeased:
			info = "expires in " + shortDuration(it.LeaseExpiry.Sub(now))
		case api.ItemQueued:
			if it.NotBefore.After(now) {
				info = strings.TrimSpace("retry in " + shortDuration(it.NotBefore.Sub(now)) + "; " + it.LastError)
			}
		}
		info = firstLine(info)
		if wide {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", it.ID, it.State, it.Attempts, humanBytes(int64(it.Size)),
				orDash(node), orDash(it.Worker), tokenString(it.Token), age(now, it.EnqueuedAt), orDash(info))
		} else {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", it.ID, it.State, it.Attempts, humanBytes(int64(it.Size)),
				orDash(node), age(now, it.EnqueuedAt), orDash(truncateCell(info, 60)))
		}
	}
	return tw.Flush()
}

func tokenString(t uint64) string {
	if t == 0 {
		return "-"
	}
	return strconv.FormatUint(t, 10)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func truncateCell(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func (a *app) queuePushCommand() *cobra.Command {
	var lines bool
	cmd := &cobra.Command{
		Use:   "push QUEUE FILE...|-|DIR",
		Short: "Add items to a queue",
		Long: `Add items to QUEUE: each FILE is one item; - reads one item from stdin; a
DIR adds each regular file in it (not recursing), by name. With --lines every
non-empty line of the inputs is an item of its own. Items larger than the
queue's max_item_size are refused before anything is sent, naming the file.
Long lists are sent in requests of up to 1000 items each (each request is all
or nothing). Prints the IDs of the new items.`,
		Args: cobra.MinimumNArgs(2),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return a.completeQueue(cmd, args, toComplete)
			}
			return nil, cobra.ShellCompDirectiveDefault
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			items, err := readItems(args[1:], a.stdin, lines)
			if err != nil {
				return err
			}
			if len(items) == 0 {
				return fmt.Errorf("push %s: no items in %s: %w", args[0], strings.Join(args[1:], " "), api.ErrInvalid)
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			c := a.client()
			q, err := c.Queue(ctx, args[0])
			if err != nil {
				return err
			}
			if err := checkItemSizes(q, items); err != nil {
				return err
			}
			var ids []uint64
			for _, batch := range pushBatches(items) {
				data := make([][]byte, len(batch))
				for i, it := range batch {
					data[i] = it.data
				}
				res, err := c.Push(ctx, args[0], data)
				if err != nil {
					if len(ids) > 0 {
						return fmt.Errorf("%w (the first %d items were pushed, from %s; %s and later were not)",
							err, len(ids), items[0].source, batch[0].source)
					}
					return err
				}
				ids = append(ids, res.IDs...)
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, api.PushResponse{Queue: args[0], IDs: ids})
			}
			fmt.Fprintf(a.stdout, "pushed %s to %s: %s\n", plural(len(ids), "item"), args[0], idRanges(ids))
			return nil
		},
	}
	cmd.Flags().BoolVar(&lines, "lines", false, "every non-empty line of the inputs is one item")
	return cmd
}

// item is one item to push and where it came from.
type item struct {
	source string // "file.txt", "stdin", "file.txt:12"
	data   []byte
}

// readItems reads the push arguments: files, "-" (stdin) and directories.
func readItems(args []string, stdin io.Reader, lines bool) ([]item, error) {
	var out []item
	add := func(source string, data []byte) {
		if !lines {
			out = append(out, item{source: source, data: data})
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64<<10), int(api.MaxQueueItemSize)+1)
		for n := 1; sc.Scan(); n++ {
			if l := bytes.TrimRight(sc.Bytes(), "\r"); len(bytes.TrimSpace(l)) > 0 {
				out = append(out, item{source: fmt.Sprintf("%s:%d", source, n), data: append([]byte(nil), l...)})
			}
		}
	}
	stdinUsed := false
	for _, arg := range args {
		if arg == "-" {
			if stdinUsed {
				return nil, usageErrorf("- (stdin) given twice")
			}
			stdinUsed = true
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("read stdin: %w", err)
			}
			add("stdin", data)
			continue
		}
		fi, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			data, err := os.ReadFile(arg)
			if err != nil {
				return nil, err
			}
			add(arg, data)
			continue
		}
		ents, err := os.ReadDir(arg)
		if err != nil {
			return nil, err
		}
		for _, e := range ents { // sorted by name
			if !e.Type().IsRegular() {
				continue
			}
			p := filepath.Join(arg, e.Name())
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			add(p, data)
		}
	}
	return out, nil
}

// checkItemSizes refuses items over the queue's limit, naming them all.
func checkItemSizes(q *api.QueueInfo, items []item) error {
	limit := q.Spec.EffectiveMaxItemSize()
	var bad []string
	for _, it := range items {
		if api.ByteSize(len(it.data)) > limit {
			bad = append(bad, fmt.Sprintf("%s is %s", it.source, humanBytes(int64(len(it.data)))))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	what := "an item is"
	if len(bad) > 1 {
		what = fmt.Sprintf("%d items are", len(bad))
	}
	if len(bad) > 5 {
		bad = append(bad[:5], "…")
	}
	return fmt.Errorf("queue %s: %s larger than its max_item_size of %s (%s); nothing was pushed: store large inputs elsewhere and queue references to them, or raise max_item_size in the group's [queue] (at most %s): %w",
		q.Name, what, humanBytes(int64(limit)), strings.Join(bad, ", "), humanBytes(int64(api.MaxQueueItemSize)), api.ErrInvalid)
}

// pushBatches splits items into requests of bounded count and size.
func pushBatches(items []item) [][]item {
	var out [][]item
	start, size := 0, 0
	for i, it := range items {
		if i > start && (i-start >= pushBatchItems || size+len(it.data) > pushBatchBytes) {
			out = append(out, items[start:i])
			start, size = i, 0
		}
		size += len(it.data)
	}
	return append(out, items[start:])
}

// idRanges renders sorted IDs compactly: "1-5, 9, 11-12".
func idRanges(ids []uint64) string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	var parts []string
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.FormatUint(ids[i], 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ids[i], ids[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

func (a *app) queueRetryCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "retry QUEUE [ID...]",
		Short: "Put dead letters back into a queue",
		Long: `Put dead letters (items that used up their attempts) back into QUEUE with
their attempts reset: the items given by ID, or with --all every dead letter.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeQueue,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 1) {
				return usageErrorf("give the IDs of the items to retry, or --all")
			}
			ids := make([]uint64, 0, len(args)-1)
			for _, s := range args[1:] {
				id, err := strconv.ParseUint(s, 10, 64)
				if err != nil || id == 0 {
					return usageErrorf("invalid item ID %q: IDs are positive numbers (agentctl queue items %s --state dead lists them)", s, args[0])
				}
				ids = append(ids, id)
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			res, err := a.client().Retry(ctx, args[0], ids...)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, res)
			}
			if len(res.IDs) == 0 {
				fmt.Fprintf(a.stdout, "no dead letters in %s\n", args[0])
				return nil
			}
			fmt.Fprintf(a.stdout, "retrying %s of %s: %s\n", plural(len(res.IDs), "item"), args[0], idRanges(res.IDs))
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "retry every dead letter of the queue")
	return cmd
}

func (a *app) queueWaitCommand() *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "wait QUEUE",
		Short: "Follow a queue's progress until no item is left to do",
		Long: `Follow QUEUE until no item is queued or running, showing done, running and
failed items, the rate and the time left. On a terminal the progress line is
updated in place; otherwise a line is printed every --interval. Exits 0 when
every item is done, 1 when dead letters are left (agentctl queue items QUEUE
--state dead lists them). --timeout bounds the wait.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeQueue,
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return usageErrorf("invalid --interval %s: use a positive duration", interval)
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			return a.waitQueue(ctx, args[0], interval)
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "without a terminal, print progress this often")
	return cmd
}

// waitQueue polls the queue until nothing is queued or running.
func (a *app) waitQueue(ctx context.Context, name string, interval time.Duration) error {
	tty := a.isTerminal(a.stdout) && a.output != outputJSON
	poll := interval
	if tty {
		poll = 250 * time.Millisecond
	}
	var (
		p       progress
		printed bool
	)
	for {
		q, err := a.client().Queue(ctx, name)
		if err != nil {
			if tty && printed {
				fmt.Fprintln(a.stdout)
			}
			return err
		}
		now := a.now()
		p.observe(now, q.Status)
		finished := q.Status.Queued == 0 && q.Status.Leased == 0
		switch {
		case a.output == outputJSON:
			if finished {
				if err := printJSON(a.stdout, q); err != nil {
					return err
				}
			}
		case tty:
			fmt.Fprintf(a.stdout, "\r\033[K%s", p.line(now))
			printed = true
			if finished {
				fmt.Fprintln(a.stdout)
			}
		default:
			fmt.Fprintln(a.stdout, p.line(now))
		}
		if finished {
			if q.Status.Dead > 0 {
				return fmt.Errorf("queue %s: %s of %d failed for good (dead letters): agentctl queue items %s --state dead lists them, agentctl queue retry %s --all tries them again",
					name, plural(q.Status.Dead, "item"), q.Status.Total, name, name)
			}
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			if tty && printed {
				fmt.Fprintln(a.stdout)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// progress turns successive queue statuses into a progress line: counts,
// a rate over the last minute of observations, and the time left.
type progress struct {
	st      api.QueueStatus
	samples []sample // (time, done) over the last rateWindow
}

type sample struct {
	at   time.Time
	done int
}

const rateWindow = 30 * time.Second

func (p *progress) observe(now time.Time, st api.QueueStatus) {
	p.st = st
	p.samples = append(p.samples, sample{now, st.Done + st.Dead})
	for len(p.samples) > 2 && now.Sub(p.samples[0].at) > rateWindow {
		p.samples = p.samples[1:]
	}
}

// rate is items finished (done or dead) per second: measured here once
// two observations are a second apart, else the agent's own figure.
func (p *progress) rate() float64 {
	if n := len(p.samples); n >= 2 {
		first, last := p.samples[0], p.samples[n-1]
		if d := last.at.Sub(first.at); d >= time.Second && last.done >= first.done {
			return float64(last.done-first.done) / d.Seconds()
		}
	}
	return p.st.Rate
}

func (p *progress) line(now time.Time) string {
	st := p.st
	finished := st.Done + st.Dead
	var b strings.Builder
	if st.Total > 0 {
		const width = 20
		n := finished * width / st.Total
		fmt.Fprintf(&b, "[%s%s] ", strings.Repeat("#", n), strings.Repeat(".", width-n))
	}
	fmt.Fprintf(&b, "done %d/%d  running %d  queued %d  failed %d  dead %d", st.Done, st.Total, st.Leased, st.Queued, st.FailedAttempts, st.Dead)
	left := st.Queued + st.Leased
	if r := p.rate(); r > 0 {
		fmt.Fprintf(&b, "  rate %.1f/s", r)
		if left > 0 {
			fmt.Fprintf(&b, "  ETA %s", (time.Duration(float64(left) / r * float64(time.Second))).Round(time.Second))
		}
	} else {
		b.WriteString("  rate -")
		if left > 0 {
			b.WriteString("  ETA -")
		}
	}
	return b.String()
}

// completeQueue completes the QUEUE argument.
func (a *app) completeQueue(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	qs, err := a.client().Queues(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	var out []string
	for _, q := range qs {
		if strings.HasPrefix(q.Name, toComplete) {
			out = append(out, q.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
