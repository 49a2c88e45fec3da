package api

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// ambassadorEdit appends lines to base (see decode_test.go) from line 35
// on, after the last container: ambassadorEdit("[[ambassador]]", …).
func ambassadorEdit(lines ...string) []any {
	return []any{35, strings.Join(lines, "\n")}
}

// TestAmbassadorRules decodes base with [[ambassador]] tables added and
// asserts every error with its exact line and column; a case without
// errors proves the rule accepts what it should.
func TestAmbassadorRules(t *testing.T) {
	amb := func(listen string, more ...string) []string {
		return append([]string{"[[ambassador]]", "listen = " + listen, `service = "cache"`}, more...)
	}
	tests := []struct {
		name  string
		edits []any
		want  []wantErr
	}{
		// listen
		{"listen is required", ambassadorEdit("[[ambassador]]", `service = "cache"`),
			[]wantErr{{35, 1, "ambassador[0].listen", "", `the ambassador needs a listen address inside the group: add listen = "127.0.0.1:6379"`}}},
		{"listen without a host", ambassadorEdit(amb(`"6379"`)...),
			[]wantErr{{36, 1, "ambassador[0].listen", "", `"6379" is not host:port; write "127.0.0.1:6379"`}}},
		{"listen that is not an address", ambassadorEdit(amb(`"cache"`)...),
			[]wantErr{{36, 1, "ambassador[0].listen", "", `"cache" is not host:port; write an IP address and a port, like "127.0.0.1:6379"`}}},
		{"listen with an empty host", ambassadorEdit(amb(`":6379"`)...),
			[]wantErr{{36, 1, "ambassador[0].listen", "", `":6379" has no address: write "127.0.0.1:6379" for the group's localhost, or "0.0.0.0:6379" for every address of the group`}}},
		{"listen on a name", ambassadorEdit(amb(`"localhost:6379"`)...),
			[]wantErr{{36, 1, "ambassador[0].listen", "", `"localhost:6379": the address must be an IP address (names are not resolved inside the group); write "127.0.0.1:6379"`}}},
		{"listen port 0", ambassadorEdit(amb(`"127.0.0.1:0"`)...),
			[]wantErr{{36, 1, "ambassador[0].listen", "", `port "0" of "127.0.0.1:0" is out of range: use a port from 1 to 65535`}}},
		{"listen port above 65535", ambassadorEdit(amb(`"127.0.0.1:65536"`)...),
			[]wantErr{{36, 1, "ambassador[0].listen", "", `port "65536" of "127.0.0.1:65536" is out of range`}}},
		{"listen on IPv6 loopback", ambassadorEdit(amb(`"[::1]:6379"`)...), nil},
		{"listen on every address", ambassadorEdit(amb(`"0.0.0.0:6379"`)...), nil},

		// listen addresses are unique
		{"listen address used twice", ambassadorEdit(append(amb(`"127.0.0.1:6379"`), amb(`"127.0.0.1:6379"`)...)...),
			[]wantErr{{39, 1, "ambassador[1].listen", "", `"127.0.0.1:6379" is already taken by ambassador[0] (at web.toml:36:1): give each ambassador its own port`}}},
		{"listen port taken by a wildcard", ambassadorEdit(append(amb(`"0.0.0.0:6379"`), amb(`"127.0.0.1:6379"`)...)...),
			[]wantErr{{39, 1, "ambassador[1].listen", "", `"127.0.0.1:6379" is already taken by ambassador[0] (at web.toml:36:1)`}}},
		{"same port on two addresses", ambassadorEdit(append(amb(`"127.0.0.1:6379"`), amb(`"127.0.0.2:6379"`)...)...), nil},
		{"two ports on one address", ambassadorEdit(append(amb(`"127.0.0.1:6379"`), amb(`"127.0.0.1:6380"`)...)...), nil},

		// service
		{"service is required", ambassadorEdit("[[ambassador]]", `listen = "127.0.0.1:6379"`),
			[]wantErr{{35, 1, "ambassador[0].service", "", `the ambassador needs a service: add service = "cache"`}}},
		{"service is a DNS label", ambassadorEdit("[[ambassador]]", `listen = "127.0.0.1:6379"`, `service = "Cache_V2"`),
			[]wantErr{{37, 1, "ambassador[0].service", "", `"Cache_V2" is not a valid service name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. "cache-v2"`}}},

		// port
		{"port out of range", ambassadorEdit(amb(`"127.0.0.1:6379"`, "port = 70000")...),
			[]wantErr{{38, 1, "ambassador[0].port", "", "port 70000 is out of range: use a port from 1 to 65535, or leave it out to connect to the listen port"}}},
		{"port of the service", ambassadorEdit(amb(`"127.0.0.1:6379"`, "port = 7000")...), nil},

		// balance
		{"balance must be known", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "random"`)...),
			[]wantErr{{38, 1, "ambassador[0].balance", "", `"random" is not a balance policy: use "round-robin" (the default), "least-conn"`}}},
		{"misspelled balance suggests the closest", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "least_conn"`)...),
			[]wantErr{{38, 1, "ambassador[0].balance", "", `; did you mean "least-conn"?`}}},
		{"balance with a typo suggests the closest", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "round-robbin"`)...),
			[]wantErr{{38, 1, "ambassador[0].balance", "", `did you mean "round-robin"?`}}},
		{"balance round-robin", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "round-robin"`)...), nil},
		{"balance least-conn", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "least-conn"`)...), nil},
		{"balance source-hash", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "source-hash"`)...), nil},
		{"balance shard", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "shard"`)...), nil},

		// shard_header
		{"shard_header needs balance shard", ambassadorEdit(amb(`"127.0.0.1:6379"`, `shard_header = "X-Key"`)...),
			[]wantErr{{38, 1, "ambassador[0].shard_header", "", `shard_header is only read with balance = "shard": set balance = "shard", or remove shard_header`}}},
		{"shard_header is a header name", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "shard"`, `shard_header = "X Key"`)...),
			[]wantErr{{39, 1, "ambassador[0].shard_header", "", `header name "X Key" may only contain letters, digits`}}},
		{"shard_header", ambassadorEdit(amb(`"127.0.0.1:6379"`, `balance = "shard"`, `shard_header = "X-Tenant"`)...), nil},

		// split
		{"split", ambassadorEdit(amb(`"127.0.0.1:6379"`, `split = [{ service = "cache-v2", percent = 10 }, { service = "cache-v3", percent = 89 }]`)...), nil},
		{"split as tables", ambassadorEdit(amb(`"127.0.0.1:6379"`, "[[ambassador.split]]", `service = "cache-v2"`, "percent = 10")...), nil},
		{"split percent at least 1", ambassadorEdit(amb(`"127.0.0.1:6379"`, `split = [{ service = "cache-v2", percent = -5 }]`)...),
			[]wantErr{{38, 34, "ambassador[0].split[0].percent", "", `percent -5 is out of range: use 1 to 99, the share of new connections that go to "cache-v2"`}}},
		{"split percent at most 99", ambassadorEdit(amb(`"127.0.0.1:6379"`, `split = [{ service = "cache-v2", percent = 100 }]`)...),
			[]wantErr{{38, 34, "ambassador[0].split[0].percent", "", "percent 100 is out of range"}}},
		{"split percent is required", ambassadorEdit(amb(`"127.0.0.1:6379"`, "[[ambassador.split]]", `service = "cache-v2"`)...),
			[]wantErr{{38, 1, "ambassador[0].split[0].percent", "", `the split needs a percent: add percent = 10 to send 10% of new connections to "cache-v2"`}}},
		{"splits total below 100", ambassadorEdit(amb(`"127.0.0.1:6379"`, `split = [{ service = "a", percent = 60 }, { service = "b", percent = 40 }]`)...),
			[]wantErr{{38, 1, "ambassador[0].split", "", `the splits add up to 100%, which leaves nothing for service "cache": keep the total below 100`}}},
		{"split service is required", ambassadorEdit(amb(`"127.0.0.1:6379"`, `split = [{ percent = 10 }]`)...),
			[]wantErr{{38, 10, "ambassador[0].split[0].service", "", `the split needs a service: add service = "cache-v2"`}}},
		{"split service is a DNS label", ambassadorEdit(amb(`"127.0.0.1:6379"`, `split = [{ service = "v2.cache", percent = 10 }]`)...),
			[]wantErr{{38, 12, "ambassador[0].split[0].service", "", `"v2.cache" is not a valid service name`}}},
		{"split service is another service", ambassadorEdit(amb(`"127.0.0.1:6379"`, `split = [{ service = "cache", percent = 10 }]`)...),
			[]wantErr{{38, 12, "ambassador[0].split[0].service", "", `service "cache" is the ambassador's own service: a split sends a share to another service`}}},
		{"split service once", ambassadorEdit(amb(`"127.0.0.1:6379"`, "split = [", `  { service = "v2", percent = 5 },`, `  { service = "v2", percent = 5 },`, "]")...),
			[]wantErr{{40, 5, "ambassador[0].split[1].service", "", `service "v2" is split to twice (first at web.toml:39:5): write one split with the sum of the percents`}}},

		// several problems, each at its place, in the second ambassador
		{"errors in the second ambassador", ambassadorEdit(append(amb(`"127.0.0.1:6379"`),
			"[[ambassador]]", `listen = "127.0.0.1:6380"`, `service = "db"`, `balance = "shrad"`, `split = [{ service = "db-v2", percent = 0 }]`)...),
			[]wantErr{
				{41, 1, "ambassador[1].balance", "", `did you mean "shard"?`},
				{42, 31, "ambassador[1].split[0].percent", "", "the split needs a percent"},
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
		})
	}
}

