package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// queueAgent is an agent named n1 with a real one-voter Raft store (in
// memory transport) and no supervisor: the queue routes and chores under
// test read and write the Raft state.
func queueAgent(t *testing.T) *Agent {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = "n1"
	cfg.StateDir = t.TempDir()
	a := New(cfg, slog.New(slog.DiscardHandler))
	rc := raftstore.DefaultConfig()
	rc.NodeID, rc.DataDir, rc.Logger = "n1", t.TempDir(), slog.New(slog.DiscardHandler)
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	_, tr := raft.NewInmemTransport("n1")
	st, err := raftstore.Open(rc, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a.cl = &clusterRT{self: "n1", store: st, prop: storeProposer{st}, log: a.log}
	return a
}

// decodeSpec decodes one group file, with its defaults.
func decodeSpec(t *testing.T, toml string) *api.GroupSpec {
	t.Helper()
	spec, err := api.Decode("test.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

const jobsGroup = `name = "jobs"
[placement]
replicas = 2
[queue]
mode = "pull"
parallelism = 2
max_attempts = 2
backoff = "1s"
visibility_timeout = "2s"
max_item_size = "16B"
[[container]]
name = "w"
image = "berth.local/busybox:latest"
`

// applyJobs applies jobsGroup as a cluster group.
func applyJobs(t *testing.T, a *Agent) {
	t.Helper()
	if _, err := a.applyCluster(context.Background(), []*api.GroupSpec{decodeSpec(t, jobsGroup)}, false); err != nil {
		t.Fatal(err)
	}
}

// adminClient serves a's admin API over HTTP and returns a client of it.
func adminClient(t *testing.T, a *Agent) *api.Client {
	t.Helper()
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return api.NewHTTPClient(srv.URL, srv.Client())
}

func TestQueueFollowsItsClusterGroup(t *testing.T) {
	a := queueAgent(t)
	ctx := context.Background()
	applyJobs(t, a)
	q, ok := a.cl.store.Queue("jobs")
	if !ok || q.Group != "jobs" || q.Spec.Parallelism != 2 || q.Spec.MaxItemSize != 16 {
		t.Fatalf("queue after apply: %+v %v", q, ok)
	}
	// A change of the spec changes the queue.
	spec := decodeSpec(t, strings.Replace(jobsGroup, "parallelism = 2", "parallelism = 5", 1))
	if _, err := a.applyCluster(ctx, []*api.GroupSpec{spec}, false); err != nil {
		t.Fatal(err)
	}
	if q, _ := a.cl.store.Queue("jobs"); q.Spec.Parallelism != 5 {
		t.Errorf("parallelism %d after the update, want 5", q.Spec.Parallelism)
	}
	// Another group may not take the name.
	other := decodeSpec(t, strings.Replace(strings.Replace(jobsGroup, `name = "jobs"`, `name = "other"`, 1), "[queue]", "[queue]\nname = \"jobs\"", 1))
	_, err := a.applyCluster(ctx, []*api.GroupSpec{other}, false)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), `queue "jobs" belongs to group "jobs"`) {
		t.Errorf("another group's queue name: %v", err)
	}
	if _, ok := a.cl.store.Group("other"); ok {
		t.Error("the refused group was written")
	}
	// A group that no longer defines it loses it.
	noQueue := decodeSpec(t, strings.Replace(jobsGroup, "[queue]\nmode = \"pull\"\nparallelism = 2\nmax_attempts = 2\nbackoff = \"1s\"\nvisibility_timeout = \"2s\"\nmax_item_size = \"16B\"\n", "", 1))
	if noQueue.Queue != nil {
		t.Fatal("test spec still has a queue")
	}
	if _, err := a.applyCluster(ctx, []*api.GroupSpec{noQueue}, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.cl.store.Queue("jobs"); ok {
		t.Error("queue kept after its group dropped [queue]")
	}

	// The leader's chore: a queue missing for a group that defines one is
	// written; a queue whose group is gone is deleted.
	applyJobs(t, a)
	mustPropose(t, a, raftstore.CmdDeleteQueue, raftstore.DeleteQueue{Name: "jobs"})
	mustPropose(t, a, raftstore.CmdPutQueue, raftstore.PutQueue{Name: "ghost", Group: "ghost", Spec: api.QueueSpec{Mode: api.QueuePull}})
	a.reconcileQueues(ctx)
	if _, ok := a.cl.store.Queue("jobs"); !ok {
		t.Error("reconcile did not write the queue of group jobs")
	}
	if _, ok := a.cl.store.Queue("ghost"); ok {
		t.Error("reconcile kept a queue no group defines")
	}
	// Deleting the group deletes its queue (the FSM does).
	mustPropose(t, a, raftstore.CmdDeleteGroup, raftstore.DeleteGroup{Name: "jobs"})
	if _, ok := a.cl.store.Queue("jobs"); ok {
		t.Error("queue kept after its group was deleted")
	}
}

func TestQueueNeedsPlacement(t *testing.T) {
	a := queueAgent(t)
	_, err := a.Apply(api.ApplyRequest{Files: []api.ApplyFile{{Name: "local.toml", Content: `name = "local"
[queue]
mode = "container"
[[container]]
name = "w"
image = "berth.local/busybox:latest"
`}}})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "local.toml") || !strings.Contains(err.Error(), "[queue] needs [placement]") {
		t.Errorf("a local group with [queue]: %v", err)
	}
}

func TestQueueAPIPushLeaseAckNackRetry(t *testing.T) {
	a := queueAgent(t)
	applyJobs(t, a)
	c := adminClient(t, a)
	ctx := context.Background()

	res, err := c.Push(ctx, "jobs", [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	if err != nil || !slices.Equal(res.IDs, []uint64{1, 2, 3}) {
		t.Fatalf("push: %+v %v", res, err)
	}
	_, err = c.Push(ctx, "jobs", [][]byte{[]byte("ok"), []byte("this one is too long")})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "item 2 of 2 is 20 bytes, more than the queue's max_item_size of 16 bytes") {
		t.Errorf("oversized push: %v", err)
	}
	_, err = c.Push(ctx, "nope", [][]byte{[]byte("x")})
	if !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), `queue "nope" not found`) {
		t.Errorf("push to a missing queue: %v", err)
	}
	if q, _ := c.Queue(ctx, "jobs"); q.Status.Total != 3 || q.Status.Queued != 3 {
		t.Errorf("status after pushes: %+v", q.Status)
	}

	// Parallelism 2: a lease of 5 gets 2, the next none.
	l, err := c.LeaseItems(ctx, "jobs", api.LeaseRequest{Max: 5, Worker: "w1"})
	if err != nil || len(l.Items) != 2 || l.Items[0].ID != 1 || string(l.Items[1].Data) != "b" || l.Items[0].Attempt != 1 {
		t.Fatalf("lease: %+v %v", l, err)
	}
	if l2, err := c.LeaseItems(ctx, "jobs", api.LeaseRequest{Max: 5}); err != nil || len(l2.Items) != 0 {
		t.Errorf("lease beyond the parallelism: %+v %v", l2, err)
	}
	one, two := l.Items[0], l.Items[1]

	ack, err := c.Ack(ctx, "jobs", api.Ack{ID: one.ID, Token: one.Token, Result: []byte("r1")})
	if err != nil || ack.Results[0].Outcome != api.AckDone {
		t.Fatalf("ack: %+v %v", ack, err)
	}
	if ack, err := c.Ack(ctx, "jobs", api.Ack{ID: one.ID, Token: one.Token}); err != nil || ack.Results[0].Outcome != api.AckDuplicate {
		t.Errorf("second ack: %+v %v, want a duplicate", ack, err)
	}
	if _, err := c.Ack(ctx, "jobs", api.Ack{ID: 3, Token: 999999}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("ack with a token never given: %v", err)
	}
	it, err := c.QueueItem(ctx, "jobs", one.ID)
	if err != nil || it.State != api.ItemDone || string(it.Result) != "r1" || it.DoneNode != "n1" || it.DoneWorker != "w1" {
		t.Errorf("done item: %+v %v", it, err)
	}

	// A nack puts the item back after the backoff; the second failure
	// (max_attempts 2) makes it a dead letter, which retry brings back.
	nk, err := c.Nack(ctx, "jobs", api.Nack{ID: two.ID, Token: two.Token, Error: "boom"})
	if err != nil || nk.Results[0].State != api.ItemQueued || nk.Results[0].NotBefore.IsZero() || nk.Results[0].Stale {
		t.Fatalf("nack: %+v %v", nk, err)
	}
	if nk, err := c.Nack(ctx, "jobs", api.Nack{ID: two.ID, Token: two.Token}); err != nil || !nk.Results[0].Stale {
		t.Errorf("second nack of the same lease: %+v %v, want stale", nk, err)
	}
	// Item 3 is ready; item 2 waits out its backoff.
	l, err = c.LeaseItems(ctx, "jobs", api.LeaseRequest{Max: 2, Wait: api.Duration(5 * time.Second)})
	if err != nil || len(l.Items) != 1 || l.Items[0].ID != 3 {
		t.Fatalf("lease during the backoff: %+v %v, want item 3 only", l, err)
	}
	three := l.Items[0]
	l, err = c.LeaseItems(ctx, "jobs", api.LeaseRequest{Max: 2, Wait: api.Duration(5 * time.Second)})
	if err != nil || len(l.Items) != 1 || l.Items[0].ID != two.ID || l.Items[0].Attempt != 2 {
		t.Fatalf("lease after the backoff: %+v %v, want item %d, attempt 2", l, err, two.ID)
	}
	again := l.Items[0]
	if nk, err := c.Nack(ctx, "jobs", api.Nack{ID: again.ID, Token: again.Token, Error: "boom again"}); err != nil || nk.Results[0].State != api.ItemDead {
		t.Fatalf("last nack: %+v %v, want dead", nk, err)
	}
	dead, err := c.QueueItems(ctx, "jobs", api.ItemFilter{State: api.ItemDead})
	if err != nil || len(dead) != 1 || !strings.Contains(dead[0].LastError, "boom again") {
		t.Fatalf("dead letters: %+v %v", dead, err)
	}
	rr, err := c.Retry(ctx, "jobs")
	if err != nil || !slices.Equal(rr.IDs, []uint64{two.ID}) {
		t.Errorf("retry: %+v %v", rr, err)
	}
	if _, err := c.Retry(ctx, "jobs", 42); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("retry of a missing item: %v", err)
	}
	if _, err := c.QueueItems(ctx, "jobs", api.ItemFilter{State: "finished"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("items in an unknown state: %v", err)
	}

	// Extend moves the expiry of a current lease; a stale token is said so.
	ex, err := c.Extend(ctx, "jobs", api.ExtendRequest{Items: []api.ItemRef{{ID: three.ID, Token: three.Token}}, Visibility: api.Duration(time.Minute)})
	if err != nil || ex.Results[0].Stale || !ex.Results[0].Expiry.After(three.Expiry) {
		t.Errorf("extend: %+v %v (lease expired %v)", ex, err, three.Expiry)
	}
	ex, err = c.Extend(ctx, "jobs", api.ExtendRequest{Items: []api.ItemRef{{ID: two.ID, Token: two.Token}}})
	if err != nil || !ex.Results[0].Stale {
		t.Errorf("extend of an old lease: %+v %v, want stale", ex, err)
	}
}

