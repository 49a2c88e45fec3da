package api

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// base is a valid group file whose second container, indented, has two
// mounts: tests edit one line of it and assert the exact line and column of
// the error, which proves positions are found inside the 2nd container and
// the 2nd mount, not just at the first key of that name.
const base = `name = "web"

[[volume]]
name = "data"
type = "empty"

[[volume]]
name = "cache"
type = "tmpfs"
size = "64MiB"

[[container]]
name = "app"
image = "berth.local/app:1"

[[container.mount]]
volume = "data"
path = "/data"

  [[container]]
  name = "sidecar"
  image = "berth.local/sidecar:1"
  env = { MODE = "demo" }

    [[container.mount]]
    volume = "data"
    path = "/data"

    [[container.mount]]
    volume = "cache"
    path = "/cache"

  [container.resources]
  memory = "64MiB"
`

// lifecycleEdit appends lines to the 2nd container of base, indented like
// it, from line 35 on: lifecycleEdit(t, "[container.liveness]", "tcp.port = 1").
func lifecycleEdit(t *testing.T, lines ...string) string {
	t.Helper()
	return edit(t, base, 35, "  "+strings.Join(lines, "\n  "))
}

// edit replaces whole lines of doc, 1-based: edit(doc, 3, "x = 1").
func edit(t *testing.T, doc string, pairs ...any) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	for i := 0; i+1 < len(pairs); i += 2 {
		n, text := pairs[i].(int), pairs[i+1].(string)
		if n < 1 || n > len(lines) {
			t.Fatalf("edit: no line %d", n)
		}
		lines[n-1] = text
	}
	return strings.Join(lines, "\n")
}

// wantErr is one expected FieldError; msg is a substring of its Message.
type wantErr struct {
	line, col int
	field     string
	container string
	msg       string
}

// checkErrors asserts that err is an ErrorList holding exactly want, in
// order, all in file "web.toml" of group "web".
func checkErrors(t *testing.T, err error, want ...wantErr) {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T (%v), want an ErrorList", err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error is not ErrInvalid")
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		e := list[i]
		if e.File != "web.toml" || e.Line != w.line || e.Col != w.col || e.Field != w.field || e.Container != w.container {
			t.Errorf("error %d = %s:%d:%d field %q container %q; want web.toml:%d:%d field %q container %q\n(%v)",
				i, e.File, e.Line, e.Col, e.Field, e.Container, w.line, w.col, w.field, w.container, e)
		}
		if !strings.Contains(e.Message, w.msg) {
			t.Errorf("error %d message %q does not contain %q", i, e.Message, w.msg)
		}
	}
}

