package api

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestValidationRules edits one or two lines of base (see decode_test.go)
// per rule and asserts every error with its exact line and column. A case
// without errors proves the rule accepts what it should.
func TestValidationRules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name  string
		edits []any
		want  []wantErr
	}{
		// schema
		{"schema 2 is not supported", []any{2, `schema = 2`},
			[]wantErr{{2, 1, "schema", "", "schema 2 is not supported: this build reads schema 1; write schema = 1 or leave the key out"}}},
		{"schema 0 means 1", []any{2, `schema = 0`}, nil},
		{"schema 1", []any{2, `schema = 1`}, nil},

		// group name
		{"group name is required", []any{1, `# no name`},
			[]wantErr{{1, 1, "name", "", `the group needs a name: add name = "my-group"`}}},
		{"group name must be a DNS label", []any{1, `name = "Web_App"`},
			[]wantErr{{1, 1, "name", "", `"Web_App" is not a valid group name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. "web-app"`}}},
		{"group name of 64 characters", []any{1, `name = "` + long(64) + `"`},
			[]wantErr{{1, 1, "name", "", "is not a valid group name"}}},
		{"group name of 63 characters", []any{1, `name = "` + long(63) + `"`}, nil},

		// container names
		{"container name must be a DNS label", []any{21, `  name = "-sidecar"`},
			[]wantErr{{21, 3, "container[1].name", "-sidecar", `"-sidecar" is not a valid container name`}}},
		{"container name is required", []any{21, `  # no name`},
			[]wantErr{{20, 3, "container[1].name", "", "the container needs a name"}}},
		{"container name defined twice", []any{21, `  name = "app"`},
			[]wantErr{{21, 3, "container[1].name", "app", `container "app" is defined twice (first at web.toml:13:1); give each container its own name`}}},

		// volume names
		{"volume name defined twice", []any{8, `name = "data"`},
			[]wantErr{
				{8, 1, "volume[1].name", "", `volume "data" is defined twice (first at web.toml:4:1); give each volume its own name`},
				{30, 5, "container[1].mount[1].volume", "sidecar", `volume "cache" is not defined in this group`},
			}},
		{"volume name must be a DNS label", []any{8, `name = "Cache"`, 30, `    volume = "Cache"`},
			[]wantErr{{8, 1, "volume[1].name", "", `"Cache" is not a valid volume name`}}},
		{"volume name is required", []any{8, `# no name`, 30, `    volume = "data"`, 31, `    path = "/data2"`},
			[]wantErr{{7, 1, "volume[1].name", "", "the volume needs a name"}}},

		// containers and images
		{"image is required", []any{22, `  # no image`},
			[]wantErr{{20, 3, "container[1].image", "sidecar", `the container needs an image: add image = "registry/name:tag"`}}},
		{"image without whitespace", []any{22, `  image = "busy box"`},
			[]wantErr{{22, 3, "container[1].image", "sidecar", `image "busy box" must not contain whitespace`}}},
		{"image repository must be lowercase", []any{22, `  image = "berth.local/SideCar:1"`},
			[]wantErr{{22, 3, "container[1].image", "sidecar", "repository names must be lowercase"}}},
		{"image is not a URL", []any{22, `  image = "https://berth.local/sidecar:1"`},
			[]wantErr{{22, 3, "container[1].image", "sidecar", "is written as a URL"}}},
		{"image with an empty tag", []any{22, `  image = "berth.local/sidecar:"`},
			[]wantErr{{22, 3, "container[1].image", "sidecar", "is not a valid image reference"}}},

		// restart
		{"restart policy must be known", []any{2, `restart = "sometimes"`},
			[]wantErr{{2, 1, "restart", "", `"sometimes" is not a restart policy: use "always" (the default), "on-failure" or "never"`}}},
		{"restart always", []any{2, `restart = "always"`}, nil},
		{"restart on-failure", []any{2, `restart = "on-failure"`}, nil},
		{"restart never", []any{2, `restart = "never"`}, nil},

		// grace_period
		{"grace_period at most 1h", []any{2, `grace_period = "61m"`},
			[]wantErr{{2, 1, "grace_period", "", "grace_period 1h1m0s is longer than the maximum of 1h0m0s"}}},
		{"grace_period of 1h", []any{2, `grace_period = "1h"`}, nil},

		// volumes
		{"volume type is required", []any{9, `# no type`},
			[]wantErr{{7, 1, "volume[1].type", "", `the volume needs a type: add type = "empty", "host" or "tmpfs"`}}},
		{"volume type must be known", []any{9, `type = "ram"`},
			[]wantErr{{9, 1, "volume[1].type", "", `"ram" is not a volume type: use "empty"`}}},
		{"host volume needs a path", []any{5, `type = "host"`},
			[]wantErr{{3, 1, "volume[0].path", "", "a host volume needs the host path to bind"}}},
		{"host path must be absolute", []any{5, `type = "host"`, 6, `path = "srv/data"`},
			[]wantErr{{6, 1, "volume[0].path", "", `"srv/data" is not an absolute path`}}},
		{"host path without ..", []any{5, `type = "host"`, 6, `path = "/srv/../etc"`},
			[]wantErr{{6, 1, "volume[0].path", "", `"/srv/../etc" must not contain ".."`}}},
		{"host path must be clean", []any{5, `type = "host"`, 6, `path = "/srv//data/"`},
			[]wantErr{{6, 1, "volume[0].path", "", `"/srv//data/" is not a clean path: write "/srv/data"`}}},
		{"host volume", []any{5, `type = "host"`, 6, `path = "/srv/data"`}, nil},
		{"empty volume has no path", []any{6, `path = "/srv"`},
			[]wantErr{{6, 1, "volume[0].path", "", "path is only for host volumes; remove it"}}},
		{"tmpfs volume has no path", []any{11, `path = "/srv"`},
			[]wantErr{{11, 1, "volume[1].path", "", "path is only for host volumes"}}},
		{"tmpfs volume needs a size", []any{10, `# no size`},
			[]wantErr{{7, 1, "volume[1].size", "", `a tmpfs volume needs a size: add size = "64MiB"`}}},
		{"tmpfs size must not be 0", []any{10, `size = 0`},
			[]wantErr{{10, 1, "volume[1].size", "", "a tmpfs volume needs a size"}}},
		{"empty volume has no size", []any{6, `size = "1MiB"`},
			[]wantErr{{6, 1, "volume[0].size", "", "size only applies to tmpfs volumes; remove it"}}},

		// mounts
		{"mount volume must be defined", []any{30, `    volume = "cahce"`},
			[]wantErr{{30, 5, "container[1].mount[1].volume", "sidecar", `volume "cahce" is not defined in this group; the group defines "data" and "cache"; did you mean "cache"?`}}},
		{"mount volume is required", []any{30, `    # no volume`},
			[]wantErr{{29, 5, "container[1].mount[1].volume", "sidecar", `the mount needs a volume: add volume = "name" naming one of "data" and "cache"`}}},
		{"mount path is required", []any{31, `    # no path`},
			[]wantErr{{29, 5, "container[1].mount[1].path", "sidecar", "the mount needs a path in the container"}}},
		{"mount path must be absolute", []any{31, `    path = "cache"`},
			[]wantErr{{31, 5, "container[1].mount[1].path", "sidecar", `"cache" is not an absolute path: start it with '/'`}}},
		{"mount path without ..", []any{31, `    path = "/a/../cache"`},
			[]wantErr{{31, 5, "container[1].mount[1].path", "sidecar", `must not contain ".."`}}},
		{"mount path is not /", []any{31, `    path = "//"`},
			[]wantErr{{31, 5, "container[1].mount[1].path", "sidecar", `cannot mount over the container's root "/"`}}},
		{"mount path once per container", []any{31, `    path = "/data/"`},
			[]wantErr{{31, 5, "container[1].mount[1].path", "sidecar", `"/data/" is already mounted by mount[0] (at web.toml:27:5); mount each path once`}}},
		{"same path in two containers", []any{31, `    path = "/other"`, 18, `path = "/other"`}, nil},

		// env, working_dir, user
		{"env value without NUL", []any{23, `  env = { MODE = "a\u0000b" }`},
			[]wantErr{{23, 11, "container[1].env.MODE", "sidecar", "the value must not contain a NUL character"}}},
		{"working_dir must be absolute", []any{24, `  working_dir = "app"`},
			[]wantErr{{24, 3, "container[1].working_dir", "sidecar", `working_dir "app" must be an absolute path`}}},
		{"working_dir", []any{24, `  working_dir = "/app"`}, nil},
		{"empty stop_signal is the default", []any{24, `  stop_signal = ""`}, nil},
		{"user is not a name", []any{24, `  user = "nobody"`},
			[]wantErr{{24, 3, "container[1].user", "sidecar", `user "nobody" uses a name: Berth does not read the image's /etc/passwd`}}},
		{"group is not a name", []any{24, `  user = "1000:staff"`},
			[]wantErr{{24, 3, "container[1].user", "sidecar", "uses a name"}}},
		{"user is uid or uid:gid", []any{24, `  user = "1:2:3"`},
			[]wantErr{{24, 3, "container[1].user", "sidecar", `user "1:2:3" is not "uid" or "uid:gid" with numeric ids`}}},
		{"user uid", []any{24, `  user = "0"`}, nil},
		{"user uid:gid", []any{24, `  user = "65534:65534"`}, nil},

		// resources
		{"memory at least 4MiB", []any{34, `  memory = "1MiB"`},
			[]wantErr{{34, 3, "container[1].resources.memory", "sidecar", "memory 1MiB is below the minimum of 4MiB; raise it, or write 0 for no limit"}}},
		{"memory 4MiB", []any{34, `  memory = "4MiB"`}, nil},
		{"memory 0 is no limit", []any{34, `  memory = 0`}, nil},
		{"pids not negative", []any{34, `  pids = -1`},
			[]wantErr{{34, 3, "container[1].resources.pids", "sidecar", "pids must not be negative"}}},

		// requests
		{"memory request above the limit", []any{34, "  memory = \"256MiB\"\n  requests.memory = \"512MiB\""},
			[]wantErr{{35, 12, "container[1].resources.requests.memory", "sidecar", "requests.memory 512MiB is above the limit memory 256MiB; lower the request or raise the limit"}}},
		{"cpu request above the limit", []any{34, "  cpu = \"500m\"\n  requests = { cpu = 2 }"},
			[]wantErr{{35, 16, "container[1].resources.requests.cpu", "sidecar", "requests.cpu 2 is above the limit cpu 500m; lower the request or raise the limit"}}},
		{"requests in their own table", []any{35, "  [container.resources.requests]\n  cpu = \"250m\"\n  memory = \"65MiB\""},
			[]wantErr{{37, 3, "container[1].resources.requests.memory", "sidecar", "requests.memory 65MiB is above the limit memory 64MiB"}}},
		{"requests equal to the limits", []any{34, "  cpu = 1\n  memory = \"64MiB\"\n  requests = { cpu = \"1000m\", memory = 67108864 }"}, nil},
		{"requests below the limits", []any{34, "  cpu = 2\n  memory = \"1GiB\"\n  requests = { cpu = \"500m\", memory = \"256MiB\" }"}, nil},
		{"requests without a limit", []any{34, "  memory = 0\n  requests = { cpu = \"250m\", memory = \"2GiB\" }"}, nil},
		{"requests of 0 stand for the limits", []any{34, "  requests = { cpu = 0, memory = 0 }"}, nil},

		// preemptible, on_evict
		{"on_evict must be known", []any{2, `on_evict = "pause"`},
			[]wantErr{{2, 1, "on_evict", "", `"pause" is not an on_evict policy: use "wait" (the default: the group starts again when there is room) or "stop" (it stays stopped until you start it)`}}},
		{"misspelled on_evict suggests the closest", []any{2, `on_evict = "Stop"`},
			[]wantErr{{2, 1, "on_evict", "", `did you mean "stop"?`}}},
		{"on_evict wait", []any{2, `on_evict = "wait"`}, nil},
		{"on_evict stop", []any{2, "on_evict = \"stop\"\npreemptible = false"}, nil},
		{"preemptible", []any{2, "preemptible = true"}, nil},

		// labels
		{"label key characters", []any{2, `labels = { "bad key" = "x" }`},
			[]wantErr{{2, 12, `labels."bad key"`, "", `label key "bad key" may only contain letters, digits, '.', '_', '/' and '-'`}}},
		{"label key not empty", []any{2, `labels = { "" = "x" }`},
			[]wantErr{{2, 12, `labels.""`, "", "label keys must not be empty"}}},
		{"label key at most 63", []any{2, `labels = { ` + long(64) + ` = "x" }`},
			[]wantErr{{2, 12, "labels." + long(64), "", "label key is 64 characters long; the limit is 63"}}},
		{"label value at most 255", []any{2, `labels.tier = "` + long(256) + `"`},
			[]wantErr{{2, 8, "labels.tier", "", "label value is 256 characters long; the limit is 255"}}},
		{"label keys", []any{2, `labels = { "app.example.com/Name_1" = "` + long(255) + `" }`}, nil},

		// role
		{"role must be known", []any{24, `  role = "worker"`},
			[]wantErr{{24, 3, "container[1].role", "sidecar", `"worker" is not a role: use "main" (the default), "sidecar" (starts first and must be ready before the main containers) or "init" (runs to completion before the others start)`}}},
		{"misspelled role suggests the closest", []any{24, `  role = "Sidecar"`},
			[]wantErr{{24, 3, "container[1].role", "sidecar", `did you mean "sidecar"?`}}},
		{"role main", []any{24, `  role = "main"`}, nil},
		{"role sidecar", []any{24, `  role = "sidecar"`}, nil},
		{"role init", []any{24, `  role = "init"`}, nil},
		{"init container takes no liveness probe", probeEdit(`  role = "init"`, "[container.liveness]", "tcp.port = 8080"),
			[]wantErr{{35, 3, "container[1].liveness", "sidecar", `an init container runs to completion, so it takes no liveness probe: remove it, or make the container role = "sidecar" or "main"`}}},
		{"init container takes no startup probe", []any{24, `  role = "init"`, 23, `  startup = { exec.command = ["true"] }`},
			[]wantErr{{23, 3, "container[1].startup", "sidecar", "so it takes no startup probe"}}},
		{"init container takes no readiness probe", probeEdit(`  role = "init"`, "[container.readiness.tcp]", "port = 8080"),
			[]wantErr{{35, 14, "container[1].readiness", "sidecar", "so it takes no readiness probe"}}},
		{"init container takes no post_start hook", probeEdit(`  role = "init"`, "[container.post_start.exec]", `command = ["true"]`),
			[]wantErr{{35, 14, "container[1].post_start", "sidecar", "so it takes no post_start hook"}}},
		{"init container may have a pre_stop hook", probeEdit(`  role = "init"`, "[container.pre_stop.exec]", `command = ["true"]`), nil},
		{"a group needs a container that is not init", []any{15, `role = "init"`, 24, `  role = "init"`},
			[]wantErr{{24, 3, "container[1].role", "sidecar", `every container of the group is an init container, and init containers only run to completion before the others start: make at least one container role = "main" (the default) or "sidecar"`}}},

		// probes: actions
		{"probe needs an action", probeEdit("", "[container.liveness]", `period = "5s"`),
			[]wantErr{{35, 3, "container[1].liveness", "sidecar", `a probe needs exactly one of http, tcp or exec, and this liveness probe has none: add one under [container.liveness], e.g. http = { path = "/healthz", port = 8080 }`}}},
		{"probe has one action", probeEdit("", "[container.readiness]", "tcp = { port = 8080 }", "http = { port = 8080 }"),
			[]wantErr{{37, 3, "container[1].readiness.http", "sidecar", "a probe needs exactly one of http, tcp or exec, and this readiness probe already has tcp (at web.toml:36:3): remove one of them"}}},
		{"every extra action is reported", probeEdit("", "[container.startup]", `exec.command = ["true"]`, "tcp.port = 1", "http.port = 1"),
			[]wantErr{
				{37, 3, "container[1].startup.tcp", "sidecar", "this startup probe already has exec (at web.toml:36:3)"},
				{38, 3, "container[1].startup.http", "sidecar", "this startup probe already has exec (at web.toml:36:3)"},
			}},
		{"http path starts with /", probeEdit("", "[container.liveness.http]", `path = "healthz"`, "port = 8080"),
			[]wantErr{{36, 3, "container[1].liveness.http.path", "sidecar", `path "healthz" must start with '/', like "/healthz"`}}},
		{"http path without spaces", probeEdit("", "[container.liveness.http]", `path = "/health z"`, "port = 8080"),
			[]wantErr{{36, 3, "container[1].liveness.http.path", "sidecar", `path "/health z" must not contain spaces or control characters: percent-encode them, like %20`}}},
		{"http path with a query", probeEdit("", "[container.liveness.http]", `path = "/health?full=1"`, "port = 8080"), nil},
		{"http needs a port", probeEdit("", "[container.liveness.http]", `path = "/healthz"`),
			[]wantErr{{35, 3, "container[1].liveness.http.port", "sidecar", "the http action needs a port: add port = 8080"}}},
		{"http port at most 65535", probeEdit("", "[container.readiness]", "http = { port = 65536 }"),
			[]wantErr{{36, 12, "container[1].readiness.http.port", "sidecar", "port 65536 is out of range: use a port from 1 to 65535"}}},
		{"http port 65535", probeEdit("", "[container.readiness]", "http = { port = 65535 }"), nil},
		{"header name is a token", probeEdit("", "[container.readiness.http]", "port = 8080", `headers = { "X Probe" = "1" }`),
			[]wantErr{{37, 15, `container[1].readiness.http.headers."X Probe"`, "sidecar", "header name \"X Probe\" may only contain letters, digits and !#$%&'*+-.^_`|~"}}},
		{"header name not empty", probeEdit("", "[container.readiness.http]", "port = 8080", `headers = { "" = "1" }`),
			[]wantErr{{37, 15, `container[1].readiness.http.headers.""`, "sidecar", "header names must not be empty"}}},
		{"header value without line breaks", probeEdit("", "[container.readiness.http.headers]", `X-A = "a\r\nX-B: b"`, "[container.readiness.http]", "port = 1"),
			[]wantErr{{36, 3, "container[1].readiness.http.headers.X-A", "sidecar", "the header value must not contain control characters such as line breaks"}}},
		{"headers", probeEdit("", "[container.readiness.http]", "port = 8080", `headers = { X-Probe = "1", "Accept" = "text/plain\tq=1", "x_y.z~" = "" }`), nil},
		{"tcp needs a port", probeEdit("", "[container.liveness.tcp]", "port = 0"),
			[]wantErr{{36, 3, "container[1].liveness.tcp.port", "sidecar", "the tcp action needs a port"}}},
		{"tcp port at least 1", probeEdit("", "[container.liveness.tcp]", "port = -80"),
			[]wantErr{{36, 3, "container[1].liveness.tcp.port", "sidecar", "port -80 is out of range"}}},
		{"exec needs a command", probeEdit("", "[container.liveness.exec]", "command = []"),
			[]wantErr{{36, 3, "container[1].liveness.exec.command", "sidecar", `the exec action needs a command: add command = ["/bin/check"], or ["sh", "-c", "..."] for a shell`}}},
		{"exec command written at all", probeEdit("", "[container.liveness.exec]"),
			[]wantErr{{35, 3, "container[1].liveness.exec.command", "sidecar", "the exec action needs a command"}}},
		{"exec program not empty", probeEdit("", "[container.liveness.exec]", `command = ["", "x"]`),
			[]wantErr{{36, 14, "container[1].liveness.exec.command[0]", "sidecar", `the program to run must not be empty: write its path, like "/bin/check"`}}},

		// probes: timing
		{"timeout at most period", probeEdit("", "[container.liveness]", "tcp.port = 1", `period = "1s"`, `timeout = "1500ms"`),
			[]wantErr{{38, 3, "container[1].liveness.timeout", "sidecar", "timeout 1.5s is longer than period 1s: a check must end before the next one starts; shorten timeout or lengthen period"}}},
		{"default timeout longer than period blames period", probeEdit("", "[container.liveness]", "tcp.port = 1", `period = "500ms"`),
			[]wantErr{{37, 3, "container[1].liveness.period", "sidecar", "timeout 1s is longer than period 500ms"}}},
		{"timeout longer than default period", probeEdit("", "[container.readiness]", "tcp.port = 1", `timeout = "11s"`),
			[]wantErr{{37, 3, "container[1].readiness.timeout", "sidecar", "timeout 11s is longer than period 10s"}}},
		{"timeout equal to period", probeEdit("", "[container.liveness]", "tcp.port = 1", `period = "2s"`, `timeout = "2s"`), nil},
		{"zero timing is the default", probeEdit("", "[container.liveness]", "tcp.port = 1", `period = "0s"`, `timeout = "0s"`, `initial_delay = "0s"`), nil},
		{"failure_threshold at least 1", probeEdit("", "[container.readiness]", "tcp.port = 1", "failure_threshold = -1"),
			[]wantErr{{37, 3, "container[1].readiness.failure_threshold", "sidecar", "failure_threshold must be at least 1: leave it out for the default 3"}}},
		{"success_threshold at least 1", probeEdit("", "[container.readiness]", "tcp.port = 1", "success_threshold = -2"),
			[]wantErr{{37, 3, "container[1].readiness.success_threshold", "sidecar", "success_threshold must be at least 1: leave it out for the default 1"}}},
		{"liveness success_threshold is 1", probeEdit("", "[container.liveness]", "tcp.port = 1", "success_threshold = 2"),
			[]wantErr{{37, 3, "container[1].liveness.success_threshold", "sidecar", "success_threshold of a liveness probe must be 1, as kubelet requires (one success is what counts): remove it, or write 1"}}},
		{"startup success_threshold is 1", probeEdit("", "[container.startup]", "tcp.port = 1", "success_threshold = 3"),
			[]wantErr{{37, 3, "container[1].startup.success_threshold", "sidecar", "success_threshold of a startup probe must be 1"}}},
		{"liveness success_threshold 1", probeEdit("", "[container.liveness]", "tcp.port = 1", "success_threshold = 1", "failure_threshold = 1"), nil},
		{"readiness success_threshold above 1", probeEdit("", "[container.readiness]", "tcp.port = 1", "success_threshold = 3"), nil},

		// hooks
		{"hook needs an action", probeEdit("", "[container.post_start]", `timeout = "5s"`),
			[]wantErr{{35, 3, "container[1].post_start", "sidecar", "a hook needs exactly one of http or exec, and this post_start hook has none: add one under [container.post_start]"}}},
		{"hook has one action", probeEdit("", "[container.pre_stop]", `exec.command = ["drain"]`, "http.port = 8080"),
			[]wantErr{{37, 3, "container[1].pre_stop.http", "sidecar", "a hook needs exactly one of http or exec, and this pre_stop hook already has exec (at web.toml:36:3): remove one of them"}}},
		{"hook http path starts with /", probeEdit("", "[container.pre_stop.http]", `path = "drain"`, "port = 8080"),
			[]wantErr{{36, 3, "container[1].pre_stop.http.path", "sidecar", `path "drain" must start with '/'`}}},
		{"hook http needs a port", probeEdit("", "[container.post_start.http]", `path = "/warm"`),
			[]wantErr{{35, 3, "container[1].post_start.http.port", "sidecar", "the http action needs a port"}}},
		{"hook exec needs a command", probeEdit("", "[container.post_start]", "exec = { command = [] }"),
			[]wantErr{{36, 12, "container[1].post_start.exec.command", "sidecar", "the exec action needs a command"}}},
		{"hooks", probeEdit("", "[container.post_start]", `exec.command = ["warm"]`, `timeout = "1m"`, "[container.pre_stop.http]", `path = "/drain"`, "port = 8080", `headers.Authorization = "token"`), nil},

		// restart_backoff
		{"backoff max at least initial", []any{2, `restart_backoff = { initial = "10s", max = "5s" }`},
			[]wantErr{{2, 38, "restart_backoff.max", "", "max 5s is shorter than initial 10s: the delay starts at initial and grows up to max; raise max or lower initial"}}},
		{"backoff initial above the default max", []any{2, `restart_backoff.initial = "6m"`},
			[]wantErr{{2, 17, "restart_backoff.initial", "", "max 5m0s is shorter than initial 6m0s"}}},
		{"backoff max below the default initial", []any{35, "[restart_backoff]\nmax = \"500ms\""},
			[]wantErr{{36, 1, "restart_backoff.max", "", "max 500ms is shorter than initial 1s"}}},
		{"backoff max equal to initial", []any{2, `restart_backoff = { initial = "3s", max = "3s" }`}, nil},
		{"backoff factor at least 1", []any{35, "[restart_backoff]\nfactor = 0.5"},
			[]wantErr{{36, 1, "restart_backoff.factor", "", "factor 0.5 is out of range: use a number from 1 (the same delay every time) to 100; the default is 2"}}},
		{"backoff factor at most 100", []any{2, "restart_backoff.factor = 101"},
			[]wantErr{{2, 17, "restart_backoff.factor", "", "factor 101 is out of range"}}},
		{"backoff factor not negative", []any{2, "restart_backoff.factor = -2.0"},
			[]wantErr{{2, 17, "restart_backoff.factor", "", "factor -2 is out of range"}}},
		{"backoff factor is a number", []any{2, "restart_backoff.factor = nan"},
			[]wantErr{{2, 17, "restart_backoff.factor", "", "factor NaN is out of range"}}},
		{"backoff factor not infinite", []any{2, "restart_backoff.factor = inf"},
			[]wantErr{{2, 17, "restart_backoff.factor", "", "factor +Inf is out of range"}}},
		{"backoff factor 1", []any{2, "restart_backoff.factor = 1"}, nil},
		{"backoff factor 100", []any{2, "restart_backoff.factor = 100.0"}, nil},
		{"backoff zeros are the defaults", []any{2, `restart_backoff = { initial = "0s", max = "0s", factor = 0, reset_after = "0s" }`}, nil},

		// after
		{"after lists valid group names", []any{2, `after = ["db", "Cache_1"]`},
			[]wantErr{{2, 16, "after[1]", "", `"Cache_1" is not a valid group name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. "cache-1"`}}},
		{"after names not empty", []any{2, `after = ["db", ""]`},
			[]wantErr{{2, 16, "after[1]", "", "after lists an empty name: write the name of a local group, or remove the entry"}}},
		{"after not the group itself", []any{2, `after = ["web"]`},
			[]wantErr{{2, 10, "after[0]", "", `group "web" cannot wait for itself: remove it from after`}}},
		{"after without duplicates", []any{2, `after = ["db", "cache", "db", "cache"]`},
			[]wantErr{
				{2, 25, "after[2]", "", `group "db" is listed twice (first at web.toml:2:10); list each group once`},
				{2, 31, "after[3]", "", `group "cache" is listed twice (first at web.toml:2:16)`},
			}},
		{"after on several lines", []any{2, "after = [\n  \"db\",\n  \"db\",\n]"},
			[]wantErr{{4, 3, "after[1]", "", `group "db" is listed twice (first at web.toml:3:3)`}}},
		{"after", []any{2, `after = ["db", "cache-1"]`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("web.toml", []byte(edit(t, base, tt.edits...)))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("valid file refused: %v", err)
				}
				return
			}
			checkErrors(t, err, tt.want...)
		})
	}
}

