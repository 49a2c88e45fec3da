package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/berth-project/berth/api"
)

// CommandVersion is the newest command encoding this build reads and
// writes. A command with a higher Version comes from a newer agent; the FSM
// rejects it (errors.ErrUnsupported) and leaves the state untouched, never
// panics. Because every member must apply the same log to the same state,
// the cluster package must not propose a version that some member's
// NodeInfo.Version cannot read: bump CommandVersion only together with
// such a gate.
const CommandVersion = 1

// CommandType says what a command does. The numbers are written into the
// Raft log and snapshots: never renumber or reuse one.
type CommandType uint16

const (
	// CmdInvalid is the zero value; never valid.
	CmdInvalid CommandType = 0

	// CmdPutGroup creates or replaces a cluster group. Payload: Group.
	CmdPutGroup CommandType = 1
	// CmdDeleteGroup deletes a group and every allocation of it.
	// Payload: DeleteGroup.
	CmdDeleteGroup CommandType = 2
	// CmdPutAllocation creates or replaces an allocation of an existing
	// group. Payload: Allocation.
	CmdPutAllocation CommandType = 3
	// CmdDeleteAllocation deletes an allocation. Payload: DeleteAllocation.
	CmdDeleteAllocation CommandType = 4
	// CmdSetAllocationStatus records the status and readiness of many
	// allocations at once (one agent's report). Payload: SetAllocationStatus.
	CmdSetAllocationStatus CommandType = 5
	// CmdPutNode creates or replaces a node's info. Payload: NodeInfo.
	CmdPutNode CommandType = 6
	// CmdDeleteNode forgets a node; its allocations stay for the
	// scheduler to move. Payload: DeleteNode.
	CmdDeleteNode CommandType = 7
	// CmdApplyPlan puts and deletes many allocations at once, all or
	// nothing: one scheduler pass. Payload: Plan.
	CmdApplyPlan CommandType = 8
	// CmdScaleGroup overrides a group's replica count, or one shard's.
	// Payload: ScaleGroup.
	CmdScaleGroup CommandType = 9
	// CmdSetRollout records the progress of a group's rollout.
	// Payload: Rollout (with Group set through SetRollout).
	CmdSetRollout CommandType = 10
	// CmdSetNodeDrain marks a node drained or not. Payload: NodeDrain.
	CmdSetNodeDrain CommandType = 11
	// CmdBarrier changes nothing. A member that proposes one and sees it
	// applied knows its state holds everything committed before it (an
	// agent starting up waits for that before it stops allocations the
	// state does not give it). Payload: Barrier.
	CmdBarrier CommandType = 12

	// Leases (lease.go): a lease is (key, holder, node, token, expiry),
	// the token being the Raft index at grant.
	//
	// CmdLeaseAcquire grants or renews a lease. Payload: LeaseAcquire.
	CmdLeaseAcquire CommandType = 32
	// CmdLeaseRenew extends a held lease. Payload: LeaseRenew.
	CmdLeaseRenew CommandType = 33
	// CmdLeaseRelease gives a lease up. Payload: LeaseRelease.
	CmdLeaseRelease CommandType = 34
	// CmdLeaseRevoke deletes leases by key, node, group, allocation or
	// holder. Payload: LeaseRevoke.
	CmdLeaseRevoke CommandType = 35

	// Work queues (queue.go): queue definitions and items with
	// lease/ack/nack and a visibility timeout.
	//
	// CmdPutQueue creates or changes a queue. Payload: PutQueue.
	CmdPutQueue CommandType = 48
	// CmdDeleteQueue deletes a queue and its items. Payload: DeleteQueue.
	CmdDeleteQueue CommandType = 49
	// CmdEnqueue pushes items. Payload: Enqueue.
	CmdEnqueue CommandType = 50
	// CmdLeaseItem leases ready items to a worker. Payload: LeaseItem.
	CmdLeaseItem CommandType = 51
	// CmdAckItem completes items. Payload: AckItem.
	CmdAckItem CommandType = 52
	// CmdNackItem fails items. Payload: NackItem.
	CmdNackItem CommandType = 53
	// CmdExtendItem extends the leases of items. Payload: ExtendItem.
	CmdExtendItem CommandType = 54
	// CmdRequeueNode queues again the items leased on a lost node.
	// Payload: RequeueNode.
	CmdRequeueNode CommandType = 55
	// CmdRetryItem queues dead letters again. Payload: RetryItem.
	CmdRetryItem CommandType = 56
)

