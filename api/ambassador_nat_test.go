package api

import (
	"reflect"
	"testing"
)

// TestAmbassadorNatRules asserts what mode = "nat" accepts and refuses,
// with each error at its line and column (base's lines, see
// ambassador_test.go: [[ambassador]] is line 35, listen 36, service 37,
// then the extra keys).
func TestAmbassadorNatRules(t *testing.T) {
	amb := func(listen string, more ...string) []any {
		return ambassadorEdit(append([]string{"[[ambassador]]", "listen = " + listen, `service = "cache"`}, more...)...)
	}
	tests := []struct {
		name  string
		edits []any
		want  []wantErr
	}{
		{"nat", amb(`"127.0.0.1:6379"`, `mode = "nat"`), nil},
		{"proxy", amb(`"127.0.0.1:6379"`, `mode = "proxy"`), nil},
		{"nat round-robin", amb(`"127.0.0.1:6379"`, `mode = "nat"`, `balance = "round-robin"`), nil},
		{"nat with split and port", amb(`"127.0.0.1:6379"`, `mode = "nat"`, "port = 7000", `split = [{ service = "cache-v2", percent = 10 }]`), nil},
		{"nat on a virtual address", amb(`"169.254.10.1:6379"`, `mode = "nat"`), nil},
		{"unknown mode", amb(`"127.0.0.1:6379"`, `mode = "kernel"`),
			[]wantErr{{38, 1, "ambassador[0].mode", "", `"kernel" is not an ambassador mode: use "proxy" (the default`}}},
		{"misspelled mode", amb(`"127.0.0.1:6379"`, `mode = "nta"`),
			[]wantErr{{38, 1, "ambassador[0].mode", "", `did you mean "nat"?`}}},
		{"nat refuses least-conn", amb(`"127.0.0.1:6379"`, `mode = "nat"`, `balance = "least-conn"`),
			[]wantErr{{38, 1, "ambassador[0].mode", "", `mode = "nat" cannot balance "least-conn" (balance at web.toml:39:1): the kernel picks an endpoint per connection, without state, so it cannot count open connections (nor retry another endpoint); remove mode to use the proxy, or use balance = "round-robin"`}}},
		{"nat refuses source-hash", amb(`"127.0.0.1:6379"`, `balance = "source-hash"`, `mode = "nat"`),
			[]wantErr{{39, 1, "ambassador[0].mode", "", `mode = "nat" cannot balance "source-hash" (balance at web.toml:38:1): the kernel picks an endpoint per connection, without state, so it cannot hash a client address`}}},
		{"nat refuses shard", amb(`"127.0.0.1:6379"`, `mode = "nat"`, `balance = "shard"`, `shard_header = "X-Key"`),
			[]wantErr{{38, 1, "ambassador[0].mode", "", `cannot balance "shard" (balance at web.toml:39:1): the kernel picks an endpoint per connection, without state, so it cannot read a shard key from the stream`}}},
		{"nat refuses shard_header without shard", amb(`"127.0.0.1:6379"`, `mode = "nat"`, `shard_header = "X-Key"`),
			[]wantErr{{39, 1, "ambassador[0].shard_header", "", `shard_header is only read with balance = "shard"`}}},
		{"nat with an unknown balance says it once", amb(`"127.0.0.1:6379"`, `mode = "nat"`, `balance = "random"`),
			[]wantErr{{39, 1, "ambassador[0].balance", "", `"random" is not a balance policy`}}},
		{"nat refuses IPv6", amb(`"[::1]:6379"`, `mode = "nat"`),
			[]wantErr{{38, 1, "ambassador[0].mode", "", `mode = "nat" rewrites the group's connections to one IPv4 address, and "[::1]:6379" is not one: listen on an address like "127.0.0.1:6379", or remove mode to use the proxy`}}},
		{"nat refuses every address", amb(`"0.0.0.0:6379"`, `mode = "nat"`),
			[]wantErr{{38, 1, "ambassador[0].mode", "", `and "0.0.0.0:6379" is not one`}}},
		{"proxy takes least-conn", amb(`"127.0.0.1:6379"`, `mode = "proxy"`, `balance = "least-conn"`), nil},
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

// TestAmbassadorNatDecodes proves that mode reaches the spec.
func TestAmbassadorNatDecodes(t *testing.T) {
	doc := edit(t, base, ambassadorEdit("[[ambassador]]", `listen = "127.0.0.1:6379"`, `service = "cache"`, `mode = "nat"`)...)
	g, err := Decode("web.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []AmbassadorSpec{{Listen: "127.0.0.1:6379", Service: "cache", Mode: AmbassadorNAT}}
	if !reflect.DeepEqual(g.Ambassadors, want) {
		t.Errorf("ambassadors = %+v, want %+v", g.Ambassadors, want)
	}
}
