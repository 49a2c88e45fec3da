package raftstore

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
)

// Defaults of Config. The timeouts suit a LAN of 1–50 machines. The leader
// sends a heartbeat every HeartbeatTimeout/10; a follower checks at
// random intervals of one to two HeartbeatTimeouts and stands for
// election at the first check that finds no contact for a whole
// HeartbeatTimeout: between one and three HeartbeatTimeouts after the
// leader died. A voter that still hears from its leader refuses to vote,
// so the election succeeds once the second follower also noticed, or the
// first one retries after ElectionTimeout (one to two of them). A leader
// that cannot reach a quorum for LeaderLeaseTimeout steps down.
//
// 300ms everywhere puts a leader loss at ≤ 0.9s plus the vote (issue 6:
// ≤ 1s). Measured with `make bench BENCH_FLAGS=-cluster-only` on a 2-core
// machine, three agents: leader loss p50 0.48s, max 0.78s over 20 trials
// (0.61s, 0.89s over 12 with both cores kept busy), no false election in
// 20s idle or 60s with both cores busy; with the earlier 500ms/1s/500ms:
// p50 0.78s, max 1.24s.
const (
	DefaultDataDir            = "/var/lib/berth/raft"
	DefaultBindAddr           = "127.0.0.1:7947"
	DefaultHeartbeatTimeout   = 300 * time.Millisecond
	DefaultElectionTimeout    = 300 * time.Millisecond
	DefaultLeaderLeaseTimeout = 300 * time.Millisecond
	DefaultCommitTimeout      = 50 * time.Millisecond
	DefaultSnapshotThreshold  = 8192
	DefaultSnapshotInterval   = 2 * time.Minute
	DefaultSnapshotRetain     = 2
	DefaultTrailingLogs       = 10240
	DefaultMaxPool            = 3
	DefaultTransportTimeout   = 10 * time.Second
)

// Config configures one Raft member. Start from DefaultConfig, change
// what differs, and call Validate (Open does).
type Config struct {
	// NodeID is this member's Raft server ID: unique in the cluster for
	// all time, stable across restarts (the agent's node name).
	NodeID string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// BindAddr is the host:port the TCP transport listens on; port 0 picks
	// a free port (tests). Ignored when Open is given a transport.
	BindAddr string
	// Advertise is the host:port other members dial; empty means BindAddr,
	// which then must name a specific IP (not 0.0.0.0 or ::).
	Advertise string
	// Voter says whether this member should vote. The cluster decides how
	// it joins (AddVoter or AddNonvoter on the leader); Open only uses it
	// to check that a bootstrapping member is a voter.
	Voter bool
	// Bootstrap makes this member a one-voter cluster when DataDir holds no
	// Raft state yet; with existing state it is ignored. It is the embedded
	// default: an agent without cluster config is its own leader.
	Bootstrap bool

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// SnapshotThreshold is how many log entries since the last snapshot
	// make the next check (every SnapshotInterval to 2×SnapshotInterval)
	// take a snapshot; TrailingLogs entries stay in the log after it.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	SnapshotRetain    int
	TrailingLogs      uint64

	// MaxPool and TransportTimeout tune the TCP transport.
	MaxPool          int
	TransportTimeout time.Duration

	// Logger receives raft's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig is the embedded default: a bootstrapping single voter
// named after the host, listening on loopback.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeID:             host,
		DataDir:            DefaultDataDir,
		BindAddr:           DefaultBindAddr,
		Voter:              true,
		Bootstrap:          true,
		HeartbeatTimeout:   DefaultHeartbeatTimeout,
		ElectionTimeout:    DefaultElectionTimeout,
		LeaderLeaseTimeout: DefaultLeaderLeaseTimeout,
		CommitTimeout:      DefaultCommitTimeout,
		SnapshotThreshold:  DefaultSnapshotThreshold,
		SnapshotInterval:   DefaultSnapshotInterval,
		SnapshotRetain:     DefaultSnapshotRetain,
		TrailingLogs:       DefaultTrailingLogs,
		MaxPool:            DefaultMaxPool,
		TransportTimeout:   DefaultTransportTimeout,
	}
}

// Validate reports every problem of c in one error wrapping api.ErrInvalid.
// Open also validates, and skips the checks of BindAddr, Advertise and the
// TCP transport's tuning when it is given a transport.
func (c *Config) Validate() error { return c.validate(false) }

func (c *Config) validate(transportGiven bool) error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if c.NodeID == "" {
		add("node_id is empty: set it to the agent's node name")
	}
	if c.DataDir == "" {
		add("data_dir is empty")
	} else if !filepath.IsAbs(c.DataDir) {
		add("data_dir %q is not an absolute path", c.DataDir)
	}
	if c.Bootstrap && !c.Voter {
		add("bootstrap needs voter = true: a cluster cannot start from a non-voter")
	}
	if !transportGiven {
		host, err := checkHostPort("bind_addr", c.BindAddr)
		if err != nil {
			add("%v", err)
		}
		if c.Advertise != "" {
			if ah, err := checkHostPort("advertise", c.Advertise); err != nil {
				add("%v", err)
			} else if ip := net.ParseIP(ah); ip == nil || ip.IsUnspecified() {
				add("advertise %q must be a specific IP address", c.Advertise)
			}
		} else if err == nil {
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				add("bind_addr %q is not an address others can dial: set advertise", c.BindAddr)
			}
		}
		if c.MaxPool < 1 {
			add("max_pool %d must be at least 1", c.MaxPool)
		}
		if c.TransportTimeout <= 0 {
			add("transport_timeout must be positive")
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat_timeout", c.HeartbeatTimeout},
		{"election_timeout", c.ElectionTimeout},
		{"leader_lease_timeout", c.LeaderLeaseTimeout},
		{"commit_timeout", c.CommitTimeout},
		{"snapshot_interval", c.SnapshotInterval},
	} {
		if d.v < 5*time.Millisecond {
			add("%s %s is below 5ms", d.name, d.v)
		}
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		add("election_timeout %s is below heartbeat_timeout %s", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		add("leader_lease_timeout %s is above heartbeat_timeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold == 0 {
		add("snapshot_threshold must be positive")
	}
	if c.SnapshotRetain < 1 {
		add("snapshot_retain %d must be at least 1", c.SnapshotRetain)
	}
	if len(errs) == 0 {
		return nil
	}
	msg := "raftstore config: " + errs[0]
	for _, e := range errs[1:] {
		msg += "; " + e
	}
	return fmt.Errorf("%s: %w", msg, api.ErrInvalid)
}

func checkHostPort(field, addr string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("%s is empty: give host:port", field)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s %q: %v", field, addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return "", fmt.Errorf("%s %q: bad port", field, addr)
	}
	return host, nil
}

// raftConfig is c in raft's terms.
func (c *Config) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.Logger = newHCLogger(c.logger(), "raft")
	return rc
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}