// TestAmbassadorDecodes proves that every key of [[ambassador]] reaches
// the spec.
func TestAmbassadorDecodes(t *testing.T) {
	doc := edit(t, base, ambassadorEdit(
		"[[ambassador]]", `listen = "127.0.0.1:6379"`, `service = "cache"`, "port = 7000", `balance = "shard"`,
		`shard_header = "X-Tenant"`, `split = [{ service = "cache-v2", percent = 10 }]`,
		"[[ambassador]]", `listen = "127.0.0.1:5432"`, `service = "db"`)...)
	g, err := Decode("web.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []AmbassadorSpec{
		{Listen: "127.0.0.1:6379", Service: "cache", Port: 7000, Balance: BalanceShard, ShardHeader: "X-Tenant",
			Split: []SplitSpec{{Service: "cache-v2", Percent: 10}}},
		{Listen: "127.0.0.1:5432", Service: "db"},
	}
	if !reflect.DeepEqual(g.Ambassadors, want) {
		t.Errorf("ambassadors = %+v, want %+v", g.Ambassadors, want)
	}
}

// TestAmbassadorWithoutPositions validates a spec built in code: the
// errors name the key path, with no position.
func TestAmbassadorWithoutPositions(t *testing.T) {
	g := GroupSpec{
		Name:       "web",
		Containers: []ContainerSpec{{Name: "app", Image: "busybox"}},
		Ambassadors: []AmbassadorSpec{
			{Listen: "127.0.0.1:6379", Service: "cache"},
			{Listen: "127.0.0.1:6379", Service: "cache", Balance: "hash"},
		},
	}
	err := g.Validate()
	var list ErrorList
	if !errors.As(err, &list) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate() = %v, want an ErrorList", err)
	}
	want := []FieldError{
		{Field: "ambassador[1].listen", Message: `"127.0.0.1:6379" is already taken by ambassador[0] (at ambassador[0].listen)`},
		{Field: "ambassador[1].balance", Message: `"hash" is not a balance policy`},
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
