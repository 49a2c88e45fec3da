package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) describeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe GROUP",
		Short: "Show a group in detail: state, containers, spec and recent events",
		Args:  cobra.ExactArgs(1),

		ValidArgsFunction: a.completeOneGroup,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			g, err := a.client().Get(ctx, args[0])
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, g)
			}
			return describeGroup(a.stdout, g, a.now())
		},
	}
}

// describeGroup writes g as readable sections: the group, its containers
// (status and spec side by side), its volumes and its recent events.
func describeGroup(w io.Writer, g *api.GroupStatus, now time.Time) error {
	tw := newTable(w)
	field := func(indent, label, value string) {
		fmt.Fprintf(tw, "%s%s:\t%s\n", indent, label, value)
	}

	field("", "Name", g.Name)
	state := string(g.State)
	if g.Reason != "" {
		state += " (" + g.Reason + ")"
	}
	field("", "State", state)
	if g.Message != "" {
		field("", "Message", g.Message)
	}
	priority := fmt.Sprint(g.Priority)
	if g.Spec != nil && g.Spec.Priority.Class != "" {
		priority += " (class " + g.Spec.Priority.Class + ")"
	}
	field("", "Priority", priority)
	field("", "Generation", fmt.Sprint(g.Generation))
	field("", "Source", orDash(g.Source))
	if g.SpecError != "" {
		field("", "Spec error", g.SpecError+" (still running the last valid spec)")
	}
	field("", "Created", timeAndAge(now, g.CreatedAt))
	field("", "Started", timeAndAge(now, g.StartedAt))
	field("", "Restarts", fmt.Sprint(g.Restarts))
	field("", "Netns", orDash(g.NetNS))
	if s := g.Spec; s != nil {
		field("", "Restart policy", orDash(string(s.Restart)))
		field("", "Grace period", s.GracePeriod.String())
		if len(s.Labels) > 0 {
			field("", "Labels", joinMap(s.Labels))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "Containers:")
	names := containerNames(g)
	if len(names) == 0 {
		fmt.Fprintln(w, "  <none>")
	}
	for _, name := range names {
		describeContainer(tw, g, name, now)
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if g.Spec != nil && len(g.Spec.Volumes) > 0 {
		fmt.Fprintln(w, "Volumes:")
		for _, v := range g.Spec.Volumes {
			fmt.Fprintf(tw, "  %s\t%s\n", v.Name, describeVolume(v))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w, "Events:")
	if len(g.Events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	fmt.Fprintln(tw, "  AGE\tTYPE\tREASON\tCONTAINER\tMESSAGE")
	for _, e := range g.Events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", age(now, e.Time), e.Type, e.Reason, orDash(e.Container), oneLine(e.Message))
	}
	return tw.Flush()
}

// containerNames lists the containers of the spec in order, then any the
// status has that the spec does not.
func containerNames(g *api.GroupStatus) []string {
	var names []string
	if g.Spec != nil {
		for _, c := range g.Spec.Containers {
			names = append(names, c.Name)
		}
	}
	for _, c := range g.Containers {
		if !slices.Contains(names, c.Name) {
			names = append(names, c.Name)
		}
	}
	return names
}

func describeContainer(tw io.Writer, g *api.GroupStatus, name string, now time.Time) {
	field := func(label, value string) {
		fmt.Fprintf(tw, "    %s:\t%s\n", label, value)
	}
	fmt.Fprintf(tw, "  %s:\n", name)
	var spec *api.ContainerSpec
	if g.Spec != nil {
		spec, _ = g.Spec.Container(name)
	}
	var st *api.ContainerStatus
	for i := range g.Containers {
		if g.Containers[i].Name == name {
			st = &g.Containers[i]
		}
	}
	switch {
	case st != nil && st.Image != "":
		field("Image", st.Image)
	case spec != nil:
		field("Image", spec.Image)
	}
	if st == nil {
		field("State", "not created")
	} else {
		field("State", string(st.State))
		if st.Reason != "" {
			field("Reason", st.Reason)
		}
		if st.ID != "" {
			field("ID", st.ID)
		}
		if st.PID != 0 {
			field("PID", fmt.Sprint(st.PID))
		}
		if st.ExitCode != nil {
			field("Exit code", fmt.Sprint(*st.ExitCode))
		}
		field("Restarts", fmt.Sprint(st.Restarts))
		field("Started", timeAndAge(now, st.StartedAt))
		if !st.FinishedAt.IsZero() {
			field("Finished", timeAndAge(now, st.FinishedAt))
		}
	}
	if spec == nil {
		return
	}
	if len(spec.Command) > 0 {
		field("Command", strings.Join(spec.Command, " "))
	}
	if len(spec.Args) > 0 {
		field("Args", strings.Join(spec.Args, " "))
	}
	field("Resources", describeResources(spec.Resources))
	if len(spec.Mounts) == 0 {
		field("Mounts", "<none>")
	}
	for i, m := range spec.Mounts {
		label := ""
		if i == 0 {
			label = "Mounts"
		}
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		fmt.Fprintf(tw, "    %s\t%s -> %s (%s)\n", labelColon(label), m.Volume, m.Path, mode)
	}
}

func labelColon(label string) string {
	if label == "" {
		return ""
	}
	return label + ":"
}

func describeResources(r api.ResourceSpec) string {
	var parts []string
	if r.CPU != 0 {
		parts = append(parts, "cpu="+r.CPU.String())
	}
	if r.Memory != 0 {
		parts = append(parts, "memory="+r.Memory.String())
	}
	if r.Pids != 0 {
		parts = append(parts, fmt.Sprintf("pids=%d", r.Pids))
	}
	if len(parts) == 0 {
		return "unlimited"
	}
	return strings.Join(parts, " ")
}

func describeVolume(v api.VolumeSpec) string {
	switch v.Type {
	case api.VolumeHost:
		return "host " + v.Path
	case api.VolumeTmpfs:
		return "tmpfs " + v.Size.String()
	}
	return string(v.Type)
}

func joinMap(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
}