var commandNames = map[CommandType]string{
	CmdInvalid:             "invalid",
	CmdPutGroup:            "put_group",
	CmdDeleteGroup:         "delete_group",
	CmdPutAllocation:       "put_allocation",
	CmdDeleteAllocation:    "delete_allocation",
	CmdSetAllocationStatus: "set_allocation_status",
	CmdPutNode:             "put_node",
	CmdDeleteNode:          "delete_node",
	CmdLeaseAcquire:        "lease_acquire",
	CmdLeaseRenew:          "lease_renew",
	CmdLeaseRelease:        "lease_release",
	CmdLeaseRevoke:         "lease_revoke",
	CmdPutQueue:            "put_queue",
	CmdApplyPlan:           "apply_plan",
	CmdScaleGroup:          "scale_group",
	CmdSetRollout:          "set_rollout",
	CmdSetNodeDrain:        "set_node_drain",
	CmdBarrier:             "barrier",
	CmdDeleteQueue:         "delete_queue",
	CmdEnqueue:             "enqueue",
	CmdLeaseItem:           "lease_item",
	CmdAckItem:             "ack_item",
	CmdNackItem:            "nack_item",
	CmdExtendItem:          "extend_item",
	CmdRequeueNode:         "requeue_node",
	CmdRetryItem:           "retry_item",
}

func (t CommandType) String() string {
	if n, ok := commandNames[t]; ok {
		return n
	}
	return "command_type_" + strconv.Itoa(int(t))
}

// Reserved reports whether t is declared for a later build and not
// applied by this one. This build applies every type it declares.
func (t CommandType) Reserved() bool { return false }