func TestLeaseLongPollGetsAnItemPushedMeanwhile(t *testing.T) {
	a := queueAgent(t)
	applyJobs(t, a)
	c := adminClient(t, a)
	ctx := context.Background()
	go func() {
		time.Sleep(200 * time.Millisecond)
		_, _ = c.Push(ctx, "jobs", [][]byte{[]byte("late")})
	}()
	l, err := c.LeaseItems(ctx, "jobs", api.LeaseRequest{Wait: api.Duration(10 * time.Second)})
	if err != nil || len(l.Items) != 1 || string(l.Items[0].Data) != "late" {
		t.Fatalf("long poll: %+v %v, want the item pushed while it waited", l, err)
	}
	l, err = c.LeaseItems(ctx, "jobs", api.LeaseRequest{Wait: api.Duration(300 * time.Millisecond)})
	if err != nil || len(l.Items) != 0 {
		t.Errorf("long poll on an empty queue: %+v %v, want no items", l, err)
	}
	if _, err := c.LeaseItems(ctx, "jobs", api.LeaseRequest{Wait: api.Duration(time.Hour)}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("a wait of an hour: %v", err)
	}
}

func TestDownwardQueueRoutesLetOnlyTheOwnerWork(t *testing.T) {
	a := queueAgent(t)
	applyJobs(t, a)
	spec, _ := a.cl.store.Group("jobs")
	mustPropose(t, a, raftstore.CmdApplyPlan, raftstore.Plan{Put: []raftstore.Allocation{
		{ID: "jobs.0", Group: "jobs", Node: "n1", GroupGeneration: 1, Spec: &spec.Spec}}})
	al, _ := a.cl.store.Allocation("jobs.0")
	a.groups["jobs.0"] = &groupEntry{Spec: allocationSpec(al), Source: api.SourceCluster, Generation: 1}
	a.groups["src"] = &groupEntry{Spec: &api.GroupSpec{Name: "src"}, Source: SourceAPI, Generation: 1}
	socket := func(name string) *api.Client {
		srv := httptest.NewServer(a.downwardHandler(caller{name: name}))
		t.Cleanup(srv.Close)
		return api.NewHTTPClient(srv.URL, srv.Client())
	}
	src, worker := socket("src"), socket("jobs.0")
	ctx := context.Background()
	if _, err := src.Push(ctx, "jobs", [][]byte{[]byte("from src")}); err != nil {
		t.Fatalf("a source group pushes: %v", err)
	}
	if q, err := src.Queue(ctx, "jobs"); err != nil || q.Status.Total != 1 {
		t.Errorf("a source group reads the queue: %+v %v", q, err)
	}
	_, err := src.LeaseItems(ctx, "jobs", api.LeaseRequest{})
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), `queue "jobs" belongs to group "jobs"`) {
		t.Errorf("another group leases: %v", err)
	}
	l, err := worker.LeaseItems(ctx, "jobs", api.LeaseRequest{})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("the group's allocation leases: %+v %v", l, err)
	}
	it, _ := a.cl.store.Item("jobs", l.Items[0].ID)
	if it.Worker != "jobs.0" || it.Node != "n1" {
		t.Errorf("leased to %q on %q, want the allocation jobs.0 on n1", it.Worker, it.Node)
	}
	if _, err := src.Ack(ctx, "jobs", api.Ack{ID: it.ID, Token: it.LeaseToken}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("another group acks: %v", err)
	}
	if ack, err := worker.Ack(ctx, "jobs", api.Ack{ID: it.ID, Token: it.LeaseToken}); err != nil || ack.Results[0].Outcome != api.AckDone {
		t.Errorf("the worker acks: %+v %v", ack, err)
	}
}

