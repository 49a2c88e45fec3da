package api

import (
	"fmt"
	"sort"
	"strings"
	"unicode"
)

// The lifecycle rules of a group: the roles of its containers, their
// probes and hooks, restart_backoff and after, with the defaults that fill
// what a file leaves out. validate.go calls them.

// effective is b with its defaults filled in.
func (b BackoffSpec) effective() BackoffSpec {
	b.Initial = orDefault(b.Initial, DefaultBackoffInitial)
	b.Max = orDefault(b.Max, DefaultBackoffMax)
	b.Factor = orDefault(b.Factor, DefaultBackoffFactor)
	b.ResetAfter = orDefault(b.ResetAfter, DefaultBackoffReset)
	return b
}

// setDefaults fills the timing of a probe and the path of its HTTP
// action. A nil probe is left alone.
func (p *Probe) setDefaults() {
	if p == nil {
		return
	}
	p.Period = orDefault(p.Period, DefaultProbePeriod)
	p.Timeout = orDefault(p.Timeout, DefaultProbeTimeout)
	p.SuccessThreshold = orDefault(p.SuccessThreshold, DefaultSuccessThreshold)
	p.FailureThreshold = orDefault(p.FailureThreshold, DefaultFailureThreshold)
	p.HTTP.setDefaults()
}

// setDefaults fills the timeout of a hook (0 keeps it unset) and the path
// of its HTTP action. A nil hook is left alone.
func (h *Hook) setDefaults(timeout Duration) {
	if h == nil {
		return
	}
	h.Timeout = orDefault(h.Timeout, timeout)
	h.HTTP.setDefaults()
}

// setDefaults fills the path of an HTTP action: "/". Nil is left alone.
func (h *HTTPAction) setDefaults() {
	if h != nil && h.Path == "" {
		h.Path = "/"
	}
}

// after checks the groups this one waits for.
func (v *validator) after(g *GroupSpec) {
	first := make(map[string]int)
	for i, name := range g.After {
		field := pathIndex("after", i)
		if name == "" {
			v.add(field, "after lists an empty name: write the name of a local group, or remove the entry")
			continue
		}
		if msg := nameProblem(name, "group"); msg != "" {
			v.add(field, "%s", msg)
			continue
		}
		if name == g.Name {
			v.add(field, "group %q cannot wait for itself: remove it from after", name)
			continue
		}
		if j, dup := first[name]; dup {
			v.add(field, "group %q is listed twice (first at %s); list each group once", name, v.where(pathIndex("after", j)))
			continue
		}
		first[name] = i
	}
}

// backoff checks restart_backoff as it is in effect: a zero stands for
// the default.
func (v *validator) backoff(b BackoffSpec) {
	const p = "restart_backoff"
	e := b.effective()
	v.positive(p, "initial", b.Initial, DefaultBackoffInitial)
	v.positive(p, "max", b.Max, DefaultBackoffMax)
	v.positive(p, "reset_after", b.ResetAfter, DefaultBackoffReset)
	if b.Initial >= 0 && b.Max >= 0 && e.Max < e.Initial {
		v.add(v.written(pathKey(p, "max"), pathKey(p, "initial")),
			"max %s is shorter than initial %s: the delay starts at initial and grows up to max; raise max or lower initial", e.Max, e.Initial)
	}
	if f := e.Factor; !(f >= 1 && f <= 100) {
		v.add(pathKey(p, "factor"), "factor %v is out of range: use a number from 1 (the same delay every time) to 100; the default is %v", f, DefaultBackoffFactor)
	}
}

// positive refuses a negative duration at p.key; zero stands for def.
func (v *validator) positive(p, key string, d, def Duration) {
	if d < 0 {
		v.add(pathKey(p, key), "%s must be more than 0: leave it out for the default %s", key, def)
	}
}

