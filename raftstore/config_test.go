package raftstore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestDefaultConfigIsTheEmbeddedDefault(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID = "node-a" // the hostname, which a test machine may lack
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	if !cfg.Voter || !cfg.Bootstrap {
		t.Fatal("the default is not a bootstrapping voter")
	}
	rc := cfg.raftConfig()
	if rc.HeartbeatTimeout != 300*time.Millisecond || rc.ElectionTimeout != 300*time.Millisecond || rc.LeaderLeaseTimeout != 300*time.Millisecond {
		t.Fatalf("raft timeouts = %s/%s/%s, want LAN timings", rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout)
	}
	if string(rc.LocalID) != "node-a" || rc.Logger == nil {
		t.Fatalf("raft config: id %q, logger %v", rc.LocalID, rc.Logger)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no node id", func(c *Config) { c.NodeID = "" }, "node_id is empty"},
		{"relative data dir", func(c *Config) { c.DataDir = "raft" }, "not an absolute path"},
		{"bootstrapping non-voter", func(c *Config) { c.Voter = false }, "bootstrap needs voter"},
		{"bind on all addresses without advertise", func(c *Config) { c.BindAddr = "0.0.0.0:7947" }, "set advertise"},
		{"bad bind address", func(c *Config) { c.BindAddr = "localhost" }, "bind_addr"},
		{"unspecified advertise", func(c *Config) { c.BindAddr = "0.0.0.0:7947"; c.Advertise = "0.0.0.0:7947" }, "specific IP"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second }, "leader_lease_timeout"},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = 100 * time.Millisecond }, "election_timeout"},
		{"tiny heartbeat", func(c *Config) { c.HeartbeatTimeout = time.Millisecond }, "heartbeat_timeout 1ms is below 5ms"},
		{"no snapshots kept", func(c *Config) { c.SnapshotRetain = 0 }, "snapshot_retain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeID = "node-a"
			tt.change(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an ErrInvalid naming %q", err, tt.want)
			}
		})
	}

	t.Run("several problems in one error", func(t *testing.T) {
		cfg := Config{}
		err := cfg.Validate()
		for _, want := range []string{"node_id", "data_dir", "bind_addr", "snapshot_threshold"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Validate() = %v, want it to name %s", err, want)
			}
		}
	})

	t.Run("a given transport skips the address checks", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.NodeID = "node-a"
		cfg.BindAddr = ""
		if err := cfg.validate(true); err != nil {
			t.Fatalf("validate(transport given) = %v", err)
		}
	})
}
