package api

import (
	"errors"
	"strings"
	"testing"
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
	if g.Schema != SchemaVersion || g.Restart != RestartAlways || g.GracePeriod != DefaultGracePeriod {
		t.Errorf("after SetDefaults: schema %d restart %q grace_period %s", g.Schema, g.Restart, g.GracePeriod)
	}
	if err := g.Validate(); err != nil {
		t.Fatalf("Validate() after SetDefaults = %v", err)
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
