package raftstore

import (
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
)

var (
	t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 = t0.Add(time.Minute)
)

// applyAt applies cmd at index idx, as raft would.
func applyAt(t *testing.T, f *FSM, idx uint64, cmd Command) any {
	t.Helper()
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data})
}

func mustApply(t *testing.T, f *FSM, idx uint64, cmd Command) Result {
	t.Helper()
	res := applyAt(t, f, idx, cmd)
	r, ok := res.(Result)
	if !ok {
		t.Fatalf("apply %s at %d: %v", cmd, idx, res)
	}
	return r
}

// seededFSM holds groups web and api, their allocations web-0 (on n1) and
// api-0 (on n2), and node n1; the last index is 6.
func seededFSM(t *testing.T) *FSM {
	t.Helper()
	f := NewFSM()
	for i, c := range []Command{
		putGroup(t, "web", "web:1"),
		putGroup(t, "api", "api:1"),
		mustCommand(t, CmdPutAllocation, Allocation{ID: "web-0", Group: "web", Node: "n1"}),
		mustCommand(t, CmdPutAllocation, Allocation{ID: "api-0", Group: "api", Node: "n2", Shard: 1}),
		mustCommand(t, CmdPutNode, NodeInfo{Name: "n1", APIAddr: "10.0.0.1:7070", RaftAddr: "10.0.0.1:7947", Status: NodeAlive,
			Labels: map[string]string{"zone": "a"}, Capacity: api.Resources{CPU: 4000, Memory: 8 << 30, Pids: 4096}}),
		mustCommand(t, CmdPutNode, NodeInfo{Name: "n2", Status: NodeAlive}),
	} {
		c.Time = t0
		mustApply(t, f, uint64(i+1), c)
	}
	return f
}

func at(c Command, tm time.Time) Command { c.Time = tm; return c }