// lifecycle checks the role, probes and hooks of container c at p.
func (v *validator) lifecycle(p string, c *ContainerSpec) {
	switch c.Role {
	case "", RoleMain, RoleSidecar, RoleInit:
	default:
		msg := fmt.Sprintf("%q is not a role: use \"main\" (the default), \"sidecar\" (starts first and must be ready before the main containers) or \"init\" (runs to completion before the others start)", c.Role)
		if s := closest(string(c.Role), []string{string(RoleMain), string(RoleSidecar), string(RoleInit)}); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		v.add(pathKey(p, "role"), "%s", msg)
	}
	if c.Role == RoleInit {
		for _, x := range []struct {
			key, what string
			set       bool
		}{
			{"startup", "startup probe", c.Startup != nil},
			{"liveness", "liveness probe", c.Liveness != nil},
			{"readiness", "readiness probe", c.Readiness != nil},
			{"post_start", "post_start hook", c.PostStart != nil},
		} {
			if x.set {
				v.add(pathKey(p, x.key), "an init container runs to completion, so it takes no %s: remove it, or make the container role = \"sidecar\" or \"main\"", x.what)
			}
		}
	}
	v.probe(pathKey(p, "startup"), "startup", c.Startup)
	v.probe(pathKey(p, "liveness"), "liveness", c.Liveness)
	v.probe(pathKey(p, "readiness"), "readiness", c.Readiness)
	v.hook(pathKey(p, "post_start"), "post_start", c.PostStart, DefaultHookTimeout)
	v.hook(pathKey(p, "pre_stop"), "pre_stop", c.PreStop, 0)
}

// needsNonInit refuses a group of init containers only.
func (v *validator) needsNonInit(cs []ContainerSpec) {
	for _, c := range cs {
		if c.Role != RoleInit {
			return
		}
	}
	if len(cs) > 0 {
		v.add(pathKey(pathIndex("container", len(cs)-1), "role"),
			"every container of the group is an init container, and init containers only run to completion before the others start: make at least one container role = \"main\" (the default) or \"sidecar\"")
	}
}

// probe checks the probe of the given kind at p, as it is in effect: a
// zero stands for the default.
func (v *validator) probe(p, kind string, pr *Probe) {
	if pr == nil {
		return
	}
	v.oneAction(p, "a probe needs exactly one of http, tcp or exec", kind+" probe", `http = { path = "/healthz", port = 8080 }`,
		action{"http", pr.HTTP != nil}, action{"tcp", pr.TCP != nil}, action{"exec", pr.Exec != nil})
	if pr.HTTP != nil {
		v.httpAction(pathKey(p, "http"), pr.HTTP)
	}
	if pr.TCP != nil {
		v.port(pathKey(pathKey(p, "tcp"), "port"), "tcp", pr.TCP.Port)
	}
	if pr.Exec != nil {
		v.execAction(pathKey(p, "exec"), pr.Exec)
	}

	if pr.InitialDelay < 0 {
		v.add(pathKey(p, "initial_delay"), "initial_delay must not be negative: leave it out to probe right after the start")
	}
	v.positive(p, "period", pr.Period, DefaultProbePeriod)
	v.positive(p, "timeout", pr.Timeout, DefaultProbeTimeout)
	period, timeout := orDefault(pr.Period, DefaultProbePeriod), orDefault(pr.Timeout, DefaultProbeTimeout)
	if pr.Period >= 0 && pr.Timeout >= 0 && timeout > period {
		v.add(v.written(pathKey(p, "timeout"), pathKey(p, "period")),
			"timeout %s is longer than period %s: a check must end before the next one starts; shorten timeout or lengthen period", timeout, period)
	}

	switch st := pr.SuccessThreshold; {
	case st < 0:
		v.add(pathKey(p, "success_threshold"), "success_threshold must be at least 1: leave it out for the default %d", DefaultSuccessThreshold)
	case st > 1 && kind != "readiness":
		v.add(pathKey(p, "success_threshold"), "success_threshold of a %s probe must be 1, as kubelet requires (one success is what counts): remove it, or write 1", kind)
	}
	if pr.FailureThreshold < 0 {
		v.add(pathKey(p, "failure_threshold"), "failure_threshold must be at least 1: leave it out for the default %d", DefaultFailureThreshold)
	}
}