// probeEdit sets line 24 of base (a blank line in the 2nd container) to
// line24 and appends lines to that container from line 35 on, indented
// like it.
func probeEdit(line24 string, lines ...string) []any {
	return []any{24, line24, 35, "  " + strings.Join(lines, "\n  ")}
}

func TestValidateNeedsAContainer(t *testing.T) {
	_, err := Decode("web.toml", []byte("name = \"web\"\n"))
	checkErrors(t, err, wantErr{1, 1, "container", "", "a group needs at least one container: add a [[container]] table"})
}

// TestValidateWithoutPositions validates a spec that came from code or
// JSON: errors name the field, group and container, with no position.
func TestValidateWithoutPositions(t *testing.T) {
	g := GroupSpec{
		Name:     "web",
		Priority: Priority{Class: "Not A Class"},
		Containers: []ContainerSpec{
			{Name: "app", Image: "busybox", Resources: ResourceSpec{CPU: -1}},
			{Name: "app", Image: "busybox", StopSignal: "SIGNOPE"},
		},
	}
	err := g.Validate()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Validate() = %v, want an ErrorList", err)
	}
	want := []FieldError{
		{Group: "web", Field: "priority", Message: `invalid priority class "Not A Class"`},
		{Group: "web", Container: "app", Field: "container[1].name", Message: `container "app" is defined twice (first at container[0].name)`},
		{Group: "web", Container: "app", Field: "container[0].resources.cpu", Message: "cpu must not be negative"},
		{Group: "web", Container: "app", Field: "container[1].stop_signal", Message: `invalid signal "SIGNOPE"`},
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		e := list[i]
		if e.File != "" || e.Line != 0 || e.Col != 0 || e.Group != w.Group || e.Container != w.Container || e.Field != w.Field ||
			!strings.Contains(e.Message, w.Message) {
			t.Errorf("error %d = %+v, want %+v", i, *e, w)
		}
	}
}

