package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

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
	// Why a group is not running, where the eye lands first:
	// "Pending:  Unschedulable — needs …".
	notRunning := notRunningWhy(g)
	if notRunning != "" {
		field("", string(g.State), notRunning)
	}
	field("", "Ready", fmt.Sprint(g.Ready))
	switch {
	case notRunning != "":
	case g.State == api.GroupPending && g.Reason == reasonWaitingForDependency:
		// The message names the groups not ready yet; the spec's After
		// lists them all, should the agent give no message.
		waiting := g.Message
		if waiting == "" && g.Spec != nil {
			waiting = strings.Join(g.Spec.After, ", ")
		}
		field("", "Waiting for", orDash(waiting))
	case g.Message != "":
		field("", "Message", g.Message)
	}
	if g.State == api.GroupBackOff && !g.NextRestart.IsZero() {
		field("", "Next restart", fmt.Sprintf("in %s (at %s)", countdown(now, g.NextRestart), g.NextRestart.Format(time.RFC3339)))
	}
	priority := fmt.Sprint(g.Priority)
	if g.Spec != nil && g.Spec.Priority.Class != "" {
		priority += " (class " + g.Spec.Priority.Class + ")"
	}
	field("", "Priority", priority)
	field("", "Request", describeGroupRequest(groupRequest(g)))
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
		field("", "Restart backoff", describeBackoff(s.RestartBackoff))
		field("", "Preemptible", fmt.Sprint(s.IsPreemptible()))
		field("", "On evict", string(orDefault(s.OnEvict, api.EvictWait)))
		if len(s.After) > 0 {
			field("", "After", strings.Join(s.After, ", "))
		}
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
	role := api.RoleMain
	switch {
	case st != nil:
		role = containerRole(g, st)
	case spec != nil:
		role = spec.EffectiveRole()
	}
	if role != api.RoleMain {
		field("Role", string(role))
	}
	if st == nil {
		field("State", "not created")
	} else {
		field("State", string(st.State))
		if st.Reason != "" {
			field("Reason", st.Reason)
		}
		field("Ready", fmt.Sprint(st.Ready))
		if st.OOMKilled {
			field("OOMKilled", "true")
		}
		if st.ID != "" {
			field("ID", st.ID)
		}
		if st.PID != 0 {
			field("PID", fmt.Sprint(st.PID))
		}
		if st.ExitCode != nil {
			field("Exit code", describeExitCode(*st.ExitCode, st.OOMKilled))
		}
		field("Restarts", fmt.Sprint(st.Restarts))
		if u := st.Usage; u != nil {
			mem := shortBytes(u.Memory)
			if u.MemoryLimit > 0 {
				mem += " / " + shortBytes(u.MemoryLimit)
			}
			field("Usage", fmt.Sprintf("cpu %.2fs used, memory %s, pids %d", u.CPUSeconds, mem, u.Pids))
		}
		field("Started", timeAndAge(now, st.StartedAt))
		if !st.FinishedAt.IsZero() {
			field("Finished", timeAndAge(now, st.FinishedAt))
		}
	}
	if spec != nil {
		describeContainerSpec(tw, spec)
	}
	// The sub-tables come last: their header lines, which have no tab,
	// end the column block of the fields above.
	describeProbes(tw, st, spec, now)
	describeHooks(tw, st, spec, now)
}

