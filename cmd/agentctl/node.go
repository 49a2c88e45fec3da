package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) nodeCommand() *cobra.Command {
	cmd := a.nodeShowCommand()
	cmd.AddCommand(a.nodeDrainCommand(), a.nodeUndrainCommand())
	return cmd
}

func (a *app) nodeDrainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "drain [NAME]",
		Short: "Stop every group, lowest priority first, and keep them stopped",
		Long: `Without NAME: stop every group of this node gracefully, in reverse
priority order: the lowest priority level first, each group with its
pre_stop hooks and grace period, the next level once it has stopped. The
node stays drained, across agent restarts too, until 'agentctl node
undrain'. Waits until every group has stopped.

With NAME (a cluster member): the scheduler moves the node's cluster
allocations to other nodes and places nothing new there, until 'agentctl
node undrain NAME'. Waits until no allocation is left on it; local groups of
that node are not touched (drain them there without NAME).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			if len(args) == 1 {
				m, err := a.client().DrainNode(ctx, args[0], true)
				if err != nil {
					return err
				}
				if err := a.waitDrained(ctx, m.Name); err != nil {
					return err
				}
				if a.output == outputJSON {
					return printJSON(a.stdout, m)
				}
				fmt.Fprintf(a.stdout, "node/%s drained: its allocations run elsewhere\n", m.Name)
				return nil
			}
			n, err := a.client().Drain(ctx)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, n)
			}
			fmt.Fprintf(a.stdout, "node/%s drained\n", n.Name)
			return nil
		},
	}
}

func (a *app) nodeUndrainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "undrain [NAME]",
		Short: "Let the groups of a drained node run again",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			if len(args) == 1 {
				m, err := a.client().DrainNode(ctx, args[0], false)
				if err != nil {
					return err
				}
				if a.output == outputJSON {
					return printJSON(a.stdout, m)
				}
				fmt.Fprintf(a.stdout, "node/%s undrained: the scheduler may place allocations there again\n", m.Name)
				return nil
			}
			n, err := a.client().Undrain(ctx)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, n)
			}
			fmt.Fprintf(a.stdout, "node/%s undrained\n", n.Name)
			return nil
		},
	}
}

func (a *app) nodeShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "node",
		Short: "Show the node's capacity and what the groups use of it",
		Long: `Show the node: what groups may ask in all (ALLOCATABLE), what the
admitted groups ask (ALLOCATED) and the difference (FREE), for cpu, memory
and pids; the memory the kernel reports available and the eviction
threshold crossed, if any; and how many groups are admitted, pending and
evicted. -o json prints the node status as agentd returns it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			n, err := a.client().Node(ctx)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, n)
			}
			return printNode(a.stdout, n)
		},
	}
}

// printNode writes n as a readable block: the name, the table of
// resources, then memory pressure and the group counts.
func printNode(w io.Writer, n *api.NodeStatus) error {
	fmt.Fprintf(w, "Name:  %s\n\n", orDash(n.Name))

	tw := newTable(w)
	fmt.Fprintln(tw, "RESOURCE\tALLOCATABLE\tALLOCATED\tFREE")
	fmt.Fprintf(tw, "cpu\t%s\t%s\t%s\n", n.Allocatable.CPU, n.Allocated.CPU, n.Free.CPU)
	fmt.Fprintf(tw, "memory\t%s\t%s\t%s\n", shortBytes(n.Allocatable.Memory), shortBytes(n.Allocated.Memory), shortBytes(n.Free.Memory))
	fmt.Fprintf(tw, "pids\t%d\t%d\t%d\n", n.Allocatable.Pids, n.Allocated.Pids, n.Free.Pids)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)

	fmt.Fprintf(tw, "Memory available:\t%s\n", shortBytes(n.MemoryAvailable))
	if n.Pressure != "" {
		fmt.Fprintf(tw, "Pressure:\t%s\n", n.Pressure)
	}
	if n.Drained {
		fmt.Fprintf(tw, "Drained:\tyes (agentctl node undrain lets groups run again)\n")
	}
	fmt.Fprintf(tw, "Groups:\t%d admitted, %d pending, %d evicted\n", n.Admitted, n.Pending, n.Evicted)
	return tw.Flush()
}

// describeRequest renders what a group asks of the node for the REQUEST
// column: "cpu 500m, mem 256MiB", or "-" when it asks nothing.
func describeRequest(r api.Resources) string {
	if r.CPU == 0 && r.Memory == 0 {
		return "-"
	}
	return "cpu " + r.CPU.String() + ", mem " + shortBytes(r.Memory)
}

// groupRequest is what admission counts for g: as agentd reports it, or
// computed from the spec when agentd reports none (an older agentd).
func groupRequest(g *api.GroupStatus) api.Resources {
	if g.Request == (api.Resources{}) && g.Spec != nil {
		return g.Spec.Request()
	}
	return g.Request
}

// shortBytes renders an amount of memory compactly in binary units:
// exactly when the largest unit divides it ("256MiB"), else to one
// decimal ("7.5GiB"); below 1KiB in bytes ("512B"). A negative amount
// (more allocated than allocatable) keeps its sign.
func shortBytes(b api.ByteSize) string {
	if b < 0 {
		return "-" + shortBytesOf(uint64(-int64(b)))
	}
	return shortBytesOf(uint64(b))
}

func shortBytesOf(n uint64) string {
	for _, u := range []struct {
		s string
		n uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n < u.n {
			continue
		}
		if n%u.n == 0 {
			return strconv.FormatUint(n/u.n, 10) + u.s
		}
		return strconv.FormatFloat(float64(n)/float64(u.n), 'f', 1, 64) + u.s
	}
	return strconv.FormatUint(n, 10) + "B"
}