func TestValidateAcceptsZeroDefaults(t *testing.T) {
	g := GroupSpec{Name: "web", Containers: []ContainerSpec{{Name: "app", Image: "busybox"}}}
	if err := g.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	g.SetDefaults()
	if g.Schema != SchemaVersion || g.Restart != RestartAlways || g.GracePeriod != DefaultGracePeriod || g.OnEvict != EvictWait {
		t.Errorf("after SetDefaults: schema %d restart %q grace_period %s on_evict %q", g.Schema, g.Restart, g.GracePeriod, g.OnEvict)
	}
	if err := g.Validate(); err != nil {
		t.Fatalf("Validate() after SetDefaults = %v", err)
	}
}

// TestValidateResourcesWithoutPositions covers what only a spec from code
// or JSON can hold, negative requests (a file's are refused when decoded),
// with the other resource rules on such a spec.
func TestValidateResourcesWithoutPositions(t *testing.T) {
	g := GroupSpec{
		Name:    "web",
		OnEvict: "later",
		Containers: []ContainerSpec{
			{Name: "app", Image: "busybox", Resources: ResourceSpec{Requests: RequestSpec{CPU: -1, Memory: -1}}},
			{Name: "side", Image: "busybox", Resources: ResourceSpec{CPU: 100, Memory: 64 << 20,
				Requests: RequestSpec{CPU: 1500, Memory: 64<<20 + 1}}},
		},
	}
	err := g.Validate()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Validate() = %v, want an ErrorList", err)
	}
	want := []FieldError{
		{Field: "on_evict", Message: `"later" is not an on_evict policy`},
		{Container: "app", Field: "container[0].resources.requests.cpu", Message: "requests.cpu must not be negative: leave it out to request the limit"},
		{Container: "app", Field: "container[0].resources.requests.memory", Message: "requests.memory must not be negative: leave it out to request the limit"},
		{Container: "side", Field: "container[1].resources.requests.cpu", Message: "requests.cpu 1500m is above the limit cpu 100m; lower the request or raise the limit"},
		{Container: "side", Field: "container[1].resources.requests.memory", Message: "requests.memory 67108865 is above the limit memory 64MiB"},
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		e := list[i]
		if e.Line != 0 || e.Group != "web" || e.Container != w.Container || e.Field != w.Field || !strings.Contains(e.Message, w.Message) {
			t.Errorf("error %d = %+v, want %+v", i, *e, w)
		}
	}
}

