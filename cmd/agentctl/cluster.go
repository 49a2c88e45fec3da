package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// The cluster nouns: members, raft, shards, scale; `node drain NAME` is in
// node.go and cluster groups in `get` come from printClusterGroups.

func (a *app) clusterCommands() []*cobra.Command {
	return []*cobra.Command{a.membersCommand(), a.raftCommand(), a.shardsCommand(), a.scaleCommand()}
}

func (a *app) membersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the agents of the cluster",
		Long: `List the agents of the cluster as the Raft state records them: gossip
status (alive, suspect, dead, left), whether the agent votes in Raft
(voter), follows (nonvoter) or is not in the configuration yet, which one
leads, whether it is drained, and how many allocations it runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			ms, err := a.client().Members(ctx)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, ms)
			}
			return printMembers(a.stdout, ms, a.output == outputWide)
		},
	}
}

func printMembers(w io.Writer, ms []api.Member, wide bool) error {
	tw := newTable(w)
	head := "NAME\tSTATUS\tRAFT\tALLOCATIONS\tAPI"
	if wide {
		head += "\tRAFT ADDRESS\tGOSSIP\tLABELS\tVERSION"
	}
	fmt.Fprintln(tw, head)
	for _, m := range ms {
		status := m.Status
		if m.Drain {
			status += ",drain"
		}
		role := orDash(m.Suffrage)
		if m.Leader {
			role += " (leader)"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%d\t%s", m.Name, status, role, m.Allocations, orDash(m.APIAddr))
		if wide {
			line += fmt.Sprintf("\t%s\t%s\t%s\t%s", orDash(m.RaftAddr), orDash(m.Addr), orDash(strings.Join(api.SortedLabels(m.Labels), ",")), orDash(m.Version))
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

func (a *app) raftCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "raft",
		Short: "Show Raft: peers, leader, term and indexes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			info, err := a.client().Raft(ctx)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, info)
			}
			return printRaft(a.stdout, info)
		},
	}
}

func printRaft(w io.Writer, r *api.RaftInfo) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "Node:\t%s (%s)\n", r.Node, strings.ToLower(r.State))
	fmt.Fprintf(tw, "Leader:\t%s\n", orDash(strings.TrimSpace(r.Leader+" "+bracket(r.LeaderAddr))))
	fmt.Fprintf(tw, "Term:\t%d\n", r.Term)
	fmt.Fprintf(tw, "Last index:\t%d (commit %d, applied %d, snapshot %d)\n", r.LastIndex, r.CommitIndex, r.AppliedIndex, r.LastSnapshotIndex)
	if !r.LastContact.IsZero() {
		fmt.Fprintf(tw, "Last contact:\t%s ago\n", time.Since(r.LastContact).Round(time.Millisecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "PEER\tADDRESS\tSUFFRAGE\tLEADER")
	for _, p := range r.Peers {
		leader := ""
		if p.Leader {
			leader = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.ID, p.Address, p.Suffrage, orDash(leader))
	}
	return tw.Flush()
}

func bracket(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}

func (a *app) shardsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "shards GROUP",
		Short: "Show the shard map of a sharded cluster group",
		Long: `Show, for every shard of a sharded cluster group, the nodes that hold its
replicas, with each replica's status and readiness.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			g, err := a.client().ClusterGroup(ctx, args[0])
			if err != nil {
				return err
			}
			if g.Shards == 0 {
				return fmt.Errorf("cluster group %q is not sharded (it has %d replicas): %w", g.Name, g.Replicas, api.ErrInvalid)
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, shardMap(g))
			}
			return printShards(a.stdout, g)
		},
	}
}

// shardEntry is one shard in `shards -o json`.
type shardEntry struct {
	Shard    int              `json:"shard"`
	Replicas int              `json:"replicas"`
	Nodes    []string         `json:"nodes"`
	Allocs   []api.Allocation `json:"allocations"`
}

func shardMap(g *api.ClusterGroup) []shardEntry {
	out := make([]shardEntry, g.Shards)
	for k := range out {
		out[k] = shardEntry{Shard: k, Replicas: g.ShardReplicas[k], Nodes: []string{}, Allocs: []api.Allocation{}}
	}
	for _, al := range g.Allocations {
		if al.Shard < 0 || al.Shard >= len(out) {
			continue
		}
		out[al.Shard].Allocs = append(out[al.Shard].Allocs, al)
		if al.Node != "" {
			out[al.Shard].Nodes = append(out[al.Shard].Nodes, al.Node)
		}
	}
	for k := range out {
		sort.Strings(out[k].Nodes)
	}
	return out
}

