package raftstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/berth-project/berth/api"
)

// logCacheSize is how many recent log entries are kept in memory in front
// of the bolt store (replication to a lagging follower reads them).
const logCacheSize = 512

// Store is one Raft member with Berth's FSM: it replicates Commands and
// serves the State from memory. All methods are safe for concurrent use.
type Store struct {
	cfg       Config
	raft      *raft.Raft
	fsm       *FSM
	bolt      *raftboltdb.BoltStore
	transport raft.Transport
	// ownTransport is set when Open made the transport, to close it when
	// Open fails after making it (once raft runs, its shutdown does).
	ownTransport io.Closer

	closeOnce sync.Once
	closeErr  error
}

// Open starts this member on cfg.DataDir. A nil transport means a TCP
// transport listening on cfg.BindAddr (advertising cfg.Advertise); a given
// one (raft.NewInmemTransport in tests, a TLS stream layer later) is used
// as is. Either way the Store owns it from then on: raft closes it on
// shutdown (Close), and Open closes the one it made when it fails. When
// cfg.Bootstrap is set and
// DataDir holds no Raft state, the member bootstraps a cluster with itself
// as the only voter; with existing state it restores the latest snapshot
// and replays the log after it as soon as a leader commits.
func Open(cfg Config, transport raft.Transport) (_ *Store, retErr error) {
	if err := cfg.validate(transport != nil); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: creating data dir: %w", err)
	}
	s := &Store{cfg: cfg, fsm: NewFSM()}
	defer func() {
		if retErr != nil {
			s.fsm.close()
			if s.ownTransport != nil {
				_ = s.ownTransport.Close()
			}
			if s.bolt != nil {
				_ = s.bolt.Close()
			}
		}
	}()

	logger := newHCLogger(cfg.logger(), "raft")
	var err error
	s.bolt, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("raftstore: opening %s: %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	logs, err := raft.NewLogCache(logCacheSize, s.bolt)
	if err != nil {
		return nil, fmt.Errorf("raftstore: log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, logger.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("raftstore: snapshot store: %w", err)
	}

	if transport == nil {
		nt, err := newTCPTransport(&cfg, logger.Named("transport"))
		if err != nil {
			return nil, err
		}
		transport, s.ownTransport = nt, nt
	}
	s.transport = transport

	rc := cfg.raftConfig()
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, s.bolt, snaps)
		if err != nil {
			return nil, fmt.Errorf("raftstore: checking for existing state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter,
				ID:       rc.LocalID,
				Address:  transport.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, logs, s.bolt, snaps, transport, conf); err != nil {
				return nil, fmt.Errorf("raftstore: bootstrapping: %w", err)
			}
		}
	}

	s.raft, err = raft.NewRaft(rc, s.fsm, logs, s.bolt, snaps, transport)
	if err != nil {
		return nil, fmt.Errorf("raftstore: starting raft: %w", err)
	}
	return s, nil
}

func newTCPTransport(cfg *Config, logger hclog.Logger) (*raft.NetworkTransport, error) {
	var adv net.Addr
	if cfg.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("raftstore: advertise %q: %w", cfg.Advertise, err)
		}
		adv = a
	}
	t, err := raft.NewTCPTransportWithLogger(cfg.BindAddr, adv, cfg.MaxPool, cfg.TransportTimeout, logger)
	if err != nil {
		return nil, fmt.Errorf("raftstore: listening on %s: %w", cfg.BindAddr, err)
	}
	return t, nil
}

// Close stops this member: raft shuts down and closes the transport (a
// leader steps down without handing over: call LeadershipTransfer first
// for a quick failover), the log store is closed, and every Watch and
// WaitIndex ends. The replicated state stays in DataDir. Idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shutting down raft: %w", err))
		}
		s.fsm.close()
		if err := s.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing log store: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("raftstore: close: %w", err)
		}
	})
	return s.closeErr
}

// NotLeaderError is returned by writes on a member that is not the leader.
// It is an api.ErrNotLeader and names the leader, when one is known, so
// that the caller can forward the write.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "not leader: no leader is known yet (election in progress?); retry shortly"
	}
	return fmt.Sprintf("not leader: the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return api.ErrNotLeader }

func (s *Store) notLeader() error {
	id, addr := s.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// raftError converts raft's errors into the api classes.
func (s *Store) raftError(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return fmt.Errorf("raftstore: %s: %w", op, s.notLeader())
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("raftstore: %s: leadership lost before commit, the outcome is unknown: %w", op, api.ErrUnavailable)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("raftstore: %s: %w", op, ErrClosed)
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("raftstore: %s: %v: %w", op, err, api.ErrUnavailable)
	}
	return fmt.Errorf("raftstore: %s: %w", op, err)
}

// timeout turns ctx's deadline into raft's enqueue timeout (0: none).
func timeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d, ok := ctx.Deadline()
	if !ok {
		return 0, nil
	}
	t := time.Until(d)
	if t <= 0 {
		return 0, context.DeadlineExceeded
	}
	return t, nil
}

