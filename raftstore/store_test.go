package raftstore

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	st, err := Open(cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

func waitLeader(t *testing.T, st *Store) {
	t.Helper()
	eventually(t, st.ID()+" to lead", st.IsLeader)
}

// TestSingleNodeBootstrapsAndApplies is the embedded default: one agent,
// a TCP transport, its own leader.
func TestSingleNodeBootstrapsAndApplies(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t, "solo")
	cfg.Bootstrap = true
	st := openStore(t, cfg)
	waitLeader(t, st)

	w := st.Watch(ctx)
	recv(t, w)
	idx, err := st.Apply(ctx, putGroup(t, "web", "web:1"))
	if err != nil || idx == 0 {
		t.Fatalf("Apply = %d, %v", idx, err)
	}
	if g, ok := st.Group("web"); !ok || g.Index != idx || g.Generation != 1 {
		t.Fatalf("Group(web) = %+v, %v", g, ok)
	}
	for v := range w {
		if v >= idx {
			break
		}
	}

	if id, addr := st.Leader(); id != "solo" || addr != st.Addr() || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Leader() = %s %s, Addr() = %s", id, addr, st.Addr())
	}
	servers, err := st.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Server{{ID: "solo", Address: st.Addr(), Suffrage: Voter, Leader: true}}; !reflect.DeepEqual(servers, want) {
		t.Fatalf("Servers() = %+v, want %+v", servers, want)
	}
	if s := st.Stats(); s.State != "Leader" || s.FSMIndex != idx || s.LastIndex < idx || s.CommitIndex < idx || s.Term == 0 {
		t.Fatalf("Stats() = %+v", s)
	}
	if err := st.VerifyLeader(ctx); err != nil {
		t.Fatalf("VerifyLeader: %v", err)
	}

	// A rejected command still returns its index, and the error class.
	bad := mustCommand(t, CmdPutAllocation, Allocation{ID: "x-0", Group: "missing"})
	if i, err := st.Apply(ctx, bad); !errors.Is(err, api.ErrNotFound) || i <= idx {
		t.Fatalf("Apply of an allocation of a missing group = %d, %v", i, err)
	}
}

// TestApplyRefusesUnreadableCommandsBeforeProposing: a command this build
// cannot read never reaches the log.
func TestApplyRefusesUnreadableCommandsBeforeProposing(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t, "solo")
	cfg.Bootstrap = true
	st := openStore(t, cfg)
	waitLeader(t, st)
	if err := st.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	last := st.Stats().LastIndex

	newer := putGroup(t, "web", "web:1")
	newer.Version = CommandVersion + 1
	if _, err := st.Apply(ctx, newer); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Apply of a newer version = %v", err)
	}
	if _, err := st.Apply(ctx, Command{Type: 60, Payload: []byte(`{}`)}); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Apply of an unknown type = %v", err)
	}
	if got := st.Stats().LastIndex; got != last {
		t.Fatalf("last index %d → %d: an unreadable command was proposed", last, got)
	}
	// Version 0 means the current one.
	c := putGroup(t, "web", "web:1")
	c.Version = 0
	if _, err := st.Apply(ctx, c); err != nil {
		t.Fatalf("Apply with version 0: %v", err)
	}
}

// TestReopenRestoresSnapshotAndLog: a member closed and reopened on the
// same DataDir comes back with the same state (snapshot + the log after
// it), does not bootstrap again, and its indexes continue.
func TestReopenRestoresSnapshotAndLog(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t, "solo")
	cfg.Bootstrap = true
	st, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, st)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := st.Apply(ctx, putGroup(t, name, name+":1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snapIndex := st.Stats().LastSnapshotIndex
	if snapIndex == 0 {
		t.Fatal("no snapshot taken")
	}
	// These live only in the log, after the snapshot.
	if _, err := st.Apply(ctx, putGroup(t, "a", "a:2")); err != nil {
		t.Fatal(err)
	}
	last, err := st.Apply(ctx, mustCommand(t, CmdPutAllocation, Allocation{ID: "a-0", Group: "a", Node: "solo"}))
	if err != nil {
		t.Fatal(err)
	}
	want := st.State()
	lastRaft := st.Stats().LastIndex
	cfg.BindAddr = st.Addr() // same address as the stored configuration
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	st = openStore(t, cfg)
	waitLeader(t, st)
	if err := st.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := st.State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("state after reopen:\n got %+v\nwant %+v", got, want)
	}
	if s := st.Stats(); s.LastSnapshotIndex != snapIndex || s.Term < 2 {
		t.Fatalf("Stats() after reopen = %+v, want snapshot %d and a new term", s, snapIndex)
	}
	servers, err := st.Servers()
	if err != nil || len(servers) != 1 {
		t.Fatalf("Servers() = %+v, %v: want the one stored voter", servers, err)
	}
	idx, err := st.Apply(ctx, putGroup(t, "d", "d:1"))
	if err != nil || idx <= lastRaft || idx <= last {
		t.Fatalf("Apply after reopen = %d, %v; want an index above %d", idx, err, lastRaft)
	}
}

func TestOpenRejectsInvalidConfig(t *testing.T) {
	cfg := testConfig(t, "")
	if _, err := Open(cfg, nil); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "node_id") {
		t.Fatalf("Open without a node id = %v", err)
	}
}