func printShards(w io.Writer, g *api.ClusterGroup) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "SHARD\tREPLICAS\tNODES")
	load := map[string]int{}
	for _, s := range shardMap(g) {
		var nodes []string
		for _, al := range s.Allocs {
			n := "(unplaced)"
			if al.Node != "" {
				n = al.Node
				load[al.Node]++
			}
			if !al.Ready {
				n += "*"
			}
			nodes = append(nodes, n)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\n", s.Shard, s.Replicas, orDash(strings.Join(nodes, ", ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	names := make([]string, 0, len(load))
	for n := range load {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.Itoa(load[n])
	}
	fmt.Fprintf(w, "\n* not ready.  Load: %s\n", orDash(strings.Join(parts, " ")))
	return nil
}

func (a *app) scaleCommand() *cobra.Command {
	var replicas, shard int
	cmd := &cobra.Command{
		Use:   "scale GROUP --replicas N [--shard K]",
		Short: "Change a cluster group's replica count, or one shard's",
		Long: `Change how many replicas of a cluster group run, overriding the file's
replicas; or, with --shard K, how many replicas of shard K of a sharded
group run (a hot shard). --replicas 0 removes the override.`,
		Example: `  agentctl scale web --replicas 5
  agentctl scale kv --shard 3 --replicas 4`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("replicas") {
				return usageErrorf("scale needs --replicas N")
			}
			req := api.ScaleRequest{Replicas: replicas}
			if cmd.Flags().Changed("shard") {
				req.Shard = &shard
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			g, err := a.client().Scale(ctx, args[0], req)
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, g)
			}
			if req.Shard != nil {
				fmt.Fprintf(a.stdout, "group/%s shard %d scaled to %d replicas\n", g.Name, shard, g.ShardReplicas[shard])
			} else {
				fmt.Fprintf(a.stdout, "group/%s scaled to %d replicas\n", g.Name, g.Replicas)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 0, "replica count (0: back to the file's)")
	cmd.Flags().IntVar(&shard, "shard", 0, "scale only this shard of a sharded group")
	return cmd
}

// printClusterGroups writes the cluster groups table of `agentctl get`:
// one line per group with its allocations per node.
func printClusterGroups(w io.Writer, gs []api.ClusterGroup, wide bool) error {
	if len(gs) == 0 {
		return nil
	}
	tw := newTable(w)
	head := "CLUSTER GROUP\tREADY\tGEN\tROLLOUT\tNODES"
	fmt.Fprintln(tw, head)
	for _, g := range gs {
		want := g.Replicas
		if g.Shards > 0 {
			want = 0
			for _, n := range g.ShardReplicas {
				want += n
			}
		}
		perNode := map[string]int{}
		unplaced := 0
		for _, al := range g.Allocations {
			if al.Node == "" {
				unplaced++
				continue
			}
			perNode[al.Node]++
		}
		names := make([]string, 0, len(perNode))
		for n := range perNode {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, 0, len(names)+1)
		for _, n := range names {
			if perNode[n] == 1 && !wide {
				parts = append(parts, n)
			} else {
				parts = append(parts, fmt.Sprintf("%s×%d", n, perNode[n]))
			}
		}
		if unplaced > 0 {
			parts = append(parts, fmt.Sprintf("%d unplaced", unplaced))
		}
		rollout := "-"
		if g.Rollout != nil {
			rollout = g.Rollout.State
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%s\t%s\n", g.Name, g.Ready, want, g.Generation, rollout, orDash(strings.Join(parts, ", ")))
	}
	return tw.Flush()
}

// waitDrained waits until node runs no allocation, printing progress.
func (a *app) waitDrained(ctx context.Context, node string) error {
	last := -1
	for {
		ms, err := a.client().Members(ctx)
		if err != nil {
			return err
		}
		left := 0
		for _, m := range ms {
			if m.Name == node {
				left = m.Allocations
			}
		}
		if left == 0 {
			return nil
		}
		if left != last {
			fmt.Fprintf(a.stderr, "node/%s: %d allocations still placed\n", node, left)
			last = left
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
