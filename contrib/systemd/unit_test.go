package systemd_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

const (
	unitName = "berth-agent.service"
	// agentdPath is ExecStart's binary; `make install` rewrites exactly
	// this string for its PREFIX.
	agentdPath = "/usr/local/bin/agentd"
)

func readUnit(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(unitName)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sections a service unit may have.
var knownSections = []string{"Unit", "Service", "Install"}

// repeatable reports whether systemd appends a key's repeated assignments
// (lists, dependencies, conditions) rather than keeping only the last one.
func repeatable(key string) bool {
	if strings.HasPrefix(key, "Condition") || strings.HasPrefix(key, "Assert") {
		return true
	}
	switch key {
	case "Documentation", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Upholds",
		"Conflicts", "Before", "After", "OnFailure", "OnSuccess", "RequiresMountsFor",
		"PropagatesReloadTo", "ReloadPropagatedFrom", "JoinsNamespaceOf",
		"Environment", "EnvironmentFile", "PassEnvironment", "UnsetEnvironment",
		"ExecCondition", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost",
		"SuccessExitStatus", "RestartPreventExitStatus", "RestartForceExitStatus",
		"ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
		"BindPaths", "BindReadOnlyPaths", "TemporaryFileSystem", "SupplementaryGroups",
		"DeviceAllow", "CapabilityBoundingSet", "AmbientCapabilities", "SystemCallFilter",
		"WantedBy", "RequiredBy", "Alias", "Also":
		return true
	}
	return false
}

// parsedUnit is a unit file as systemd reads it.
type parsedUnit struct {
	sections []*unit.UnitSection
	opts     []*unit.UnitOption
}

func parseUnit(text string) (parsedUnit, error) {
	secs, err := unit.DeserializeSections(strings.NewReader(text))
	if err != nil {
		return parsedUnit{}, err
	}
	opts, err := unit.DeserializeOptions(strings.NewReader(text))
	return parsedUnit{secs, opts}, err
}

// values returns every value assigned to section's key, in order.
func (u parsedUnit) values(section, key string) []string {
	var vs []string
	for _, o := range u.opts {
		if o.Section == section && o.Name == key {
			vs = append(vs, o.Value)
		}
	}
	return vs
}

// value returns the value systemd uses for a single-valued key: the last.
func (u parsedUnit) value(section, key string) (string, bool) {
	vs := u.values(section, key)
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// list returns the words of a list key over all its assignments.
func (u parsedUnit) list(section, key string) []string {
	var ws []string
	for _, v := range u.values(section, key) {
		ws = append(ws, strings.Fields(v)...)
	}
	return ws
}

// requirement is one directive agentd depends on, and why.
type requirement struct {
	section, key string
	check        func(v string) error
	why          string
}

func equals(want string) func(string) error {
	return func(v string) error {
		if v != want {
			return fmt.Errorf("is %q, want %q", v, want)
		}
		return nil
	}
}

func atLeast(min time.Duration) func(string) error {
	return func(v string) error {
		d, err := parseTimespan(v)
		if err != nil {
			return err
		}
		if d < min {
			return fmt.Errorf("is %s, want at least %s", v, min)
		}
		return nil
	}
}

var requirements = []requirement{
	{"Service", "Type", equals("notify"), "agentd sends READY=1 once it serves, and watchdog pings"},
	{"Service", "NotifyAccess", equals("main"), "a managed containerd, agentd's child, sends its own READY=1"},
	{"Service", "WatchdogSec", atLeast(10 * time.Second), "agentd pings at half of it; a shorter one restarts a busy agent for nothing"},
	{"Service", "TimeoutStartSec", atLeast(60 * time.Second), "agentd may start a managed containerd and recover every group before READY=1"},
	{"Service", "KillMode", equals("process"), "the containers belong to containerd's shims: stopping agentd must not kill them"},
	{"Service", "Restart", equals("always"), "a crashed or stuck (watchdog) agent must come back"},
	{"Service", "ExecStart", checkExecStart, "`make install` rewrites " + agentdPath + " for its PREFIX"},
}

func checkExecStart(v string) error {
	// Prefixes such as "-" or "+" change how systemd runs the command.
	cmd := strings.TrimLeft(v, "@-:+!")
	f := strings.Fields(cmd)
	switch {
	case len(f) == 0:
		return errors.New("is empty")
	case !filepath.IsAbs(f[0]):
		return fmt.Errorf("runs %q, want an absolute path", f[0])
	case f[0] != agentdPath:
		return fmt.Errorf("runs %q, want %s", f[0], agentdPath)
	case !slices.Contains(f, "--config"):
		return errors.New("gives no --config")
	}
	return nil
}

// lint returns what is wrong with a unit's text, one problem a line.
func lint(text string) []string {
	u, err := parseUnit(text)
	if err != nil {
		return []string{"parse: " + err.Error()}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	seen := map[string]bool{}
	for _, s := range u.sections {
		switch {
		case !slices.Contains(knownSections, s.Section):
			add("unknown section [%s]; a service unit has %v", s.Section, knownSections)
		case seen[s.Section]:
			add("section [%s] appears twice; merge them", s.Section)
		}
		seen[s.Section] = true
	}
	for _, s := range knownSections {
		if !seen[s] {
			add("no [%s] section", s)
		}
	}

	counts := map[[2]string]int{}
	for _, o := range u.opts {
		k := [2]string{o.Section, o.Name}
		counts[k]++
		if counts[k] == 2 && !repeatable(o.Name) {
			add("[%s] %s= is set more than once; systemd keeps only the last", o.Section, o.Name)
		}
	}

	for _, r := range requirements {
		v, ok := u.value(r.section, r.key)
		if !ok {
			add("[%s] %s= is missing (%s)", r.section, r.key, r.why)
			continue
		}
		if err := r.check(v); err != nil {
			add("[%s] %s= %v (%s)", r.section, r.key, err, r.why)
		}
	}
	for _, key := range []string{"After", "Wants"} {
		for _, dep := range []string{"containerd.service", "network-online.target"} {
			if !slices.Contains(u.list("Unit", key), dep) {
				add("[Unit] %s= lacks %s", key, dep)
			}
		}
	}
	if !slices.Contains(u.list("Install", "WantedBy"), "multi-user.target") {
		add("[Install] WantedBy= lacks multi-user.target")
	}
	return problems
}

// parseTimespan parses a systemd time span ("30s", "1min 30s", "90";
// systemd.time(7)).
func parseTimespan(s string) (time.Duration, error) {
	units := map[string]time.Duration{
		"us": time.Microsecond, "usec": time.Microsecond,
		"ms": time.Millisecond, "msec": time.Millisecond,
		"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
		"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	}
	rest := strings.TrimSpace(s)
	if rest == "infinity" {
		return math.MaxInt64, nil
	}
	if rest == "" {
		return 0, errors.New("is empty, want a time span such as 30s")
	}
	var total time.Duration
	for rest != "" {
		i := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		if i < 0 {
			i = len(rest)
		}
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a time span such as 30s", s)
		}
		rest = strings.TrimLeft(rest[i:], " ")
		j := strings.IndexFunc(rest, func(r rune) bool { return r == ' ' || (r >= '0' && r <= '9') })
		if j < 0 {
			j = len(rest)
		}
		unit, ok := units[rest[:j]]
		if !ok {
			return 0, fmt.Errorf("%q: unknown unit %q", s, rest[:j])
		}
		total += time.Duration(n * float64(unit))
		rest = strings.TrimLeft(rest[j:], " ")
	}
	return total, nil
}

// editLine replaces old at the start of the first line that begins with
// it (comments do not), or removes that line when new is empty.
func editLine(t *testing.T, text, old, new string) string {
	t.Helper()
	var b strings.Builder
	done := false
	for line := range strings.Lines(text) {
		if !done && strings.HasPrefix(line, old) {
			done = true
			if new == "" {
				continue
			}
			line = new + line[len(old):]
		}
		b.WriteString(line)
	}
	if !done {
		t.Fatalf("the unit has no line starting with %q to edit", old)
	}
	return b.String()
}

func TestUnitHasWhatAgentdNeeds(t *testing.T) {
	for _, p := range lint(readUnit(t)) {
		t.Error(p)
	}
}

// TestLintCatches proves that lint finds each kind of problem, on
// variants of the real unit.
func TestLintCatches(t *testing.T) {
	text := readUnit(t)
	tests := []struct {
		name      string
		old, new  string // the edit to the unit: see editLine
		want      string // a problem containing this; "" for none
		wantCount int
	}{
		{"Type=simple", "Type=notify", "Type=simple", `Type= is "simple", want "notify"`, 1},
		{"no NotifyAccess", "NotifyAccess=main", "", "NotifyAccess= is missing", 1},
		{"no watchdog", "WatchdogSec=30s", "", "WatchdogSec= is missing", 1},
		{"a 2 s watchdog", "WatchdogSec=30s", "WatchdogSec=2s", "WatchdogSec= is 2s, want at least 10s", 1},
		{"a bad time span", "WatchdogSec=30s", "WatchdogSec=30 fortnights", `unknown unit "fortnights"`, 1},
		{"KillMode=control-group", "KillMode=process", "KillMode=control-group", "KillMode=", 1},
		{"Restart=on-failure", "Restart=always", "Restart=on-failure", "Restart=", 1},
		{"relative ExecStart", "ExecStart=/usr/local/bin/agentd", "ExecStart=agentd", "want an absolute path", 1},
		{"another binary", "ExecStart=/usr/local/bin/agentd", "ExecStart=/usr/bin/agentd", "want /usr/local/bin/agentd", 1},
		{"no --config", "ExecStart=/usr/local/bin/agentd --config /etc/berth/agent.toml", "ExecStart=/usr/local/bin/agentd",
			"gives no --config", 1},
		{"unknown section", "[Install]", "[Timer]\nOnBootSec=1min\n\n[Install]", "unknown section [Timer]", 1},
		{"repeated section", "[Install]", "[Service]\nNice=-5\n\n[Install]", "section [Service] appears twice", 1},
		{"repeated single key", "RestartSec=2", "RestartSec=2\nRestartSec=5", "RestartSec= is set more than once", 1},
		{"repeated list key", "Wants=network-online.target containerd.service",
			"Wants=network-online.target\nWants=containerd.service", "", 0},
		{"no containerd ordering", "After=network-online.target containerd.service", "After=network-online.target",
			"After= lacks containerd.service", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := lint(editLine(t, text, tt.old, tt.new))
			if len(problems) != tt.wantCount ||
				(tt.want != "" && !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) })) {
				t.Errorf("problems = %q, want %d containing %q", problems, tt.wantCount, tt.want)
			}
		})
	}
}