// Command is one entry of the Raft log: a typed, versioned change of the
// State. Build it with NewCommand.
type Command struct {
	// Version is the encoding of the command; see CommandVersion.
	Version int         `json:"version"`
	Type    CommandType `json:"type"`
	// Time is the proposer's clock; the FSM stamps UpdatedAt fields with
	// it (never with its own clock, so that every member computes the same
	// state). Store.Apply sets it when zero.
	Time    time.Time       `json:"time,omitzero"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (c Command) String() string { return fmt.Sprintf("%s (v%d)", c.Type, c.Version) }

// DeleteGroup is the payload of CmdDeleteGroup.
type DeleteGroup struct {
	Name string `json:"name"`
}

// DeleteAllocation is the payload of CmdDeleteAllocation.
type DeleteAllocation struct {
	ID string `json:"id"`
}

// DeleteNode is the payload of CmdDeleteNode.
type DeleteNode struct {
	Name string `json:"name"`
}

// SetAllocationStatus is the payload of CmdSetAllocationStatus.
type SetAllocationStatus struct {
	Updates []AllocationStatus `json:"updates"`
}

// AllocationStatus is one allocation's reported status. The FSM skips an
// update for an allocation that no longer exists, or whose Generation or
// Node (when set) differ from the stored ones: a stale report changes
// nothing.
type AllocationStatus struct {
	ID         string         `json:"id"`
	Generation int64          `json:"generation,omitempty"`
	Node       string         `json:"node,omitempty"`
	Status     api.GroupState `json:"status"`
	Ready      bool           `json:"ready"`
	Reason     string         `json:"reason,omitempty"`
}

// Barrier is the payload of CmdBarrier: who asked, for the log.
type Barrier struct {
	Node string `json:"node,omitempty"`
}

// newPayload returns a pointer to a zero payload for t, or nil when this
// build does not apply t.
func newPayload(t CommandType) any {
	switch t {
	case CmdPutGroup:
		return &Group{}
	case CmdDeleteGroup:
		return &DeleteGroup{}
	case CmdPutAllocation:
		return &Allocation{}
	case CmdDeleteAllocation:
		return &DeleteAllocation{}
	case CmdSetAllocationStatus:
		return &SetAllocationStatus{}
	case CmdPutNode:
		return &NodeInfo{}
	case CmdDeleteNode:
		return &DeleteNode{}
	case CmdApplyPlan:
		return &Plan{}
	case CmdScaleGroup:
		return &ScaleGroup{}
	case CmdSetRollout:
		return &SetRollout{}
	case CmdSetNodeDrain:
		return &NodeDrain{}
	case CmdBarrier:
		return &Barrier{}
	case CmdLeaseAcquire:
		return &LeaseAcquire{}
	case CmdLeaseRenew:
		return &LeaseRenew{}
	case CmdLeaseRelease:
		return &LeaseRelease{}
	case CmdLeaseRevoke:
		return &LeaseRevoke{}
	case CmdPutQueue:
		return &PutQueue{}
	case CmdDeleteQueue:
		return &DeleteQueue{}
	case CmdEnqueue:
		return &Enqueue{}
	case CmdLeaseItem:
		return &LeaseItem{}
	case CmdAckItem:
		return &AckItem{}
	case CmdNackItem:
		return &NackItem{}
	case CmdExtendItem:
		return &ExtendItem{}
	case CmdRequeueNode:
		return &RequeueNode{}
	case CmdRetryItem:
		return &RetryItem{}
	}
	return nil
}

// coordPayload is a lease or queue payload (lease.go, queue.go): it
// validates itself, and applies itself to the FSM (f.mu held), checking
// everything before it writes anything.
type coordPayload interface {
	validate() error
	apply(f *FSM, index uint64, cmd Command) (int, error)
}

// NewCommand builds a command of the current version. payload must be the
// type the CommandType documents (a value or a pointer to it); it is
// validated as the FSM will validate it.
func NewCommand(t CommandType, payload any) (Command, error) {
	want := newPayload(t)
	if want == nil {
		return Command{}, unsupportedType(t)
	}
	got := reflect.TypeOf(payload)
	if got != nil && got.Kind() == reflect.Pointer {
		got = got.Elem()
	}
	if wantType := reflect.TypeOf(want).Elem(); got != wantType {
		return Command{}, fmt.Errorf("command %s: payload is %v, want raftstore.%s: %w", t, got, wantType.Name(), api.ErrInvalid)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return Command{}, fmt.Errorf("command %s: encoding payload: %v: %w", t, err, api.ErrInvalid)
	}
	c := Command{Version: CommandVersion, Type: t, Payload: data}
	if _, err := c.decode(); err != nil {
		return Command{}, err
	}
	return c, nil
}

func unsupportedType(t CommandType) error {
	if t.Reserved() {
		return fmt.Errorf("command %s is reserved and not implemented by this build: %w", t, errors.ErrUnsupported)
	}
	return fmt.Errorf("unknown command type %d: written by a newer agent? upgrade this one: %w", uint16(t), errors.ErrUnsupported)
}

// decodeCommand parses one log entry.
func decodeCommand(data []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil {
		return Command{}, fmt.Errorf("decoding command: %v: %w", err, api.ErrInvalid)
	}
	return c, nil
}

// decode checks c's version and type and returns its validated payload.
// Every check here is deterministic: all members reach the same verdict.
func (c Command) decode() (any, error) {
	switch {
	case c.Version < 1:
		return nil, fmt.Errorf("command %s has no version: %w", c.Type, api.ErrInvalid)
	case c.Version > CommandVersion:
		return nil, fmt.Errorf("command %s has version %d, newer than this build reads (up to %d): upgrade this agent: %w",
			c.Type, c.Version, CommandVersion, errors.ErrUnsupported)
	}
	p := newPayload(c.Type)
	if p == nil {
		return nil, unsupportedType(c.Type)
	}
	if len(c.Payload) == 0 {
		return nil, fmt.Errorf("command %s has no payload: %w", c, api.ErrInvalid)
	}
	if err := json.Unmarshal(c.Payload, p); err != nil {
		return nil, fmt.Errorf("command %s: decoding payload: %v: %w", c, err, api.ErrInvalid)
	}
	if err := validatePayload(p); err != nil {
		return nil, fmt.Errorf("command %s: %v: %w", c, err, api.ErrInvalid)
	}
	return p, nil
}

func validatePayload(p any) error {
	if c, ok := p.(coordPayload); ok {
		return c.validate()
	}
	switch p := p.(type) {
	case *Group:
		if !api.IsDNSLabel(p.Name) {
			return fmt.Errorf("group name %q is not a DNS label", p.Name)
		}
		if p.Spec.Name != "" && p.Spec.Name != p.Name {
			return fmt.Errorf("group %q: spec is named %q", p.Name, p.Spec.Name)
		}
		if p.Generation < 0 {
			return fmt.Errorf("group %q: negative generation %d", p.Name, p.Generation)
		}
	case *DeleteGroup:
		if p.Name == "" {
			return errors.New("group name is empty")
		}
	case *Allocation:
		switch {
		case p.ID == "":
			return errors.New("allocation id is empty")
		case p.Group == "":
			return fmt.Errorf("allocation %q: group is empty", p.ID)
		case p.Replica < 0 || p.Shard < 0:
			return fmt.Errorf("allocation %q: negative replica or shard", p.ID)
		case p.Generation < 0:
			return fmt.Errorf("allocation %q: negative generation %d", p.ID, p.Generation)
		}
	case *DeleteAllocation:
		if p.ID == "" {
			return errors.New("allocation id is empty")
		}
	case *SetAllocationStatus:
		if len(p.Updates) == 0 {
			return errors.New("no updates")
		}
		for i, u := range p.Updates {
			if u.ID == "" {
				return fmt.Errorf("updates[%d]: allocation id is empty", i)
			}
			if u.Status == "" {
				return fmt.Errorf("updates[%d]: allocation %q: status is empty", i, u.ID)
			}
		}
	case *NodeInfo:
		if p.Name == "" {
			return errors.New("node name is empty")
		}
		if !p.Status.Valid() {
			return fmt.Errorf("node %q: unknown status %q (want alive, suspect, dead or left)", p.Name, p.Status)
		}
	case *DeleteNode:
		if p.Name == "" {
			return errors.New("node name is empty")
		}
	case *Plan:
		if len(p.Put) == 0 && len(p.Delete) == 0 {
			return errors.New("empty plan")
		}
		for i := range p.Put {
			if err := validatePayload(&p.Put[i]); err != nil {
				return fmt.Errorf("put[%d]: %w", i, err)
			}
		}
		for i, id := range p.Delete {
			if id == "" {
				return fmt.Errorf("delete[%d]: allocation id is empty", i)
			}
		}
	case *ScaleGroup:
		switch {
		case p.Name == "":
			return errors.New("group name is empty")
		case p.Replicas < 0:
			return fmt.Errorf("group %q: negative replicas %d", p.Name, p.Replicas)
		case p.Shard != nil && *p.Shard < 0:
			return fmt.Errorf("group %q: negative shard %d", p.Name, *p.Shard)
		}
	case *SetRollout:
		if p.Group == "" {
			return errors.New("group name is empty")
		}
		switch p.Rollout.State {
		case RolloutProgressing, RolloutComplete, RolloutReverted, RolloutFailed:
		default:
			return fmt.Errorf("group %q: unknown rollout state %q", p.Group, p.Rollout.State)
		}
	case *NodeDrain:
		if p.Name == "" {
			return errors.New("node name is empty")
		}
	}
	return nil
}

// Plan is the payload of CmdApplyPlan: allocations to put (same rules as
// CmdPutAllocation) and to delete, applied together or not at all.
type Plan struct {
	Put    []Allocation `json:"put,omitempty"`
	Delete []string     `json:"delete,omitempty"`
}

// ScaleGroup is the payload of CmdScaleGroup. Without Shard it sets the
// group's replica count (0 clears the override); with Shard it sets that
// shard's replica count (0 clears it).
type ScaleGroup struct {
	Name     string `json:"name"`
	Shard    *int   `json:"shard,omitempty"`
	Replicas int    `json:"replicas"`
	// Min and Max, when Max > 0, bound Replicas (the group asking for
	// itself within its spec's min_replicas/max_replicas): the FSM refuses
	// a count outside them, deterministically.
	Min int `json:"min,omitempty"`
	Max int `json:"max,omitempty"`
}

// SetRollout is the payload of CmdSetRollout: it applies only while the
// group is still at Rollout.Generation.
type SetRollout struct {
	Group   string  `json:"group"`
	Rollout Rollout `json:"rollout"`
}

// NodeDrain is the payload of CmdSetNodeDrain.
type NodeDrain struct {
	Name  string `json:"name"`
	Drain bool   `json:"drain"`
}