// describeContainerSpec writes what the spec of a container says beyond
// its image and role.
func describeContainerSpec(tw io.Writer, spec *api.ContainerSpec) {
	field := func(label, value string) {
		fmt.Fprintf(tw, "    %s:\t%s\n", label, value)
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
	limits := "unlimited"
	if len(parts) > 0 {
		limits = strings.Join(parts, " ")
	}
	var req []string
	if r.Requests.CPU != 0 {
		req = append(req, "cpu="+r.Requests.CPU.String())
	}
	if r.Requests.Memory != 0 {
		req = append(req, "memory="+r.Requests.Memory.String())
	}
	if len(req) == 0 {
		return limits
	}
	return limits + " (requests " + strings.Join(req, " ") + ")"
}

// describeGroupRequest renders what admission counts for a group:
// "cpu 500m, memory 256MiB, pids 100", or "none".
func describeGroupRequest(r api.Resources) string {
	if r == (api.Resources{}) {
		return "none"
	}
	return fmt.Sprintf("cpu %s, memory %s, pids %d", r.CPU, shortBytes(r.Memory), r.Pids)
}

// notRunningWhy says why a Pending or Evicted group is not running, from
// its reason and message: "Unschedulable — needs …". It is "" for other
// states, and for a group waiting for its dependencies ("Waiting for"
// lists them).
func notRunningWhy(g *api.GroupStatus) string {
	switch {
	case g.State == api.GroupPending && g.Reason == reasonWaitingForDependency:
		return ""
	case g.State != api.GroupPending && g.State != api.GroupEvicted:
		return ""
	case g.Reason != "" && g.Message != "":
		return g.Reason + " — " + oneLine(g.Message)
	case g.Reason != "":
		return g.Reason
	}
	return oneLine(g.Message)
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

// reasonWaitingForDependency is the reason of a Pending group whose After
// groups are not all Ready yet.
const reasonWaitingForDependency = "WaitingForDependency"

// describeBackoff renders the restart backoff of a spec, with the
// defaults for what it leaves unset.
func describeBackoff(b api.BackoffSpec) string {
	initial, maxDelay, factor, reset := b.Initial, b.Max, b.Factor, b.ResetAfter
	if initial == 0 {
		initial = api.DefaultBackoffInitial
	}
	if maxDelay == 0 {
		maxDelay = api.DefaultBackoffMax
	}
	if factor == 0 {
		factor = api.DefaultBackoffFactor
	}
	if reset == 0 {
		reset = api.DefaultBackoffReset
	}
	return fmt.Sprintf("initial=%s max=%s factor=%s reset_after=%s",
		initial, maxDelay, strconv.FormatFloat(factor, 'g', -1, 64), reset)
}

// describeExitCode renders an exit code with what it means: a code above
// 128 is the number of the signal that killed the task, "137 (SIGKILL)";
// oom adds that the kernel killed it for memory.
func describeExitCode(code uint32, oom bool) string {
	var why []string
	if code > 128 && code <= 128+64 {
		sig := syscall.Signal(code - 128)
		if name := unix.SignalName(sig); name != "" {
			why = append(why, name)
		} else {
			why = append(why, fmt.Sprintf("signal %d", code-128))
		}
	}
	if oom {
		why = append(why, "OOMKilled")
	}
	if len(why) == 0 {
		return fmt.Sprint(code)
	}
	return fmt.Sprintf("%d (%s)", code, strings.Join(why, ", "))
}

// probeKinds are the probes of a container in the order they act.
var probeKinds = []string{"startup", "liveness", "readiness"}

// specProbe returns the spec's probe of a kind, or nil.
func specProbe(spec *api.ContainerSpec, kind string) *api.Probe {
	if spec == nil {
		return nil
	}
	switch kind {
	case "startup":
		return spec.Startup
	case "liveness":
		return spec.Liveness
	case "readiness":
		return spec.Readiness
	}
	return nil
}

// describeProbes writes the probes of a container as a table: those the
// status reports, then those of the spec that have not run yet.
// FAILURES and SUCCESSES are the consecutive counts over the spec's
// thresholds.
func describeProbes(tw io.Writer, st *api.ContainerStatus, spec *api.ContainerSpec, now time.Time) {
	var probes []api.ProbeStatus
	if st != nil {
		probes = append(probes, st.Probes...)
	}
	for _, kind := range probeKinds {
		p := specProbe(spec, kind)
		if p == nil || slices.ContainsFunc(probes, func(s api.ProbeStatus) bool { return s.Kind == kind }) {
			continue
		}
		probes = append(probes, api.ProbeStatus{Kind: kind, Action: probeAction(p)})
	}
	if len(probes) == 0 {
		return
	}
	fmt.Fprintln(tw, "    Probes:")
	fmt.Fprintln(tw, "      KIND\tACTION\tRESULT\tFAILURES\tSUCCESSES\tLAST\tDURATION\tMESSAGE")
	for _, p := range probes {
		failures, successes := fmt.Sprint(p.Failures), fmt.Sprint(p.Successes)
		if sp := specProbe(spec, p.Kind); sp != nil {
			failures += "/" + fmt.Sprint(orDefault(sp.FailureThreshold, api.DefaultFailureThreshold))
			successes += "/" + fmt.Sprint(orDefault(sp.SuccessThreshold, api.DefaultSuccessThreshold))
		}
		duration := "-"
		if !p.LastProbe.IsZero() {
			duration = shortElapsed(p.Duration)
		}
		fmt.Fprintf(tw, "      %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Kind, orDash(oneLine(p.Action)), orDash(p.Result),
			failures, successes, ago(now, p.LastProbe), duration, orDash(oneLine(p.Message)))
	}
}

// describeHooks writes the last runs of the hooks of a container as a
// table, with the spec's hooks that have not run yet.
func describeHooks(tw io.Writer, st *api.ContainerStatus, spec *api.ContainerSpec, now time.Time) {
	var hooks []api.HookStatus
	if st != nil {
		hooks = append(hooks, st.Hooks...)
	}
	if spec != nil {
		for _, h := range []struct {
			kind string
			hook *api.Hook
		}{{"post_start", spec.PostStart}, {"pre_stop", spec.PreStop}} {
			if h.hook == nil || slices.ContainsFunc(hooks, func(s api.HookStatus) bool { return s.Kind == h.kind }) {
				continue
			}
			hooks = append(hooks, api.HookStatus{Kind: h.kind, Action: hookAction(h.hook)})
		}
	}
	if len(hooks) == 0 {
		return
	}
	fmt.Fprintln(tw, "    Hooks:")
	fmt.Fprintln(tw, "      KIND\tACTION\tRESULT\tAT\tDURATION\tMESSAGE")
	for _, h := range hooks {
		duration := "-"
		if !h.At.IsZero() {
			duration = shortElapsed(h.Duration)
		}
		fmt.Fprintf(tw, "      %s\t%s\t%s\t%s\t%s\t%s\n", h.Kind, orDash(oneLine(h.Action)), orDash(h.Result),
			ago(now, h.At), duration, orDash(oneLine(h.Message)))
	}
}

// probeAction renders the action of a probe that has not run yet the way
// the agent reports it: "http GET :8080/health", "tcp :5432", "exec
// pg_isready".
func probeAction(p *api.Probe) string {
	switch {
	case p.HTTP != nil:
		return httpAction(p.HTTP)
	case p.TCP != nil:
		return fmt.Sprintf("tcp :%d", p.TCP.Port)
	case p.Exec != nil:
		return execAction(p.Exec)
	}
	return ""
}

func hookAction(h *api.Hook) string {
	switch {
	case h.HTTP != nil:
		return httpAction(h.HTTP)
	case h.Exec != nil:
		return execAction(h.Exec)
	}
	return ""
}

// execAction quotes the arguments that need it, as the agent does.
func execAction(a *api.ExecAction) string {
	parts := []string{"exec"}
	for _, arg := range a.Command {
		if arg == "" || strings.ContainsAny(arg, " \t\n'\"\\") {
			arg = strconv.Quote(arg)
		}
		parts = append(parts, arg)
	}
	return strings.Join(parts, " ")
}

func httpAction(a *api.HTTPAction) string {
	path := a.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return fmt.Sprintf("http GET :%d%s", a.Port, path)
}

func orDefault[T comparable](n, def T) T {
	var zero T
	if n == zero {
		return def
	}
	return n
}

// ago renders "5s ago", or "-" for a zero t.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return age(now, t) + " ago"
}

// shortElapsed renders how long something took, to the millisecond
// ("12ms", "1.503s"); below a millisecond as is ("850µs").
func shortElapsed(d time.Duration) string {
	if d >= time.Millisecond {
		d = d.Round(time.Millisecond)
	}
	return d.String()
}
