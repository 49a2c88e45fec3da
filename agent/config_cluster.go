package agent

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/berth-project/berth/api"
)

// ClusterConfig is the [cluster] section of agent.toml. Without advertise,
// join and bootstrap_expect the agent is a one-node cluster, its own Raft
// leader, with no network listener at all (the embedded default): cluster
// groups work on one machine too. A networked cluster of one (advertise
// and bootstrap_expect = 1) bootstraps alone and lets others join it.
type ClusterConfig struct {
	// Advertise is this node's IP as the other agents reach it (gossip,
	// Raft and the inter-agent API). Required in a cluster.
	Advertise string `toml:"advertise"`
	// BindAddr is where the three ports listen (default 0.0.0.0).
	BindAddr string `toml:"bind_addr"`
	// GossipPort (memberlist, UDP+TCP), RaftPort and APIPort (TLS).
	GossipPort int `toml:"gossip_port"`
	RaftPort   int `toml:"raft_port"`
	APIPort    int `toml:"api_port"`
	// Join lists gossip addresses (host:port) of other agents; any one
	// that answers is enough, and joining is retried until one does.
	Join []string `toml:"join"`
	// EncryptKey is the gossip key (agentctl keygen). Required in a
	// cluster: gossip without it is ignored.
	EncryptKey string `toml:"encrypt_key"`
	// TLSDir holds ca.crt and NODE.crt/NODE.key (agentctl tls init). The
	// inter-agent API and Raft refuse plain connections.
	TLSDir string `toml:"tls_dir"`
	// Server makes the agent a Raft voter candidate (at most 5 vote).
	Server bool `toml:"server"`
	// BootstrapExpect is how many servers must be seen before the first
	// Raft configuration is formed (3 or 5).
	BootstrapExpect int `toml:"bootstrap_expect"`
	// DeadGrace is how long after memberlist declares a node dead its
	// allocations are moved (default 0: at once).
	DeadGrace api.Duration `toml:"dead_grace"`
	// VoterReplaceAfter is how long a voter may be dead before a live
	// non-voter server takes its vote (default 30s).
	VoterReplaceAfter api.Duration `toml:"voter_replace_after"`
}

// Cluster defaults.
const (
	DefaultGossipPort = 7946
	DefaultRaftPort   = 7947
	DefaultAPIPort    = 7948
	// MaxVoters is how many agents hold Raft votes.
	MaxVoters = 5
)

// DefaultClusterConfig is the embedded single-node default.
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		BindAddr:          "0.0.0.0",
		GossipPort:        DefaultGossipPort,
		RaftPort:          DefaultRaftPort,
		APIPort:           DefaultAPIPort,
		TLSDir:            "/etc/berth/tls",
		Server:            true,
		VoterReplaceAfter: api.Duration(30 * time.Second),
	}
}

// Enabled reports whether the agent joins or forms a networked cluster:
// it has an advertise address, seeds to join or servers to expect.
func (c ClusterConfig) Enabled() bool {
	return c.Advertise != "" || len(c.Join) > 0 || c.BootstrapExpect > 1
}

// RaftAddr, APIAddr and GossipAddr are the advertised host:ports.
func (c ClusterConfig) RaftAddr() string {
	return net.JoinHostPort(c.Advertise, strconv.Itoa(c.RaftPort))
}
func (c ClusterConfig) APIAddr() string {
	return net.JoinHostPort(c.Advertise, strconv.Itoa(c.APIPort))
}

func (c ClusterConfig) validate() []error {
	var errs []error
	for _, p := range []struct {
		name string
		v    int
	}{{"gossip_port", c.GossipPort}, {"raft_port", c.RaftPort}, {"api_port", c.APIPort}} {
		if p.v < 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("cluster.%s %d: must be a port, 1-65535", p.name, p.v))
		}
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > MaxVoters {
		errs = append(errs, fmt.Errorf("cluster.bootstrap_expect %d: use 1, 3 or 5 (at most %d agents vote)", c.BootstrapExpect, MaxVoters))
	}
	if c.BootstrapExpect > 1 && !c.Server {
		errs = append(errs, errors.New("cluster.bootstrap_expect is set on an agent with server = false: only servers bootstrap"))
	}
	if c.DeadGrace < 0 || c.VoterReplaceAfter < 0 {
		errs = append(errs, errors.New("cluster.dead_grace and cluster.voter_replace_after must not be negative"))
	}
	if !c.Enabled() {
		return errs
	}
	if ip := net.ParseIP(c.Advertise); ip == nil || ip.IsUnspecified() {
		errs = append(errs, fmt.Errorf("cluster.advertise %q: a cluster needs this node's IP address as the others reach it, e.g. advertise = \"10.0.0.1\"", c.Advertise))
	}
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("cluster.bind_addr %q: not an IP address", c.BindAddr))
	}
	if c.EncryptKey == "" {
		errs = append(errs, errors.New("cluster.encrypt_key: a cluster of more than one node needs a gossip key: create one with `agentctl keygen` and put the same key on every node"))
	}
	if c.TLSDir == "" {
		errs = append(errs, errors.New("cluster.tls_dir: a cluster needs certificates: create them with `agentctl tls init`"))
	}
	return errs
}