// hook checks the hook of the given kind at p; a zero timeout stands for
// timeout (0: bounded by the grace period).
func (v *validator) hook(p, kind string, h *Hook, timeout Duration) {
	if h == nil {
		return
	}
	v.oneAction(p, "a hook needs exactly one of http or exec", kind+" hook", `exec = { command = ["/bin/hook"] }`,
		action{"http", h.HTTP != nil}, action{"exec", h.Exec != nil})
	if h.HTTP != nil {
		v.httpAction(pathKey(p, "http"), h.HTTP)
	}
	if h.Exec != nil {
		v.execAction(pathKey(p, "exec"), h.Exec)
	}
	if h.Timeout < 0 {
		def := "leave it out for the default " + timeout.String()
		if timeout == 0 {
			def = "leave it out to bound it by the group's grace_period"
		}
		v.add(pathKey(p, "timeout"), "timeout must be more than 0: %s", def)
	}
}

// action is one of the actions a probe or hook may have.
type action struct {
	key string
	set bool
}

// oneAction refuses a probe or hook at p with no action, or with more than
// one: the first written is kept, every other one is reported where it is.
func (v *validator) oneAction(p, rule, what, example string, actions ...action) {
	var set []string
	for _, a := range actions {
		if a.set {
			set = append(set, a.key)
		}
	}
	if len(set) == 0 {
		v.add(p, "%s, and this %s has none: add one under [%s], e.g. %s", rule, what, unindexed(p), example)
		return
	}
	if v.idx != nil {
		sort.SliceStable(set, func(i, j int) bool {
			a, b := v.idx.locate(pathKey(p, set[i])), v.idx.locate(pathKey(p, set[j]))
			return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
		})
	}
	for _, k := range set[1:] {
		v.add(pathKey(p, k), "%s, and this %s already has %s (at %s): remove one of them", rule, what, set[0], v.where(pathKey(p, set[0])))
	}
}

func (v *validator) httpAction(p string, h *HTTPAction) {
	switch {
	case h.Path == "": // "/"
	case h.Path[0] != '/':
		v.add(pathKey(p, "path"), "path %q must start with '/', like \"/healthz\"", h.Path)
	case strings.IndexFunc(h.Path, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		v.add(pathKey(p, "path"), "path %q must not contain spaces or control characters: percent-encode them, like %%20", h.Path)
	}
	v.port(pathKey(p, "port"), "http", h.Port)
	for _, k := range sortedStringKeys(h.Headers) {
		field := pathKey(pathKey(p, "headers"), k)
		switch {
		case k == "":
			v.add(field, "header names must not be empty")
		case strings.IndexFunc(k, notTokenRune) >= 0:
			v.add(field, "header name %q may only contain letters, digits and !#$%%&'*+-.^_`|~", k)
		}
		if strings.IndexFunc(h.Headers[k], func(r rune) bool { return r != '\t' && unicode.IsControl(r) }) >= 0 {
			v.add(field, "the header value must not contain control characters such as line breaks")
		}
	}
}

// notTokenRune reports a rune that may not appear in an HTTP token (RFC 9110).
func notTokenRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}

func (v *validator) port(field, what string, port int) {
	switch {
	case port == 0:
		v.add(field, "the %s action needs a port: add port = 8080 (the port in the group's network namespace)", what)
	case port < 0 || port > 65535:
		v.add(field, "port %d is out of range: use a port from 1 to 65535", port)
	}
}

func (v *validator) execAction(p string, e *ExecAction) {
	switch {
	case len(e.Command) == 0:
		v.add(pathKey(p, "command"), "the exec action needs a command: add command = [\"/bin/check\"], or [\"sh\", \"-c\", \"...\"] for a shell")
	case e.Command[0] == "":
		v.add(pathIndex(pathKey(p, "command"), 0), "the program to run must not be empty: write its path, like \"/bin/check\"")
	}
}
