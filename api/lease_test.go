package api

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestLeaseRules decodes base with [[lease]] tables added from line 35 on
// and asserts every error with its exact line and column; a case without
// errors proves the rule accepts what it should.
func TestLeaseRules(t *testing.T) {
	lease := func(lines ...string) []any { return ambassadorEdit(append([]string{"[[lease]]"}, lines...)...) }
	tests := []struct {
		name  string
		edits []any
		want  []wantErr
	}{
		{"a name is enough", lease(`name = "leader"`), nil},
		{"every key", lease(`name = "leader"`, `on_lose = "restart"`, "shared = true", `ttl = "10s"`), nil},
		{"shard ownership names", lease(`name = "shard-3"`), nil},

		{"name is required", lease(`on_lose = "notify"`),
			[]wantErr{{35, 1, "lease[0].name", "", `the lease needs a name: add name = "my-lease"`}}},
		{"name is a DNS label", lease(`name = "Leader_1"`),
			[]wantErr{{36, 1, "lease[0].name", "", `"Leader_1" is not a valid lease name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. "leader-1"`}}},
		{"name used twice", ambassadorEdit("[[lease]]", `name = "leader"`, "[[lease]]", `name = "leader"`),
			[]wantErr{{38, 1, "lease[1].name", "", `lease "leader" is defined twice (first at web.toml:36:1); give each lease its own name`}}},

		{"on_lose must be known", lease(`name = "leader"`, `on_lose = "exit"`),
			[]wantErr{{37, 1, "lease[0].on_lose", "", `"exit" is not an on_lose policy: use "notify" (the default: the holder is told over the downward API) or "restart" (the holder container is restarted)`}}},
		{"misspelled on_lose suggests the closest", lease(`name = "leader"`, `on_lose = "restrat"`),
			[]wantErr{{37, 1, "lease[0].on_lose", "", `did you mean "restart"?`}}},

		{"ttl below the minimum", lease(`name = "leader"`, `ttl = "500ms"`),
			[]wantErr{{37, 1, "lease[0].ttl", "", "ttl 500ms is shorter than the minimum of 1s: a holder could not renew in time"}}},
		{"ttl above the maximum", lease(`name = "leader"`, `ttl = "1h"`),
			[]wantErr{{37, 1, "lease[0].ttl", "", "ttl 1h0m0s is longer than the maximum of 5m0s"}}},
		{"negative ttl", lease(`name = "leader"`, `ttl = "-1s"`),
			[]wantErr{{37, 1, "lease[0].ttl", "", `invalid duration "-1s": must not be negative`}}},
		{"ttl that is not a duration", lease(`name = "leader"`, "ttl = 5"),
			[]wantErr{{37, 1, "lease[0].ttl", "", `invalid duration "5": write it like "10s"`}}},
		{"shared must be a boolean", lease(`name = "leader"`, `shared = "yes"`),
			[]wantErr{{37, 1, "lease[0].shared", "", "wrong type: expected a boolean"}}},
		{"unknown key", lease(`name = "leader"`, `tll = "5s"`),
			[]wantErr{{37, 1, "lease[0].tll", "", `unknown key "tll"; did you mean "ttl"?`}}},
		{"lease written as a table", ambassadorEdit("[lease]", `name = "leader"`),
			[]wantErr{{35, 1, "lease", "", "expected an array of tables, found a table; start each entry with its own [[lease]] header"}}},

		{"elector port", lease(`name = "leader"`, "elector_port = 4040"), nil},
		{"elector port out of range", lease(`name = "leader"`, "elector_port = 70000"),
			[]wantErr{{37, 1, "lease[0].elector_port", "", "elector_port 70000 is not a TCP port (1-65535)"}}},
		{"elector port used twice", ambassadorEdit("[[lease]]", `name = "a"`, "elector_port = 4040", "[[lease]]", `name = "b"`, "elector_port = 4040"),
			[]wantErr{{40, 1, "lease[1].elector_port", "", `elector_port 4040 is taken by lease "a" already`}}},

		{"several problems, each at its place", ambassadorEdit("[[lease]]", `name = "a"`, "[[lease]]", `name = "b"`, `on_lose = "panic"`, `ttl = "10m"`),
			[]wantErr{
				{39, 1, "lease[1].on_lose", "", `"panic" is not an on_lose policy`},
				{40, 1, "lease[1].ttl", "", "ttl 10m0s is longer than the maximum"},
			}},
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
			if !strings.Contains(err.Error(), `web.toml:`) || !strings.Contains(err.Error(), `group "web"`) {
				t.Errorf("error %q does not name the file and the group", err)
			}
		})
	}
}

