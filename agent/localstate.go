package agent

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berth-project/berth/supervisor"
)

var (
	groupsBucket = []byte("groups") // the supervisor's runtime state
	agentBucket  = []byte("agent")  // the agent's desired-state bookkeeping
	desiredKey   = []byte("desired")
)

// localState is the agent's small local database (bbolt, under the state
// dir) for what containerd labels cannot hold: the supervisor's restart
// counts and backoff deadlines (its StateStore), and the agent's
// generations, stop flags and drain flag.
type localState struct {
	db *bolt.DB
}

var _ supervisor.StateStore = (*localState)(nil)

func openLocalState(path string) (*localState, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open local state %s: %w (is another agentd using this state dir?)", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(groupsBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(agentBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &localState{db: db}, nil
}

func (s *localState) Close() error { return s.db.Close() }

func (s *localState) LoadGroup(group string) (supervisor.GroupRecord, bool) {
	var rec supervisor.GroupRecord
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(groupsBucket).Get([]byte(group)); v != nil {
			found = json.Unmarshal(v, &rec) == nil
		}
		return nil
	})
	return rec, found
}

func (s *localState) SaveGroup(group string, rec supervisor.GroupRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(groupsBucket).Put([]byte(group), b)
	})
}

func (s *localState) DeleteGroup(group string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(groupsBucket).Delete([]byte(group))
	})
}

// loadDesired returns the agent's persisted bookkeeping, if any.
func (s *localState) loadDesired() ([]byte, bool) {
	var out []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(agentBucket).Get(desiredKey); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, out != nil
}

func (s *localState) saveDesired(data []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(agentBucket).Put(desiredKey, data)
	})
}