func TestBaseIsValid(t *testing.T) {
	if _, err := Decode("web.toml", []byte(base)); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []wantErr
	}{
		{"syntax error has the parser's position",
			edit(t, base, 22, `  image = "berth.local/sidecar:1`),
			[]wantErr{{22, 33, "", "", "invalid TOML: strings cannot contain newlines"}}},
		{"syntax error at the start of a line",
			edit(t, base, 2, `name = "again"`),
			[]wantErr{{2, 1, "", "", "invalid TOML: Key 'name' has already been defined"}}},
		{"unknown key in the 2nd mount of the 2nd container",
			edit(t, base, 31, `    pth = "/cache"`),
			[]wantErr{{31, 5, "container[1].mount[1].pth", "sidecar", `unknown key "pth"; did you mean "path"?`}}},
		{"unknown top-level key suggests the closest",
			edit(t, base, 2, `grace = "10s"`),
			[]wantErr{{2, 1, "grace", "", `unknown key "grace"; did you mean "grace_period"?`}}},
		{"unknown key with no close match lists the keys",
			edit(t, base, 34, `  swap = "1GiB"`),
			[]wantErr{{34, 3, "container[1].resources.swap", "sidecar", `the keys here are "cpu", "memory", "pids" and "requests"`}}},
		{"container key at top level says where it belongs",
			edit(t, base, 2, `image = "busybox"`),
			[]wantErr{{2, 1, "image", "", `"image" belongs in a [[container]] table`}}},
		{"resources key in a container says where it belongs",
			edit(t, base, 24, `  pids = 10`),
			[]wantErr{{24, 3, "container[1].pids", "sidecar", `"pids" belongs in the [container.resources] table`}}},
		{"wrong type at top level",
			edit(t, base, 1, `name = 3`),
			[]wantErr{{1, 1, "name", "", "wrong type: expected a string, found an integer (3); put the value in double quotes"}}},
		{"wrong type in the 2nd container",
			edit(t, base, 22, `  image = ["busybox"]`),
			[]wantErr{{22, 3, "container[1].image", "sidecar", "expected a string, found an array"}}},
		{"wrong type of an array element",
			edit(t, base, 24, `  command = ["sh", 3]`),
			[]wantErr{{24, 20, "container[1].command[1]", "sidecar", "expected a string, found an integer (3)"}}},
		{"wrong type in the 2nd mount",
			edit(t, base, 31, `    path = "/cache"`, 32, `    read_only = "yes"`),
			[]wantErr{{32, 5, "container[1].mount[1].read_only", "sidecar", "expected a boolean"}}},
		{"wrong type inside an inline table",
			edit(t, base, 23, `  env = { MODE = 1 }`),
			[]wantErr{{23, 11, "container[1].env.MODE", "sidecar", "expected a string, found an integer (1)"}}},
		{"table where a value belongs",
			edit(t, base, 2, `priority = { value = 1 }`),
			[]wantErr{{2, 1, "priority", "", "expected a string or a number, found a table"}}},
		{"size the unit type refuses",
			edit(t, base, 34, `  memory = "64XB"`),
			[]wantErr{{34, 3, "container[1].resources.memory", "sidecar", `invalid size "64XB"`}}},
		{"duration the unit type refuses",
			edit(t, base, 2, `grace_period = 30`),
			[]wantErr{{2, 1, "grace_period", "", `invalid duration "30": write it like "10s"`}}},
		{"request the unit type refuses",
			edit(t, base, 34, `  requests = { memory = "-64MiB" }`),
			[]wantErr{{34, 16, "container[1].resources.requests.memory", "sidecar", `invalid size "-64MiB"`}}},
		{"negative cpu request",
			edit(t, base, 34, `  requests.cpu = -1`),
			[]wantErr{{34, 12, "container[1].resources.requests.cpu", "sidecar", `invalid cpu "-1"`}}},
		{"pids have no request",
			edit(t, base, 34, `  requests.pids = 10`),
			[]wantErr{{34, 12, "container[1].resources.requests.pids", "sidecar", `unknown key "pids"; the keys here are "cpu" and "memory"`}}},
		{"preemptible is a boolean",
			edit(t, base, 2, `preemptible = "no"`),
			[]wantErr{{2, 1, "preemptible", "", "wrong type: expected a boolean, found a string"}}},
		{"on_evict is a string",
			edit(t, base, 2, `on_evict = false`),
			[]wantErr{{2, 1, "on_evict", "", "wrong type: expected a string, found a boolean"}}},
		{"cpu the unit type refuses",
			edit(t, base, 34, `  cpu = "half"`),
			[]wantErr{{34, 3, "container[1].resources.cpu", "sidecar", `invalid cpu "half"`}}},
		{"signal the unit type refuses",
			edit(t, base, 24, `  stop_signal = "SIGFOO"`),
			[]wantErr{{24, 3, "container[1].stop_signal", "sidecar", `invalid signal "SIGFOO"`}}},
		{"priority the unit type refuses",
			edit(t, base, 2, `priority = "Very High"`),
			[]wantErr{{2, 1, "priority", "", `invalid priority "Very High"`}}},
		{"unknown key in a probe action of the 2nd container",
			lifecycleEdit(t, "[container.liveness.http]", `pth = "/x"`, "port = 8080"),
			[]wantErr{{36, 3, "container[1].liveness.http.pth", "sidecar", `unknown key "pth"; did you mean "path"?`}}},
		{"unknown key in a probe suggests the closest",
			lifecycleEdit(t, "[container.readiness]", "tcp.port = 8080", `perod = "5s"`),
			[]wantErr{{37, 3, "container[1].readiness.perod", "sidecar", `unknown key "perod"; did you mean "period"?`}}},
		{"action key in a probe lists the keys of a probe",
			lifecycleEdit(t, "[container.liveness]", "port = 8080"),
			[]wantErr{{36, 3, "container[1].liveness.port", "sidecar", `unknown key "port"; the keys here are "http", "tcp", "exec", "initial_delay"`}}},
		{"unknown key in an inline hook action",
			lifecycleEdit(t, "[container.pre_stop]", `exec = { comand = ["drain"] }`),
			[]wantErr{{36, 12, "container[1].pre_stop.exec.comand", "sidecar", `unknown key "comand"; did you mean "command"?`}}},
		{"a hook has no tcp action",
			lifecycleEdit(t, "[container.post_start.tcp]", "port = 8080"),
			[]wantErr{{35, 3, "container[1].post_start.tcp", "sidecar", `unknown key "tcp"`}}},
		{"unknown key in restart_backoff",
			edit(t, base, 2, `restart_backoff = { reset = "1m" }`),
			[]wantErr{{2, 21, "restart_backoff.reset", "", `unknown key "reset"; did you mean "reset_after"?`}}},
		{"after is a list",
			edit(t, base, 2, `after = "db"`),
			[]wantErr{{2, 1, "after", "", `expected an array, found a string ("db")`}}},
		{"wrong type of a threshold",
			lifecycleEdit(t, "[container.liveness]", "tcp.port = 8080", `failure_threshold = "3"`),
			[]wantErr{{37, 3, "container[1].liveness.failure_threshold", "sidecar", "expected an integer"}}},
		{"wrong type of a factor",
			edit(t, base, 2, `restart_backoff.factor = "2"`),
			[]wantErr{{2, 17, "restart_backoff.factor", "", "expected a number"}}},
		{"probe timing the unit type refuses",
			lifecycleEdit(t, "[container.startup]", "tcp.port = 8080", "period = 10"),
			[]wantErr{{37, 3, "container[1].startup.period", "sidecar", `invalid duration "10"`}}},
		{"negative durations are refused",
			lifecycleEdit(t, "[container.startup]", "tcp.port = 8080", `initial_delay = "-1s"`),
			[]wantErr{{37, 3, "container[1].startup.initial_delay", "sidecar", `invalid duration "-1s": must not be negative`}}},
		{"probe written as a string",
			edit(t, base, 24, `  liveness = "http"`),
			[]wantErr{{24, 3, "container[1].liveness", "sidecar", "expected a table, found a string"}}},
		{"single [container] table instead of an array of tables",
			"name = \"web\"\n[container]\nname = \"app\"\n",
			[]wantErr{{2, 1, "container", "", "expected an array of tables, found a table; start each entry with its own [[container]] header"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("web.toml", []byte(tt.doc))
			checkErrors(t, err, tt.want...)
			// The group is known unless the file cannot be parsed or its
			// name is not a string.
			wantGroup := "web"
			if strings.HasPrefix(tt.want[0].msg, "invalid TOML") || tt.want[0].field == "name" {
				wantGroup = ""
			}
			var list ErrorList
			errors.As(err, &list)
			if list[0].Group != wantGroup {
				t.Errorf("group = %q, want %q", list[0].Group, wantGroup)
			}
		})
	}
}

