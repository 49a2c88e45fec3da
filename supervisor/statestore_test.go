package supervisor

import (
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// memState is an in-memory StateStore.
type memState struct {
	mu   sync.Mutex
	recs map[string]GroupRecord
}

var _ StateStore = (*memState)(nil)

func (m *memState) LoadGroup(g string) (GroupRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[g]
	return r, ok
}

func (m *memState) SaveGroup(g string, r GroupRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[g] = r
	return nil
}

func (m *memState) DeleteGroup(g string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.recs, g)
	return nil
}

// TestReattachRestoresStateFromTheStore: restart counts, a pending backoff
// and probe verdicts come back from the store on reattach; a stored
// verdict of a probe the spec does not have is ignored (it once made the
// agent start a startup probe with no spec and crash).
func TestReattachRestoresStateFromTheStore(t *testing.T) {
	h := newHarness(t)
	st := &memState{recs: map[string]GroupRecord{"web": {
		SpecHash:  "hash-1",
		Restarts:  map[string]int{"a": 3},
		Failures:  2,
		Ready:     map[string]bool{"a": false, "b": true},
		StartupOK: map[string]bool{"a": false, "b": false},
	}}}
	h.cfg.State = st
	h.rt.addContainer("web.a", recoveredLabels("web", "a", "SIGTERM", "100ms"), 4000, false, 0)
	h.rt.addContainer("web.b", recoveredLabels("web", "b", "SIGTERM", "100ms"), 4001, false, 0)
	h.start()
	h.sup.Set(testGroup("web", 1, "a", "b")) // no probes in the spec
	got := h.waitState("web", api.GroupRunning, "Reattached")
	if got.Containers[0].Restarts != 3 || got.Restarts != 3 {
		t.Errorf("restarts after reattach: %d (group %d), want 3", got.Containers[0].Restarts, got.Restarts)
	}
	// Without a readiness probe a running container is ready, whatever was stored.
	eventually(t, "ready", func() bool { s, _ := h.sup.Status("web"); return s.Ready })
	if rec, _ := st.LoadGroup("web"); rec.Restarts["a"] != 3 {
		t.Errorf("stored record lost the restart count: %+v", rec)
	}
	time.Sleep(20 * time.Millisecond) // the runner goroutine must still be alive
	if s, ok := h.sup.Status("web"); !ok || s.State != api.GroupRunning {
		t.Errorf("after reattach: %+v", s)
	}
}