// wait waits for a raft future or ctx. Raft answers every future, at the
// latest when it shuts down, so the goroutine left behind when ctx ends
// first does end.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Apply replicates cmd and returns its log index once this member applied
// it. On a follower it returns a *NotLeaderError (an api.ErrNotLeader naming
// the leader). A command the FSM rejects returns the FSM's error together
// with the index it was committed at. A Version of 0 means CommandVersion;
// a zero Time is set to now. When ctx ends first Apply returns ctx.Err()
// and the command may still be applied.
func (s *Store) Apply(ctx context.Context, cmd Command) (uint64, error) {
	if cmd.Version == 0 {
		cmd.Version = CommandVersion
	}
	if _, err := cmd.decode(); err != nil {
		return 0, fmt.Errorf("raftstore: apply: %w", err)
	}
	if cmd.Time.IsZero() {
		cmd.Time = time.Now().UTC()
	}
	if s.raft.State() != raft.Leader {
		return 0, fmt.Errorf("raftstore: apply %s: %w", cmd.Type, s.notLeader())
	}
	data, err := json.Marshal(cmd)
	if err != nil {
		return 0, fmt.Errorf("raftstore: apply %s: encoding: %w", cmd.Type, err)
	}
	t, err := timeout(ctx)
	if err != nil {
		return 0, err
	}
	f := s.raft.Apply(data, t)
	if err := wait(ctx, f); err != nil {
		if ctx.Err() != nil {
			return 0, err
		}
		return 0, s.raftError("apply "+cmd.Type.String(), err)
	}
	switch r := f.Response().(type) {
	case error:
		return f.Index(), fmt.Errorf("raftstore: apply: %w", r)
	case Result:
		return r.Index, nil
	}
	return f.Index(), nil
}

// Barrier returns once every entry committed before it is applied to this
// member's FSM: on the leader, reads after it see every acknowledged
// write. Leader only.
func (s *Store) Barrier(ctx context.Context) error {
	t, err := timeout(ctx)
	if err != nil {
		return err
	}
	if err := wait(ctx, s.raft.Barrier(t)); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return s.raftError("barrier", err)
	}
	return nil
}

// VerifyLeader checks with a quorum that this member is still the leader;
// for reads that must be exact ("who holds the lease"). It returns a
// *NotLeaderError otherwise.
func (s *Store) VerifyLeader(ctx context.Context) error {
	if err := wait(ctx, s.raft.VerifyLeader()); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return s.raftError("verify leader", err)
	}
	return nil
}

// Snapshot takes a snapshot now (raft also takes them by itself, see
// Config.SnapshotThreshold) and compacts the log. Nothing new to snapshot
// is not an error.
func (s *Store) Snapshot() error {
	err := s.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return s.raftError("snapshot", err)
}

// Watch returns a channel receiving this member's applied index: the
// current one, then the newest after changes (coalesced; it never slows
// raft down). It is closed when ctx ends or the store closes.
func (s *Store) Watch(ctx context.Context) <-chan uint64 { return s.fsm.Watch(ctx) }

// WaitIndex waits until this member applied index idx (from Apply, on any
// member), ctx ends or the store closes (ErrClosed).
func (s *Store) WaitIndex(ctx context.Context, idx uint64) error { return s.fsm.WaitIndex(ctx, idx) }

// Index is the index of the last command this member applied.
func (s *Store) Index() uint64 { return s.fsm.Index() }

// State returns a deep copy of this member's state, consistent at one
// index. On a follower it may lag the leader; after WaitIndex(i) it
// includes index i.
func (s *Store) State() State { return s.fsm.State() }

// Groups returns the cluster groups, ordered by name.
func (s *Store) Groups() []Group { return s.fsm.Groups() }

// Group returns one cluster group.
func (s *Store) Group(name string) (Group, bool) { return s.fsm.Group(name) }

// Allocations returns every allocation, ordered by group, replica, shard.
func (s *Store) Allocations() []Allocation { return s.fsm.Allocations() }

// Allocation returns one allocation.
func (s *Store) Allocation(id string) (Allocation, bool) { return s.fsm.Allocation(id) }

// NodeAllocations returns the allocations placed on node.
func (s *Store) NodeAllocations(node string) []Allocation { return s.fsm.NodeAllocations(node) }

// Nodes returns every node, ordered by name.
func (s *Store) Nodes() []NodeInfo { return s.fsm.Nodes() }

// Node returns one node.
func (s *Store) Node(name string) (NodeInfo, bool) { return s.fsm.Node(name) }

// Lease returns the lease of key (LeaseKey).
func (s *Store) Lease(key string) (Lease, bool) { return s.fsm.Lease(key) }

// Leases returns every lease, ordered by key.
func (s *Store) Leases() []Lease { return s.fsm.Leases() }

// GroupLeases returns the leases held by holders of group.
func (s *Store) GroupLeases(group string) []Lease { return s.fsm.GroupLeases(group) }

// Queue returns one queue's definition.
func (s *Store) Queue(name string) (Queue, bool) { return s.fsm.Queue(name) }

// Queues returns every queue, ordered by name.
func (s *Store) Queues() []Queue { return s.fsm.Queues() }

// QueueStats returns the counts of a queue's items, in O(1).
func (s *Store) QueueStats(name string) (QueueStats, bool) { return s.fsm.QueueStats(name) }

// Items returns a queue's items in ID order, as filter selects.
func (s *Store) Items(queue string, filter ItemFilter) []QueueItem { return s.fsm.Items(queue, filter) }

// Item returns one item of a queue with its data and result.
func (s *Store) Item(queue string, id uint64) (QueueItem, bool) { return s.fsm.Item(queue, id) }

// LeasedItems returns the items the CmdLeaseItem at index token leased
// that are still leased with it: what a lease got, read after its index.
func (s *Store) LeasedItems(queue string, token uint64) []QueueItem {
	return s.fsm.LeasedItems(queue, token)
}

// EnqueuedIDs returns the IDs the CmdEnqueue at index gave its items.
func (s *Store) EnqueuedIDs(queue string, index uint64) []uint64 {
	return s.fsm.EnqueuedIDs(queue, index)
}