func TestDecodeReportsEveryProblemSortedByPosition(t *testing.T) {
	t.Run("decoding problems", func(t *testing.T) {
		doc := edit(t, base,
			1, `name = "web"`,
			2, `restart_policy = "never"`,
			14, `image = 14`,
			23, `  env = { MODE = "demo", COUNT = 2 }`,
			34, `  memory = "lots"`)
		_, err := Decode("web.toml", []byte(doc))
		checkErrors(t, err,
			wantErr{2, 1, "restart_policy", "", `unknown key "restart_policy"`},
			wantErr{14, 1, "container[0].image", "app", "expected a string, found an integer (14)"},
			wantErr{23, 26, "container[1].env.COUNT", "sidecar", "expected a string, found an integer (2)"},
			wantErr{34, 3, "container[1].resources.memory", "sidecar", `invalid size "lots"`},
		)
	})
	t.Run("validation problems", func(t *testing.T) {
		doc := edit(t, base,
			2, `restart = "sometimes"`,
			9, `type = "ram"`,
			21, `  name = "app"`,
			30, `    volume = "cahce"`,
			34, `  memory = "1MiB"`)
		_, err := Decode("web.toml", []byte(doc))
		checkErrors(t, err,
			wantErr{2, 1, "restart", "", `"sometimes" is not a restart policy: use "always" (the default), "on-failure" or "never"`},
			wantErr{9, 1, "volume[1].type", "", `"ram" is not a volume type`},
			wantErr{21, 3, "container[1].name", "app", `container "app" is defined twice (first at web.toml:13:1)`},
			wantErr{30, 5, "container[1].mount[1].volume", "app", `volume "cahce" is not defined in this group; the group defines "data" and "cache"; did you mean "cache"?`},
			wantErr{34, 3, "container[1].resources.memory", "app", "memory 1MiB is below the minimum of 4MiB"},
		)
	})
}

func TestDecodeExampleFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil || len(files) < 3 {
		t.Fatalf("example files: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := Decode(f, data)
			if err != nil {
				t.Fatal(err)
			}
			if err := spec.Validate(); err != nil {
				t.Errorf("decoded spec does not validate: %v", err)
			}
		})
	}
}

// TestDecodeWebExample decodes the schema example of the docs and checks
// every field, defaults included.
func TestDecodeWebExample(t *testing.T) {
	data, err := os.ReadFile("testdata/web.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode("web.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := &GroupSpec{
		Schema:      1,
		Name:        "web",
		Priority:    Priority{Value: 100},
		GracePeriod: Duration(10 * time.Second),
		Restart:     RestartOnFailure,
		Labels:      map[string]string{"tier": "frontend"},
		RestartBackoff: BackoffSpec{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax,
			Factor: DefaultBackoffFactor, ResetAfter: DefaultBackoffReset},
		OnEvict: EvictWait,
		Volumes: []VolumeSpec{
			{Name: "data", Type: VolumeEmpty},
			{Name: "scratch", Type: VolumeTmpfs, Size: 64 << 20},
		},
		Containers: []ContainerSpec{
			{
				Name:       "app",
				Image:      "berth.local/testapp:latest",
				Command:    []string{"/testapp"},
				Args:       []string{"serve", "--listen", ":8080"},
				Env:        map[string]string{"MODE": "demo"},
				StopSignal: "SIGTERM",
				Mounts:     []MountSpec{{Volume: "data", Path: "/data"}},
				Resources:  ResourceSpec{CPU: 500, Memory: 128 << 20, Pids: 100},
			},
			{
				Name:    "sidecar",
				Image:   "berth.local/busybox:latest",
				Command: []string{"sh", "-c", "while true; do date >> /data/log; sleep 1; done"},
				Mounts:  []MountSpec{{Volume: "data", Path: "/data", ReadOnly: false}},
			},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
}

// TestDecodeLifecycleExample decodes the example of roles, probes, hooks,
// restart_backoff and after, and checks every field: what the file says,
// and the defaults filled where it says nothing (probe timing, the path of
// an HTTP action, the post_start timeout) or leaves a hook unbounded.
func TestDecodeLifecycleExample(t *testing.T) {
	data, err := os.ReadFile("testdata/lifecycle.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode("lifecycle.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	sec := func(n int) Duration { return Duration(time.Duration(n) * time.Second) }
	want := &GroupSpec{
		Schema:      1,
		Name:        "shop",
		GracePeriod: sec(45),
		Restart:     RestartAlways,
		After:       []string{"db", "cache"},
		RestartBackoff: BackoffSpec{Initial: sec(2), Max: sec(60), Factor: 1.5,
			ResetAfter: sec(300)},
		OnEvict: EvictWait,
		Containers: []ContainerSpec{
			{
				Name:    "migrate",
				Image:   "berth.local/shop:1",
				Role:    RoleInit,
				Command: []string{"/shop", "migrate"},
				PreStop: &Hook{Exec: &ExecAction{Command: []string{"/shop", "migrate", "--abort"}}},
			},
			{
				Name:  "proxy",
				Image: "berth.local/proxy:1",
				Role:  RoleSidecar,
				Readiness: &Probe{TCP: &TCPAction{Port: 8443},
					Period: sec(10), Timeout: sec(1), SuccessThreshold: 1, FailureThreshold: 3},
			},
			{
				Name:  "app",
				Image: "berth.local/shop:1",
				Role:  RoleMain,
				Startup: &Probe{HTTP: &HTTPAction{Path: "/started", Port: 8080},
					Period: sec(2), Timeout: sec(1), SuccessThreshold: 1, FailureThreshold: 30},
				Liveness: &Probe{HTTP: &HTTPAction{Path: "/", Port: 8080, Headers: map[string]string{"X-Probe": "liveness"}},
					InitialDelay: sec(5), Period: sec(20), Timeout: sec(2), SuccessThreshold: 1, FailureThreshold: 5},
				Readiness: &Probe{Exec: &ExecAction{Command: []string{"/shop", "ready"}},
					Period: sec(5), Timeout: sec(1), SuccessThreshold: 2, FailureThreshold: 3},
				PostStart: &Hook{HTTP: &HTTPAction{Path: "/warm", Port: 8080}, Timeout: sec(30)},
				PreStop:   &Hook{Exec: &ExecAction{Command: []string{"/shop", "drain"}}, Timeout: sec(20)},
			},
		},
	}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.MarshalIndent(got, "", "  ")
		wj, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("decoded\n%s\nwant\n%s", gj, wj)
	}
}

func TestDecodeFillsDefaults(t *testing.T) {
	got, err := Decode("min.toml", []byte("name = \"hello\"\n[[container]]\nname = \"hello\"\nimage = \"busybox\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Schema != 1 || got.Restart != RestartAlways || got.GracePeriod != DefaultGracePeriod || got.OnEvict != EvictWait {
		t.Errorf("schema %d restart %q grace_period %s on_evict %q; want 1, always, 30s, wait", got.Schema, got.Restart, got.GracePeriod, got.OnEvict)
	}
	if got.Preemptible != nil || !got.IsPreemptible() {
		t.Errorf("preemptible = %v; want unset, which is preemptible", got.Preemptible)
	}
	wantBackoff := BackoffSpec{Initial: Duration(time.Second), Max: Duration(5 * time.Minute), Factor: 2, ResetAfter: Duration(10 * time.Minute)}
	if got.RestartBackoff != wantBackoff {
		t.Errorf("restart_backoff = %+v, want %+v", got.RestartBackoff, wantBackoff)
	}
	if c := got.Containers[0]; c.Role != "" || c.Startup != nil || c.Liveness != nil || c.Readiness != nil || c.PostStart != nil || c.PreStop != nil {
		t.Errorf("container without probes or hooks gained some: %+v", c)
	}
}

func TestDecodeArraysOfInlineTables(t *testing.T) {
	doc := `name = "web"
volume = [{ name = "data", type = "empty" }]

[[container]]
name = "app"
image = "busybox"
mount = [{ volume = "data", path = "/a" }, { volume = "dta", path = "/b" }]
`
	_, err := Decode("web.toml", []byte(doc))
	checkErrors(t, err, wantErr{7, 46, "container[0].mount[1].volume", "app", `volume "dta" is not defined`})
}

func TestDecodeQuotedKeys(t *testing.T) {
	doc := edit(t, base, 23, `  env = { "A=B" = "x", "" = "y" }`)
	_, err := Decode("web.toml", []byte(doc))
	checkErrors(t, err,
		wantErr{23, 11, `container[1].env."A=B"`, "sidecar", `environment variable name "A=B" must not contain '='`},
		wantErr{23, 24, `container[1].env.""`, "sidecar", "environment variable names must not be empty"},
	)
}

func TestCloseKeySuggestions(t *testing.T) {
	keys := []string{"name", "image", "command", "args", "env", "working_dir", "user", "stop_signal", "mount", "resources"}
	for in, want := range map[string]string{
		"nmae": "name", "imgae": "image", "workingdir": "working_dir", "WorkingDir": "working_dir",
		"mounts": "mount", "stop-signal": "stop_signal", "resource": "resources", "x": "", "cmd": "", "entrypoint": "",
	} {
		if got := closest(in, keys); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecodeCRLF(t *testing.T) {
	doc := strings.ReplaceAll(edit(t, base, 22, `  image = 3`), "\n", "\r\n")
	_, err := Decode("web.toml", []byte(doc))
	checkErrors(t, err, wantErr{22, 3, "container[1].image", "sidecar", "expected a string"})
}

// TestPositionIndex looks up full key paths, with indices, in a file that
// uses every way TOML has to write a key.
func TestPositionIndex(t *testing.T) {
	doc := `name = "web"
labels.tier = "frontend"
"quoted.key" = 1

[[container]]
name = "a"
env = { A = "1", B.C = "2" }

[[container]]
name = "b"
mount = [ { volume = "v", path = "/p" },
          { volume = "w", path = "/q" } ]
args = [ "x",
  "y" ]
nested = [[1, 2], [3]]

  [container.resources]
  cpu = "1"

[[container]]
name = "c"
[[container.mount]]
volume = "v"
[[ container.mount ]]
volume = "w"
`
	x := indexPositions([]byte(doc))
	if x.err != nil {
		t.Fatalf("index: %v", x.err)
	}
	for path, want := range map[string]filePos{
		"name":                         {1, 1},
		"labels":                       {2, 1},
		"labels.tier":                  {2, 8},
		`"quoted.key"`:                 {3, 1},
		"container":                    {5, 3},
		"container[0]":                 {5, 1},
		"container[0].name":            {6, 1},
		"container[0].env":             {7, 1},
		"container[0].env.A":           {7, 9},
		"container[0].env.B":           {7, 18},
		"container[0].env.B.C":         {7, 20},
		"container[1]":                 {9, 1},
		"container[1].name":            {10, 1},
		"container[1].mount":           {11, 1},
		"container[1].mount[0]":        {11, 11},
		"container[1].mount[0].volume": {11, 13},
		"container[1].mount[1]":        {12, 11},
		"container[1].mount[1].path":   {12, 27},
		"container[1].args[0]":         {13, 10},
		"container[1].args[1]":         {14, 3},
		"container[1].nested[0]":       {15, 12},
		"container[1].nested[0][1]":    {15, 15},
		"container[1].nested[1][0]":    {15, 20},
		"container[1].resources":       {17, 3},
		"container[1].resources.cpu":   {18, 3},
		"container[2].mount[0]":        {22, 1},
		"container[2].mount[0].volume": {23, 1},
		"container[2].mount[1]":        {24, 1},
		"container[2].mount[1].volume": {25, 1},
	} {
		got, ok := x.lookup(path)
		if !ok || got != want {
			t.Errorf("lookup(%q) = %v %v, want %v", path, got, ok, want)
		}
	}
	// Paths not written in the file fall back to their closest parent,
	// then to 1:1.
	for path, want := range map[string]filePos{
		"container[1].mount[1].read_only": {12, 11},
		"container[2].image":              {20, 1},
		"container[7].name":               {5, 3},
		`labels."no such"`:                {2, 1},
		"schema":                          {1, 1},
		"":                                {1, 1},
	} {
		if got := x.locate(path); got != want {
			t.Errorf("locate(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestPositionIndexKeepsWhatItParsedBeforeAnError(t *testing.T) {
	x := indexPositions([]byte("name = \"web\"\n[[container]]\nname = \"a\"\nimage = = 1\n[[container]]\nname = \"b\"\n"))
	if x.err == nil {
		t.Fatal("no error for a broken file")
	}
	if got := x.locate("container[0].name"); got != (filePos{3, 1}) {
		t.Errorf("container[0].name at %v, want 3:1", got)
	}
	if got := x.locate("container[1].name"); got != (filePos{2, 3}) {
		t.Errorf("container[1].name at %v, want the closest parent, 2:3", got)
	}
}

func TestKeyPaths(t *testing.T) {
	p := pathKey(pathKey(pathIndex("container", 1), "env"), "a.b[0]")
	if p != `container[1].env."a.b[0]"` {
		t.Fatalf("pathKey = %s", p)
	}
	if got, _ := parentPath(p); got != "container[1].env" {
		t.Errorf("parentPath(%s) = %s", p, got)
	}
	if got, _ := parentPath("container[1]"); got != "container" {
		t.Errorf("parentPath(container[1]) = %s", got)
	}
	if got := unindexed(p); got != `container.env."a.b[0]"` {
		t.Errorf("unindexed(%s) = %s", p, got)
	}
	if i, ok := containerIndex(p); !ok || i != 1 {
		t.Errorf("containerIndex(%s) = %d %v", p, i, ok)
	}
}

// TestUndecodedKeysAreLocated covers the safety net behind the walk: keys
// BurntSushi/toml leaves undecoded are reported at every place they occur,
// once per unknown table rather than once per key inside it.
func TestUndecodedKeysAreLocated(t *testing.T) {
	data := []byte("name = \"x\"\nextra = 1\n[[container]]\nbogus = 1\n")
	var v struct {
		Name      string `toml:"name"`
		Container []struct {
			Name string `toml:"name"`
		} `toml:"container"`
	}
	md, err := toml.Decode(string(data), &v)
	if err != nil {
		t.Fatal(err)
	}
	errs := undecoded(md, indexPositions(data))
	if len(errs) != 2 || errs[0].Field != "extra" || errs[1].Field != "container[0].bogus" {
		t.Fatalf("undecoded = %v", errs)
	}
	errs = finish(errs, indexPositions(data), "x.toml", "x", nil)
	if errs[0].Line != 2 || errs[0].Col != 1 || errs[1].Line != 4 || errs[1].Col != 1 {
		t.Errorf("positions: %v", errs)
	}
}
