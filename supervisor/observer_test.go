package supervisor

import (
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// recordingObserver records SandboxReady and SandboxGone calls, and
// whether the sandbox was still there (not yet destroyed) at SandboxGone.
type recordingObserver struct {
	sb    *fakeSandboxes
	mu    sync.Mutex
	calls []string
}

func (o *recordingObserver) SandboxReady(spec *api.GroupSpec, sb *Sandbox) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, "ready "+spec.Name+" "+sb.Group)
}

func (o *recordingObserver) SandboxGone(group string) {
	live := o.sb.count("Destroy", group) == 0
	o.mu.Lock()
	defer o.mu.Unlock()
	if live {
		o.calls = append(o.calls, "gone "+group)
	} else {
		o.calls = append(o.calls, "gone-after-destroy "+group)
	}
}

func (o *recordingObserver) seen() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.calls...)
}

// TestObserversSeeSandboxComeAndGo: an observer learns of a group's
// sandbox when it starts, and before Destroy when it is deleted.
func TestObserversSeeSandboxComeAndGo(t *testing.T) {
	h := newHarness(t)
	obs := &recordingObserver{sb: h.sb}
	h.cfg.Observers = []SandboxObserver{obs}
	h.start()
	h.sup.Set(testGroup("web", 1, "app"))
	h.waitRunning("web", 1)
	if got := obs.seen(); len(got) != 1 || got[0] != "ready web web" {
		t.Fatalf("after start, observer saw %q; want one SandboxReady for web", got)
	}
	<-h.sup.Remove("web")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(obs.seen()) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	if got := obs.seen(); len(got) != 2 || got[1] != "gone web" {
		t.Fatalf("after delete, observer saw %q; want SandboxGone for web before Destroy", got)
	}
}