func TestParseTimespan(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"30s", 30 * time.Second},
		{"30", 30 * time.Second},
		{"90 s", 90 * time.Second},
		{"1min 30s", 90 * time.Second},
		{"1min30s", 90 * time.Second},
		{"1.5h", 90 * time.Minute},
		{"500ms", 500 * time.Millisecond},
		{"infinity", math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseTimespan(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("parseTimespan(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "s", "30 fortnights", "thirty"} {
		if d, err := parseTimespan(bad); err == nil {
			t.Errorf("parseTimespan(%q) = %v, want an error", bad, d)
		}
	}
}

// systemdVerify runs `systemd-analyze verify` on the unit text, with
// ExecStart pointing at a binary that exists, and returns what it reports
// about the unit. (It exits 0 on unknown keys and sections, so the output
// is what counts; lines about other units are not this unit's problems.)
func systemdVerify(t *testing.T, analyze, text string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	text = editLine(t, text, "ExecStart="+agentdPath+" ", "ExecStart="+exe+" ")
	path := filepath.Join(t.TempDir(), unitName)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, "verify", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	t.Logf("systemd-analyze verify: err %v, output:\n%s", err, out)
	var problems []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, unitName) {
			problems = append(problems, strings.TrimSpace(line))
		}
	}
	if err != nil {
		problems = append(problems, fmt.Sprintf("systemd-analyze verify: %v", err))
	}
	return problems
}

func TestUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		msg := "systemd-analyze is not on PATH (Debian package systemd); the unit is only linted by TestUnitHasWhatAgentdNeeds"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
		}
		t.Skip(msg)
	}
	text := readUnit(t)
	for _, p := range systemdVerify(t, analyze, text) {
		t.Error(p)
	}

	t.Run("a misspelt key is reported", func(t *testing.T) {
		bad := editLine(t, text, "WatchdogSec=", "WatchdogSecs=")
		if len(systemdVerify(t, analyze, bad)) == 0 {
			t.Error("systemd-analyze verify reported nothing for WatchdogSecs=; the check would miss real problems")
		}
	})
}
