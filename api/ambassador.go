package api

// AmbassadorSpec is one [[ambassador]]: a TCP proxy the agent runs inside
// the group's network namespace, from Listen to the ready endpoints of
// Service.
type AmbassadorSpec struct {
	// Listen is host:port inside the group's netns, e.g. "127.0.0.1:6379".
	Listen string `toml:"listen" json:"listen"`
	// Service names the service (a group) whose endpoints receive the
	// connections.
	Service string `toml:"service" json:"service"`
	// Port is the service port to connect to; default the Listen port.
	Port int `toml:"port" json:"port,omitempty"`
	// Balance: "round-robin" (default), "least-conn", "source-hash" or
	// "shard".
	Balance Balance `toml:"balance" json:"balance,omitempty"`
	// ShardHeader, with balance = "shard", takes the shard key from this
	// HTTP request header; without it the key is the first line.
	ShardHeader string `toml:"shard_header" json:"shard_header,omitempty"`
	// Split sends a share of new connections to other services.
	Split []SplitSpec `toml:"split" json:"split,omitempty"`
}

// SplitSpec sends Percent of an ambassador's new connections to Service.
type SplitSpec struct {
	Service string `toml:"service" json:"service"`
	Percent int    `toml:"percent" json:"percent"`
}

// Balance is an ambassador's load-balancing policy.
type Balance string

const (
	BalanceRoundRobin Balance = "round-robin"
	BalanceLeastConn  Balance = "least-conn"
	BalanceSourceHash Balance = "source-hash"
	BalanceShard      Balance = "shard"
)

// ambassadors checks the [[ambassador]] tables.
func (v *validator) ambassadors(g *GroupSpec) {}