// TestValidateLifecycleWithoutPositions covers what only a spec from code
// or JSON can hold, negative durations (a file's are refused when decoded),
// and the rules of roles, probes and hooks on such a spec.
func TestValidateLifecycleWithoutPositions(t *testing.T) {
	g := GroupSpec{
		Name:           "batch",
		RestartBackoff: BackoffSpec{Initial: -1, Max: -1, ResetAfter: -1},
		Containers: []ContainerSpec{
			{Name: "setup", Image: "busybox", Role: RoleInit,
				Liveness:  &Probe{InitialDelay: -1, Period: -1, Timeout: -1},
				PostStart: &Hook{Exec: &ExecAction{Command: []string{"true"}}, Timeout: -1}},
			{Name: "job", Image: "busybox", Role: RoleInit,
				PreStop: &Hook{HTTP: &HTTPAction{Port: 8080}, Timeout: -1}},
		},
	}
	err := g.Validate()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Validate() = %v, want an ErrorList", err)
	}
	want := []FieldError{
		{Field: "restart_backoff.initial", Message: "initial must be more than 0: leave it out for the default 1s"},
		{Field: "restart_backoff.max", Message: "max must be more than 0: leave it out for the default 5m0s"},
		{Field: "restart_backoff.reset_after", Message: "reset_after must be more than 0: leave it out for the default 10m0s"},
		{Container: "setup", Field: "container[0].liveness", Message: "an init container runs to completion, so it takes no liveness probe"},
		{Container: "setup", Field: "container[0].post_start", Message: "an init container runs to completion, so it takes no post_start hook"},
		{Container: "setup", Field: "container[0].liveness", Message: "a probe needs exactly one of http, tcp or exec, and this liveness probe has none"},
		{Container: "setup", Field: "container[0].liveness.initial_delay", Message: "initial_delay must not be negative"},
		{Container: "setup", Field: "container[0].liveness.period", Message: "period must be more than 0: leave it out for the default 10s"},
		{Container: "setup", Field: "container[0].liveness.timeout", Message: "timeout must be more than 0: leave it out for the default 1s"},
		{Container: "setup", Field: "container[0].post_start.timeout", Message: "timeout must be more than 0: leave it out for the default 30s"},
		{Container: "job", Field: "container[1].pre_stop.timeout", Message: "timeout must be more than 0: leave it out to bound it by the group's grace_period"},
		{Container: "job", Field: "container[1].role", Message: "every container of the group is an init container"},
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		e := list[i]
		if e.Line != 0 || e.Group != "batch" || e.Container != w.Container || e.Field != w.Field || !strings.Contains(e.Message, w.Message) {
			t.Errorf("error %d = %+v, want %+v", i, *e, w)
		}
	}
}