// TestLeaseDecodesWithDefaults proves every key of [[lease]] reaches the
// spec, and that the effective config fills on_lose and ttl.
func TestLeaseDecodesWithDefaults(t *testing.T) {
	doc := edit(t, base, ambassadorEdit(
		"[[lease]]", `name = "leader"`,
		"[[lease]]", `name = "shard-0"`, `on_lose = "restart"`, "shared = true", `ttl = "2s"`)...)
	g, err := Decode("web.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []LeaseSpec{
		{Name: "leader", OnLose: OnLoseNotify, TTL: Duration(5 * time.Second)},
		{Name: "shard-0", OnLose: OnLoseRestart, Shared: true, TTL: Duration(2 * time.Second)},
	}
	if !reflect.DeepEqual(g.Leases, want) {
		t.Fatalf("leases = %+v, want %+v", g.Leases, want)
	}
	if l, ok := g.Lease("shard-0"); !ok || !l.Shared {
		t.Fatalf("Lease(shard-0) = %+v, %v", l, ok)
	}
	if _, ok := g.Lease("nope"); ok {
		t.Fatal("Lease(nope) found")
	}
	// The effective config decodes again to itself (it travels as JSON).
	again := *g
	again.SetDefaults()
	if !reflect.DeepEqual(again.Leases, want) {
		t.Fatalf("defaults are not idempotent: %+v", again.Leases)
	}
}

func TestLeaseEffectiveValues(t *testing.T) {
	var l LeaseSpec
	if l.EffectiveTTL() != DefaultLeaseTTL || l.EffectiveOnLose() != OnLoseNotify {
		t.Fatalf("zero lease: ttl %s, on_lose %s", l.EffectiveTTL(), l.EffectiveOnLose())
	}
	l = LeaseSpec{TTL: Duration(3 * time.Second), OnLose: OnLoseRestart}
	if l.EffectiveTTL() != Duration(3*time.Second) || l.EffectiveOnLose() != OnLoseRestart {
		t.Fatalf("set lease: ttl %s, on_lose %s", l.EffectiveTTL(), l.EffectiveOnLose())
	}
}

// TestLeaseWithoutPositions validates a spec built in code: the errors name
// the group and the key path, with no position.
func TestLeaseWithoutPositions(t *testing.T) {
	g := GroupSpec{
		Name:       "web",
		Containers: []ContainerSpec{{Name: "app", Image: "busybox"}},
		Leases:     []LeaseSpec{{Name: "leader"}, {Name: "leader", TTL: Duration(time.Millisecond)}},
	}
	err := g.Validate()
	var list ErrorList
	if !errors.As(err, &list) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate() = %v, want an ErrorList", err)
	}
	want := []FieldError{
		{Field: "lease[1].name", Message: `lease "leader" is defined twice (first at lease[0].name)`},
		{Field: "lease[1].ttl", Message: "ttl 1ms is shorter than the minimum of 1s"},
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		e := list[i]
		if e.Line != 0 || e.Group != "web" || e.Field != w.Field || !strings.Contains(e.Message, w.Message) {
			t.Errorf("error %d = %+v, want %+v", i, *e, w)
		}
	}
}