func TestFSMAppliesEveryCommandType(t *testing.T) {
	const idx = 10
	tests := []struct {
		name    string
		cmd     func(t *testing.T) Command
		wantErr error // class, when the FSM must reject the command
		changed int
		check   func(t *testing.T, f *FSM)
	}{
		{
			name:    "put_group creates a group at generation 1",
			cmd:     func(t *testing.T) Command { return putGroup(t, "db", "db:1") },
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				g, ok := f.Group("db")
				if !ok || g.Generation != 1 || g.Index != idx || g.Spec.Containers[0].Image != "db:1" {
					t.Fatalf("group db = %+v, %v", g, ok)
				}
			},
		},
		{
			name:    "put_group with the same spec changes nothing",
			cmd:     func(t *testing.T) Command { return putGroup(t, "web", "web:1") },
			changed: 0,
			check: func(t *testing.T, f *FSM) {
				if g, _ := f.Group("web"); g.Generation != 1 || g.Index != 1 {
					t.Fatalf("web = generation %d index %d, want 1 and 1", g.Generation, g.Index)
				}
			},
		},
		{
			name:    "put_group with a new spec bumps the generation",
			cmd:     func(t *testing.T) Command { return putGroup(t, "web", "web:2") },
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				if g, _ := f.Group("web"); g.Generation != 2 || g.Index != idx || g.Spec.Containers[0].Image != "web:2" {
					t.Fatalf("web = %+v", g)
				}
			},
		},
		{
			name: "put_group with an explicit generation sets it",
			cmd: func(t *testing.T) Command {
				return mustCommand(t, CmdPutGroup, Group{Name: "web", Spec: testSpec("web", "web:3"), Generation: 7})
			},
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				if g, _ := f.Group("web"); g.Generation != 7 {
					t.Fatalf("web generation = %d, want 7", g.Generation)
				}
			},
		},
		{
			name: "put_group with a stale generation is a conflict",
			cmd: func(t *testing.T) Command {
				return mustCommand(t, CmdPutGroup, Group{Name: "web", Spec: testSpec("web", "web:3"), Generation: 1})
			},
			wantErr: api.ErrConflict,
		},
		{
			name:    "delete_group deletes the group and its allocations",
			cmd:     func(t *testing.T) Command { return mustCommand(t, CmdDeleteGroup, DeleteGroup{Name: "web"}) },
			changed: 2,
			check: func(t *testing.T, f *FSM) {
				if _, ok := f.Group("web"); ok {
					t.Fatal("group web still there")
				}
				if _, ok := f.Allocation("web-0"); ok {
					t.Fatal("allocation web-0 still there")
				}
				if _, ok := f.Allocation("api-0"); !ok {
					t.Fatal("allocation api-0 of another group deleted")
				}
			},
		},
		{
			name:    "delete_group of a missing group changes nothing",
			cmd:     func(t *testing.T) Command { return mustCommand(t, CmdDeleteGroup, DeleteGroup{Name: "nope"}) },
			changed: 0,
		},
		{
			name: "put_allocation rewrites an allocation with the next generation",
			cmd: func(t *testing.T) Command {
				return at(mustCommand(t, CmdPutAllocation, Allocation{ID: "web-0", Group: "web", Node: "n2", Status: api.GroupPending}), t1)
			},
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				a, _ := f.Allocation("web-0")
				want := Allocation{ID: "web-0", Group: "web", Node: "n2", Generation: 2, Status: api.GroupPending, UpdatedAt: t1, Index: idx}
				if a != want {
					t.Fatalf("web-0 = %+v, want %+v", a, want)
				}
			},
		},
		{
			name: "put_allocation of a missing group is not found",
			cmd: func(t *testing.T) Command {
				return mustCommand(t, CmdPutAllocation, Allocation{ID: "x-0", Group: "x", Node: "n1"})
			},
			wantErr: api.ErrNotFound,
		},
		{
			name: "put_allocation with a stale generation is a conflict",
			cmd: func(t *testing.T) Command {
				return mustCommand(t, CmdPutAllocation, Allocation{ID: "web-0", Group: "web", Node: "n2", Generation: 1})
			},
			wantErr: api.ErrConflict,
		},
		{
			name:    "delete_allocation deletes it",
			cmd:     func(t *testing.T) Command { return mustCommand(t, CmdDeleteAllocation, DeleteAllocation{ID: "web-0"}) },
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				if _, ok := f.Allocation("web-0"); ok {
					t.Fatal("web-0 still there")
				}
			},
		},
		{
			name:    "delete_allocation of a missing one changes nothing",
			cmd:     func(t *testing.T) Command { return mustCommand(t, CmdDeleteAllocation, DeleteAllocation{ID: "nope"}) },
			changed: 0,
		},
		{
			name: "set_allocation_status applies current reports and skips stale ones",
			cmd: func(t *testing.T) Command {
				return at(mustCommand(t, CmdSetAllocationStatus, SetAllocationStatus{Updates: []AllocationStatus{
					{ID: "web-0", Generation: 1, Node: "n1", Status: api.GroupRunning, Ready: true},
					{ID: "api-0", Node: "n9", Status: api.GroupFailed, Reason: "wrong node"},
					{ID: "api-0", Generation: 5, Status: api.GroupFailed, Reason: "wrong generation"},
					{ID: "gone", Status: api.GroupRunning},
				}}), t1)
			},
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				a, _ := f.Allocation("web-0")
				if a.Status != api.GroupRunning || !a.Ready || !a.UpdatedAt.Equal(t1) || a.Index != idx || a.Generation != 1 {
					t.Fatalf("web-0 = %+v", a)
				}
				if b, _ := f.Allocation("api-0"); b.Status != "" || b.Index != 4 {
					t.Fatalf("api-0 changed by a stale report: %+v", b)
				}
			},
		},
		{
			name: "put_node replaces the node",
			cmd: func(t *testing.T) Command {
				return at(mustCommand(t, CmdPutNode, NodeInfo{Name: "n1", APIAddr: "10.0.0.1:7070", Status: NodeSuspect, Version: "v2"}), t1)
			},
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				n, _ := f.Node("n1")
				if n.Status != NodeSuspect || n.Version != "v2" || n.Labels != nil || n.Index != idx || !n.UpdatedAt.Equal(t1) {
					t.Fatalf("n1 = %+v", n)
				}
			},
		},
		{
			name:    "delete_node forgets the node and keeps its allocations",
			cmd:     func(t *testing.T) Command { return mustCommand(t, CmdDeleteNode, DeleteNode{Name: "n1"}) },
			changed: 1,
			check: func(t *testing.T, f *FSM) {
				if _, ok := f.Node("n1"); ok {
					t.Fatal("n1 still there")
				}
				if got := f.NodeAllocations("n1"); len(got) != 1 || got[0].ID != "web-0" {
					t.Fatalf("allocations on n1 = %+v", got)
				}
			},
		},
		{
			name: "an invalid payload is rejected",
			cmd: func(t *testing.T) Command {
				return Command{Version: 1, Type: CmdPutNode, Payload: json.RawMessage(`{"name":"n3","status":"zombie"}`)}
			},
			wantErr: api.ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seededFSM(t)
			before := f.State()
			res := applyAt(t, f, idx, tt.cmd(t))
			if f.Index() != idx {
				t.Errorf("Index() = %d, want %d", f.Index(), idx)
			}
			if tt.wantErr != nil {
				err, ok := res.(error)
				if !ok || !errors.Is(err, tt.wantErr) {
					t.Fatalf("result = %v, want an error that is %v", res, tt.wantErr)
				}
				assertSameEntries(t, before, f.State())
				return
			}
			r, ok := res.(Result)
			if !ok {
				t.Fatalf("result = %v, want a Result", res)
			}
			if r.Index != idx || r.Changed != tt.changed {
				t.Fatalf("result = %+v, want index %d, %d changed", r, idx, tt.changed)
			}
			if tt.check != nil {
				tt.check(t, f)
			}
		})
	}
}