// TestSetDefaultsLifecycle proves that SetDefaults fills the zero timing
// of probes, the post_start timeout, the path of HTTP actions and
// restart_backoff; keeps what is set; leaves absent probes and hooks
// absent and a pre_stop hook bounded by the grace period; and that the
// spec is valid before and after.
func TestSetDefaultsLifecycle(t *testing.T) {
	g := GroupSpec{
		Name:           "web",
		RestartBackoff: BackoffSpec{Max: Duration(time.Minute)},
		Containers: []ContainerSpec{
			{Name: "app", Image: "busybox",
				Liveness:  &Probe{TCP: &TCPAction{Port: 8080}},
				Readiness: &Probe{HTTP: &HTTPAction{Port: 8080}, Period: Duration(3 * time.Second), SuccessThreshold: 2},
				PostStart: &Hook{HTTP: &HTTPAction{Path: "/warm", Port: 8080}},
				PreStop:   &Hook{HTTP: &HTTPAction{Port: 8080}}},
			{Name: "side", Image: "busybox", Role: RoleSidecar},
		},
	}
	if err := g.Validate(); err != nil {
		t.Fatalf("Validate() before SetDefaults = %v", err)
	}
	g.SetDefaults()
	if err := g.Validate(); err != nil {
		t.Fatalf("Validate() after SetDefaults = %v", err)
	}
	sec := func(n int) Duration { return Duration(time.Duration(n) * time.Second) }
	if want := (BackoffSpec{Initial: sec(1), Max: sec(60), Factor: 2, ResetAfter: sec(600)}); g.RestartBackoff != want {
		t.Errorf("restart_backoff = %+v, want %+v", g.RestartBackoff, want)
	}
	app := g.Containers[0]
	if want := (Probe{TCP: app.Liveness.TCP, Period: sec(10), Timeout: sec(1), SuccessThreshold: 1, FailureThreshold: 3}); *app.Liveness != want {
		t.Errorf("liveness = %+v, want %+v", *app.Liveness, want)
	}
	if want := (Probe{HTTP: app.Readiness.HTTP, Period: sec(3), Timeout: sec(1), SuccessThreshold: 2, FailureThreshold: 3}); *app.Readiness != want {
		t.Errorf("readiness = %+v, want %+v", *app.Readiness, want)
	}
	if app.Readiness.HTTP.Path != "/" || app.PreStop.HTTP.Path != "/" || app.PostStart.HTTP.Path != "/warm" {
		t.Errorf("http paths: readiness %q pre_stop %q post_start %q; want /, /, /warm",
			app.Readiness.HTTP.Path, app.PreStop.HTTP.Path, app.PostStart.HTTP.Path)
	}
	if app.PostStart.Timeout != sec(30) || app.PreStop.Timeout != 0 {
		t.Errorf("post_start timeout %s, pre_stop timeout %s; want 30s and 0 (the grace period)", app.PostStart.Timeout, app.PreStop.Timeout)
	}
	if app.Startup != nil || app.Role != "" {
		t.Errorf("startup %+v role %q; want none and unset", app.Startup, app.Role)
	}
	if side := g.Containers[1]; side.Startup != nil || side.Liveness != nil || side.Readiness != nil || side.PostStart != nil || side.PreStop != nil {
		t.Errorf("container without probes or hooks gained some: %+v", side)
	}
}