func TestLostNodesItemsComeBackAtOnce(t *testing.T) {
	a := queueAgent(t)
	applyJobs(t, a)
	ctx := context.Background()
	c := adminClient(t, a)
	if _, err := c.Push(ctx, "jobs", [][]byte{[]byte("x"), []byte("y")}); err != nil {
		t.Fatal(err)
	}
	mustPropose(t, a, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n2", Status: raftstore.NodeAlive})
	mustPropose(t, a, raftstore.CmdLeaseItem, raftstore.LeaseItem{Queue: "jobs", Worker: "jobs.1", Node: "n2", Now: time.Now(), Max: 1})
	a.requeueLostNodes(ctx) // alive: nothing happens
	if st, _ := a.cl.store.QueueStats("jobs"); st.Leased != 1 {
		t.Fatalf("stats %+v, want one leased", st)
	}
	mustPropose(t, a, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n2", Status: raftstore.NodeDead})
	a.requeueLostNodes(ctx)
	it, _ := a.cl.store.Item("jobs", 1)
	if it.State != api.ItemQueued || it.Attempts != 0 || !strings.Contains(it.LastError, "node n2 was lost") {
		t.Errorf("item of the lost node: state %s, attempts %d, last error %q", it.State, it.Attempts, it.LastError)
	}
}

func TestGroupCommitCoalescesAndIsolatesFailures(t *testing.T) {
	var (
		mu       sync.Mutex
		commands [][]string
		release  = make(chan struct{})
		first    atomic.Bool
	)
	g := newGroupCommit(100, 1<<20, func(s string) int { return len(s) },
		func(ctx context.Context, queue string, items []string) (uint64, error) {
			if first.CompareAndSwap(false, true) {
				<-release // the first command is slow: the others gather
			}
			mu.Lock()
			defer mu.Unlock()
			commands = append(commands, slices.Clone(items))
			if len(items) > 1 && slices.Contains(items, "bad") {
				return uint64(len(commands)), fmt.Errorf("batch refused: %w", api.ErrInvalid)
			}
			if slices.Equal(items, []string{"bad"}) {
				return uint64(len(commands)), fmt.Errorf("bad item: %w", api.ErrInvalid)
			}
			return uint64(len(commands)), nil
		})
	type outcome struct {
		idx uint64
		off int
		err error
	}
	results := make([]outcome, 6)
	var wg sync.WaitGroup
	submit := func(i int, items ...string) {
		defer wg.Done()
		idx, off, err := g.submit(context.Background(), "q", items)
		results[i] = outcome{idx, off, err}
	}
	wg.Add(1)
	go submit(0, "a")
	for !first.Load() {
		time.Sleep(time.Millisecond)
	}
	wg.Add(4)
	go submit(1, "b1", "b2")
	go submit(2, "c")
	go submit(3, "bad")
	go submit(4, "d")
	// Let the four join the next batch, then finish the first command.
	for {
		g.mu.Lock()
		n := 0
		if cq := g.queues["q"]; cq != nil && cq.next != nil {
			n = cq.next.parts
		}
		g.mu.Unlock()
		if n == 4 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	if results[0].err != nil || results[0].idx != 1 {
		t.Errorf("first: %+v", results[0])
	}
	if len(commands[1]) != 5 {
		t.Errorf("second command %v: want the four waiting requests in one", commands[1])
	}
	for i, want := range map[int]string{1: "b1", 2: "c", 4: "d"} {
		r := results[i]
		if r.err != nil {
			t.Errorf("request %d failed with the bad one: %v", i, r.err)
			continue
		}
		if got := commands[r.idx-1][r.off]; got != want {
			t.Errorf("request %d: command %d offset %d holds %q, want %q", i, r.idx, r.off, got, want)
		}
	}
	if !errors.Is(results[3].err, api.ErrInvalid) || !strings.Contains(results[3].err.Error(), "bad item") {
		t.Errorf("the bad request: %v, want its own verdict", results[3].err)
	}
	// Idle again: the next request goes at once, alone.
	idx, off, err := g.submit(context.Background(), "q", []string{"e"})
	if err != nil || off != 0 || !slices.Equal(commands[idx-1], []string{"e"}) {
		t.Errorf("idle submit: %d %d %v %v", idx, off, err, commands)
	}
}

func TestItemOutcomeOf(t *testing.T) {
	code := func(c uint32) *uint32 { return &c }
	exited := func(name string, role api.Role, c uint32) api.ContainerStatus {
		return api.ContainerStatus{Name: name, Role: role, State: api.ContainerExited, ExitCode: code(c)}
	}
	running := func(name string, role api.Role) api.ContainerStatus {
		return api.ContainerStatus{Name: name, Role: role, State: api.ContainerRunning}
	}
	for _, tc := range []struct {
		name     string
		st       api.GroupStatus
		done, ok bool
		msg      string
		failed   []string
	}{
		{"starting", api.GroupStatus{State: api.GroupStarting}, false, false, "", nil},
		{"completed", api.GroupStatus{State: api.GroupStopped, Reason: "Completed", Containers: []api.ContainerStatus{exited("a", api.RoleMain, 0)}}, true, true, "", nil},
		{"a main failed", api.GroupStatus{State: api.GroupFailed, Reason: "ContainerFailed",
			Containers: []api.ContainerStatus{exited("a", api.RoleMain, 0), exited("b", api.RoleMain, 3)}},
			true, false, "container b exited with code 3", []string{"b"}},
		{"an init failed", api.GroupStatus{State: api.GroupFailed, Reason: "ContainerFailed",
			Containers: []api.ContainerStatus{exited("prep", api.RoleInit, 1), {Name: "a", Role: api.RoleMain, State: api.ContainerWaiting}}},
			true, false, "container prep exited with code 1", []string{"prep"}},
		{"could not start", api.GroupStatus{State: api.GroupBackOff, Reason: "ImageUnavailable", Message: "no image x"}, true, false, "could not start (ImageUnavailable): no image x", nil},
		{"evicted", api.GroupStatus{State: api.GroupEvicted, Reason: "Preempted", Message: "by y"}, true, false, "evicted (Preempted): by y", nil},
		{"stopped by hand", api.GroupStatus{State: api.GroupStopped, Reason: "StopRequested", Message: "stopped on request"}, true, false, "the item's group was stopped (StopRequested): stopped on request", nil},
		{"one main still runs", api.GroupStatus{State: api.GroupRunning, Containers: []api.ContainerStatus{exited("a", api.RoleMain, 0), running("b", "")}}, false, false, "", nil},
		{"mains done, sidecar runs", api.GroupStatus{State: api.GroupRunning,
			Containers: []api.ContainerStatus{exited("a", api.RoleMain, 0), running("log", api.RoleSidecar)}}, true, true, "", nil},
		{"main failed, sidecar runs", api.GroupStatus{State: api.GroupRunning,
			Containers: []api.ContainerStatus{{Name: "a", State: api.ContainerExited, ExitCode: code(137), OOMKilled: true}, running("log", api.RoleSidecar)}},
			true, false, "container a exited with code 137 (killed for using more memory than its limit)", []string{"a"}},
		{"only sidecars", api.GroupStatus{State: api.GroupRunning, Containers: []api.ContainerStatus{running("log", api.RoleSidecar)}}, false, false, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done, ok, msg, failed := itemOutcomeOf(tc.st)
			if done != tc.done || ok != tc.ok || msg != tc.msg || !slices.Equal(failed, tc.failed) {
				t.Errorf("itemOutcomeOf = %v, %v, %q, %v; want %v, %v, %q, %v", done, ok, msg, failed, tc.done, tc.ok, tc.msg, tc.failed)
			}
		})
	}
}

func TestShareOfParallelismAndRoom(t *testing.T) {
	for _, tc := range []struct{ p, mine, placed, want int }{
		{6, 1, 3, 2}, {6, 1, 2, 3}, {5, 1, 3, 2}, {1, 1, 3, 1}, {6, 2, 3, 4}, {6, 0, 3, 0}, {0, 1, 1, 0},
	} {
		if got := shareOf(tc.p, tc.mine, tc.placed); got != tc.want {
			t.Errorf("shareOf(%d, %d, %d) = %d, want %d", tc.p, tc.mine, tc.placed, got, tc.want)
		}
	}
	free := api.Resources{CPU: 1000, Memory: 1 << 30, Pids: 100}
	if got := fits(api.Resources{CPU: 300, Memory: 100 << 20}, free); got != 3 {
		t.Errorf("fits = %d, want 3 (cpu bound)", got)
	}
	if got := fits(api.Resources{}, free); got < 1000 {
		t.Errorf("fits of nothing = %d, want unbounded", got)
	}
	if got := fits(api.Resources{Memory: 1}, api.Resources{Memory: -5}); got != 0 {
		t.Errorf("fits in an overcommitted node = %d, want 0", got)
	}
}

func TestItemGroupAndSpec(t *testing.T) {
	if got := itemGroupName("words", 17); got != "words_17" {
		t.Errorf("itemGroupName = %q", got)
	}
	long := strings.Repeat("q", 63)
	name := itemGroupName(long, 18446744073709551615)
	if len(name) > 24+1+20 || strings.Contains(name, ".") || name == itemGroupName(long[:62]+"r", 18446744073709551615) {
		t.Errorf("long queue name → %q (%d chars)", name, len(name))
	}
	tmpl := decodeSpec(t, `name = "words"
restart = "always"
ports = ["8080:80"]
[placement]
replicas = 2
[queue]
mode = "container"
[[volume]]
name = "scratch"
type = "empty"
[[container]]
name = "count"
image = "berth.local/busybox:latest"
[[container.mount]]
volume = "scratch"
path = "/scratch"
`)
	s := itemSpec(tmpl, "words_3", "/var/lib/berth/queues/words/3", "words", 3)
	if s.Name != "words_3" || s.Restart != api.RestartNever || s.Placement != nil || s.Queue != nil || len(s.Ports) != 0 {
		t.Errorf("item spec: %+v", s)
	}
	if v, ok := s.Volume(workVolume); !ok || v.Type != api.VolumeHost || v.Path != "/var/lib/berth/queues/words/3" {
		t.Errorf("work volume: %+v", v)
	}
	c := s.Containers[0]
	if len(c.Mounts) != 2 || c.Mounts[1] != (api.MountSpec{Volume: workVolume, Path: "/berth/work"}) {
		t.Errorf("mounts %+v", c.Mounts)
	}
	if len(tmpl.Containers[0].Mounts) != 1 || len(tmpl.Volumes) != 1 || tmpl.Name != "words" || tmpl.Labels["berth-item"] != "" {
		t.Errorf("the template was changed: %+v", tmpl)
	}
	if s.Labels["berth-queue"] != "words" || s.Labels["berth-item"] != "3" {
		t.Errorf("labels %v", s.Labels)
	}
}

// TestExamplesDecode: the work queue examples are valid group files whose
// [queue] an agent accepts.
func TestExamplesDecode(t *testing.T) {
	paths, _ := filepath.Glob("../contrib/examples/cluster/work-queue*.toml")
	if len(paths) < 2 {
		t.Fatalf("examples: %v", paths)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := api.Decode(p, data)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if spec.Queue == nil || checkQueueRules(spec) != nil {
			t.Errorf("%s: queue %+v, rules %v", p, spec.Queue, checkQueueRules(spec))
		}
	}
}

// TestResultNamesTheOutputFiles: a done item's result says where its
// files are.
func TestResultNamesTheOutputFiles(t *testing.T) {
	a := queueAgent(t)
	w := newQueueWorker(a)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "out", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "out", "a.txt"), []byte("hello"), 0o644)
	os.WriteFile(filepath.Join(dir, "out", "sub", "b.bin"), make([]byte, 1000), 0o644)
	var r itemResult
	if err := json.Unmarshal(w.result(&itemRun{Dir: dir}), &r); err != nil {
		t.Fatal(err)
	}
	if r.Node != "n1" || r.Dir != filepath.Join(dir, "out") || r.Bytes != 1005 || r.Files["a.txt"] != 5 || r.Files["sub/b.bin"] != 1000 {
		t.Errorf("result %+v", r)
	}
}
