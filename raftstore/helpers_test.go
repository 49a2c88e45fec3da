package raftstore

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
)

// testTimeout bounds every wait of a test; the tests finish far sooner.
const testTimeout = 10 * time.Second

// testLogger discards raft's logs unless BERTH_TEST_RAFT_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("BERTH_TEST_RAFT_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is a member with raft's own test timings (50ms), so that
// elections take tens of milliseconds.
func testConfig(t *testing.T, id string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = t.TempDir()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Bootstrap = false
	cfg.HeartbeatTimeout = 50 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.Logger = testLogger()
	return cfg
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds, failing the test after testTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func mustCommand(t *testing.T, typ CommandType, payload any) Command {
	t.Helper()
	c, err := NewCommand(typ, payload)
	if err != nil {
		t.Fatalf("NewCommand(%s): %v", typ, err)
	}
	return c
}

// testSpec is a group spec using the field kinds that need care in JSON:
// durations, byte sizes, milli-CPUs, priorities, probes, maps.
func testSpec(name, image string) api.GroupSpec {
	return api.GroupSpec{
		Name:        name,
		Priority:    api.Priority{Value: 100},
		GracePeriod: api.Duration(1500 * time.Millisecond),
		Restart:     api.RestartOnFailure,
		Labels:      map[string]string{"tier": "frontend"},
		Volumes:     []api.VolumeSpec{{Name: "scratch", Type: api.VolumeTmpfs, Size: 64 << 20}},
		Containers: []api.ContainerSpec{{
			Name:    "app",
			Image:   image,
			Command: []string{"/app", "serve"},
			Env:     map[string]string{"MODE": "demo"},
			Mounts:  []api.MountSpec{{Volume: "scratch", Path: "/tmp"}},
			Resources: api.ResourceSpec{
				CPU: 500, Memory: 128 << 20, Pids: 100,
				Requests: api.RequestSpec{CPU: 250},
			},
			Readiness: &api.Probe{
				HTTP:   &api.HTTPAction{Path: "/ready", Port: 8080},
				Period: api.Duration(2 * time.Second),
			},
		}},
	}
}

func putGroup(t *testing.T, name, image string) Command {
	return mustCommand(t, CmdPutGroup, Group{Name: name, Spec: testSpec(name, image)})
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)