func TestImageReferences(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	for _, ref := range []string{
		"busybox", "busybox:1.36", "docker.io/library/busybox:1.36", "localhost:5000/a/b:tag",
		"berth.local/testapp:latest", "ghcr.io/org/repo_name/sub-img:v1.0.0-rc1", "Registry.Example.com/x",
		"busybox@" + digest, "busybox:1.36@" + digest, "[::1]:5000/img", "a__b/c--d/e.f",
	} {
		if msg := imageProblem(ref); msg != "" {
			t.Errorf("imageProblem(%q) = %q, want valid", ref, msg)
		}
	}
	for _, ref := range []string{
		"", "busybox:", ":tag", "a//b", "-abc/x", "busybox:-tag", "busybox@sha256:xyz", "a_/b", "busybox:" + strings.Repeat("t", 129),
	} {
		if msg := imageProblem(ref); msg == "" {
			t.Errorf("imageProblem(%q) accepted an invalid reference", ref)
		}
	}
}

func TestLabelLike(t *testing.T) {
	for in, want := range map[string]string{
		"My_App": "my-app", "--web--": "web", "web": "web", "__": "", "a.b.c": "a-b-c",
	} {
		if got := labelLike(in); got != want {
			t.Errorf("labelLike(%q) = %q, want %q", in, got, want)
		}
	}
}
