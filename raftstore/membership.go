package raftstore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// ID is this member's server ID (Config.NodeID).
func (s *Store) ID() string { return s.cfg.NodeID }

// Addr is the address this member's transport advertises.
func (s *Store) Addr() string { return string(s.transport.LocalAddr()) }

// Leader returns the current leader's ID and address as this member knows
// them; both empty while there is none.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this member believes it leads. For reads that
// must be exact, call VerifyLeader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// LeaderCh delivers true when this member becomes leader and false when
// it stops. It holds one value and drops transitions a slow receiver
// misses, so re-check IsLeader after each receive. One receiver only (the
// scheduler's Run loop).
func (s *Store) LeaderCh() <-chan bool { return s.raft.LeaderCh() }

// AddVoter adds a voting member, or promotes a non-voter. Leader only.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	t, err := timeout(ctx)
	if err != nil {
		return err
	}
	return s.membership(ctx, "add voter "+id, s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t))
}

// AddNonvoter adds a member that receives the log but does not vote (DESIGN:
// every agent beyond the first five voters). Leader only.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	t, err := timeout(ctx)
	if err != nil {
		return err
	}
	return s.membership(ctx, "add nonvoter "+id, s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t))
}

// RemoveServer removes a member. Leader only; removing the leader itself
// makes it step down.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	t, err := timeout(ctx)
	if err != nil {
		return err
	}
	return s.membership(ctx, "remove server "+id, s.raft.RemoveServer(raft.ServerID(id), 0, t))
}

// LeadershipTransfer hands leadership to another voter and returns once
// it took over (or failed). Leader only.
func (s *Store) LeadershipTransfer(ctx context.Context) error {
	return s.membership(ctx, "leadership transfer", s.raft.LeadershipTransfer())
}

func (s *Store) membership(ctx context.Context, op string, f raft.Future) error {
	if err := wait(ctx, f); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return s.raftError(op, err)
	}
	return nil
}

// Suffrage is a member's vote in the cluster.
type Suffrage string

const (
	Voter    Suffrage = "voter"
	Nonvoter Suffrage = "nonvoter"
	// Staging is raft's reserved third kind; unused by raft today.
	Staging Suffrage = "staging"
)

// Server is one member of the Raft configuration.
type Server struct {
	ID       string   `json:"id"`
	Address  string   `json:"address"`
	Suffrage Suffrage `json:"suffrage"`
	Leader   bool     `json:"leader"`
}

// Servers returns the latest Raft configuration, in its order.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, s.raftError("servers", err)
	}
	leaderID, _ := s.Leader()
	var out []Server
	for _, sv := range f.Configuration().Servers {
		su := Voter
		switch sv.Suffrage {
		case raft.Nonvoter:
			su = Nonvoter
		case raft.Staging:
			su = Staging
		}
		out = append(out, Server{
			ID:       string(sv.ID),
			Address:  string(sv.Address),
			Suffrage: su,
			Leader:   leaderID != "" && string(sv.ID) == leaderID,
		})
	}
	return out, nil
}

// Stats is this member's view of Raft.
type Stats struct {
	// State is Follower, Candidate, Leader or Shutdown.
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// FSMIndex is the index of the last command applied to the State.
	FSMIndex          uint64 `json:"fsm_index"`
	LastSnapshotIndex uint64 `json:"last_snapshot_index"`
	LeaderID          string `json:"leader_id,omitempty"`
	LeaderAddr        string `json:"leader_addr,omitempty"`
	// LastContact is the last time a follower heard from the leader
	// (zero on the leader, or never).
	LastContact time.Time `json:"last_contact,omitzero"`
}

// Stats returns this member's Raft indexes and role.
func (s *Store) Stats() Stats {
	st := Stats{
		State:        s.raft.State().String(),
		Term:         s.raft.CurrentTerm(),
		LastIndex:    s.raft.LastIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		FSMIndex:     s.fsm.Index(),
	}
	st.LeaderID, st.LeaderAddr = s.Leader()
	if st.State != raft.Leader.String() {
		st.LastContact = s.raft.LastContact()
	}
	// raft exposes the snapshot index only through its string stats.
	if v, err := strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64); err == nil {
		st.LastSnapshotIndex = v
	}
	return st
}

// BootstrapCluster forms the first Raft configuration, with servers as
// voters, on a member that has no Raft state yet (a cluster's servers
// started with bootstrap_expect: each calls it with the same list once it
// sees that many servers). With existing state it does nothing and
// returns nil: the cluster formed already.
func (s *Store) BootstrapCluster(servers []Server) error {
	conf := raft.Configuration{}
	for _, sv := range servers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(sv.ID), Address: raft.ServerAddress(sv.Address)})
	}
	err := s.raft.BootstrapCluster(conf).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return s.raftError("bootstrap", err)
}