// assertSameEntries compares two states but their Index.
func assertSameEntries(t *testing.T, want, got State) {
	t.Helper()
	want.Index, got.Index = 0, 0
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("state changed:\n got %+v\nwant %+v", got, want)
	}
}

func TestFSMRejectsCommandsItCannotRead(t *testing.T) {
	payload := json.RawMessage(`{"name":"db","spec":{"name":"db"}}`)
	tests := []struct {
		name    string
		data    string
		wantErr error
		wantMsg string
	}{
		{"newer version", mustJSON(t, Command{Version: CommandVersion + 1, Type: CmdPutGroup, Payload: payload}), errors.ErrUnsupported, "newer than this build reads"},
		{"no version", mustJSON(t, Command{Type: CmdPutGroup, Payload: payload}), api.ErrInvalid, "has no version"},
		{"unknown type", mustJSON(t, Command{Version: 1, Type: 999, Payload: payload}), errors.ErrUnsupported, "unknown command type 999"},
		{"unknown type among the queue numbers", mustJSON(t, Command{Version: 1, Type: 60, Payload: payload}), errors.ErrUnsupported, "unknown command type 60"},
		{"lease payload of the wrong shape", mustJSON(t, Command{Version: 1, Type: CmdLeaseAcquire, Payload: payload}), api.ErrInvalid, "lease key"},
		{"no payload", mustJSON(t, Command{Version: 1, Type: CmdPutGroup}), api.ErrInvalid, "no payload"},
		{"payload of the wrong shape", `{"version":1,"type":1,"payload":[1,2]}`, api.ErrInvalid, "decoding payload"},
		{"not json", "\x00\x01garbage", api.ErrInvalid, "decoding command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seededFSM(t)
			before := f.State()
			res := f.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: []byte(tt.data)})
			err, ok := res.(error)
			if !ok {
				t.Fatalf("result = %v, want an error", res)
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error = %q, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			assertSameEntries(t, before, f.State())
			if f.Index() != 10 {
				t.Fatalf("Index() = %d, want 10: a rejected entry is still processed", f.Index())
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFSMSnapshotRestoreRoundTrip(t *testing.T) {
	f := seededFSM(t)
	mustApply(t, f, 7, at(mustCommand(t, CmdSetAllocationStatus, SetAllocationStatus{Updates: []AllocationStatus{
		{ID: "web-0", Status: api.GroupRunning, Ready: true},
	}}), t1))
	want := f.State()

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// A write after Snapshot must not leak into what Persist writes.
	mustApply(t, f, 8, putGroup(t, "late", "late:1"))
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v, want closed only", sink.closed, sink.cancelled)
	}

	g := NewFSM()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if got := g.State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", got, want)
	}
	if g.Index() != 7 {
		t.Fatalf("restored Index() = %d, want 7", g.Index())
	}
}

func TestFSMRestoreRefusesNewerFormat(t *testing.T) {
	f := seededFSM(t)
	before := f.State()
	err := f.Restore(io.NopCloser(strings.NewReader(`{"format":3,"state":{"index":99}}`)))
	if err == nil || !strings.Contains(err.Error(), "snapshot format 3") {
		t.Fatalf("Restore = %v, want a format error", err)
	}
	if got := f.State(); !reflect.DeepEqual(got, before) {
		t.Fatal("a refused snapshot changed the state")
	}
}

func TestFSMReadsReturnCopies(t *testing.T) {
	f := seededFSM(t)
	g, _ := f.Group("web")
	g.Spec.Containers[0].Env["MODE"] = "changed"
	g.Spec.Labels["tier"] = "changed"
	n, _ := f.Node("n1")
	n.Labels["zone"] = "changed"
	st := f.State()
	st.Groups["web"].Spec.Containers[0].Env["MODE"] = "changed too"
	delete(st.Allocations, "web-0")

	if g, _ := f.Group("web"); g.Spec.Containers[0].Env["MODE"] != "demo" || g.Spec.Labels["tier"] != "frontend" {
		t.Fatalf("a caller's change reached the FSM: %+v", g.Spec)
	}
	if n, _ := f.Node("n1"); n.Labels["zone"] != "a" {
		t.Fatal("a caller's change of node labels reached the FSM")
	}
	if _, ok := f.Allocation("web-0"); !ok {
		t.Fatal("deleting from State()'s copy deleted from the FSM")
	}
}

func TestFSMListsInOrder(t *testing.T) {
	f := seededFSM(t)
	var names []string
	for _, g := range f.Groups() {
		names = append(names, g.Name)
	}
	var ids []string
	for _, a := range f.Allocations() {
		ids = append(ids, a.ID)
	}
	var nodes []string
	for _, n := range f.Nodes() {
		nodes = append(nodes, n.Name)
	}
	if got := strings.Join(names, ",") + "|" + strings.Join(ids, ",") + "|" + strings.Join(nodes, ","); got != "api,web|api-0,web-0|n1,n2" {
		t.Fatalf("order = %s", got)
	}
}

func TestCommandTypeNames(t *testing.T) {
	for typ, name := range commandNames {
		if typ.String() != name {
			t.Errorf("%d.String() = %q, want %q", typ, typ.String(), name)
		}
		if applied := newPayload(typ) != nil; applied == typ.Reserved() && typ != CmdInvalid {
			t.Errorf("%s: applied=%v reserved=%v: every type is exactly one of them", typ, applied, typ.Reserved())
		}
	}
	if got := CommandType(999).String(); got != "command_type_999" {
		t.Errorf("unknown type String() = %q", got)
	}
}

func TestNewCommandChecksThePayload(t *testing.T) {
	tests := []struct {
		name    string
		typ     CommandType
		payload any
		wantErr error
	}{
		{"wrong payload type", CmdPutGroup, NodeInfo{Name: "n1", Status: NodeAlive}, api.ErrInvalid},
		{"nil payload", CmdDeleteGroup, nil, api.ErrInvalid},
		{"invalid group name", CmdPutGroup, Group{Name: "Not_A_Label"}, api.ErrInvalid},
		{"spec named differently", CmdPutGroup, Group{Name: "web", Spec: api.GroupSpec{Name: "db"}}, api.ErrInvalid},
		{"empty status report", CmdSetAllocationStatus, SetAllocationStatus{}, api.ErrInvalid},
		{"unknown type", CommandType(60), DeleteGroup{Name: "x"}, errors.ErrUnsupported},
		{"pointer payload is fine", CmdDeleteGroup, &DeleteGroup{Name: "web"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCommand(tt.typ, tt.payload)
			if tt.wantErr == nil {
				if err != nil || c.Version != CommandVersion || c.Type != tt.typ {
					t.Fatalf("NewCommand = %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewCommand error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
