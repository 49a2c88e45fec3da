package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// containerQueueGroup is a container-mode queue: each item runs the test
// app once, which appends "<hostname> <item>" to exec.log in dir (a host
// volume) and writes a result file.
func containerQueueGroup(name, dir string, replicas, parallelism int) string {
	return fmt.Sprintf(`name = %q
grace_period = "1s"
network = "none"
[placement]
replicas = %d
spread = "node"
[queue]
mode = "container"
parallelism = %d
visibility_timeout = "20s"
backoff = "1s"
[[volume]]
name = "log"
type = "host"
path = %q
[[container]]
name = "item"
image = "berth.local/testapp:latest"
args = ["queue-item", "--record", "/log/exec.log"]
[[container.mount]]
volume = "log"
path = "/log"
`, name, replicas, parallelism, dir)
}

// queueInfo reads a queue through agent a.
func queueInfo(t testing.TB, a *agentProc, name string) *api.QueueInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := a.api().Queue(ctx, name)
	if err != nil {
		t.Fatalf("queue %s: %v", name, err)
	}
	return q
}

// allItems lists every item of a queue through agent a.
func allItems(t testing.TB, a *agentProc, name string) []api.QueueItem {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []api.QueueItem
	var after uint64
	for {
		items, err := a.api().QueueItems(ctx, name, api.ItemFilter{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("items of %s: %v", name, err)
		}
		out = append(out, items...)
		if len(items) < 1000 {
			return out
		}
		after = items[len(items)-1].ID
	}
}

// TestQueueContainerModeSurvivesNodeLoss pushes 500 items through
// agentctl into a container-mode queue worked on by three agents, kills
// one of them (agentd and its containers) midway, and checks that every
// item is completed exactly once in the record and was executed at least
// once, its output kept on the node that completed it.
func TestQueueContainerModeSurvivesNodeLoss(t *testing.T) {
	const n = 500
	env.needAgentctl(t)
	shared := env.newDir(t, "queue")
	c := startCluster(t, clusterOpts{N: 3, Base: 80,
		Extra: fmt.Sprintf("[volumes]\nhost_path_prefixes = [%q]\n", shared)})
	leader := c.leader()
	front := c.any(leader) // a follower: pushes and reads are forwarded
	applyTOML(t, front, "work.toml", containerQueueGroup("work", shared, 3, 6))
	waitClusterGroup(t, front, "work", 30*time.Second, "3 workers ready", allReady(3))

	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, "item-%03d\n", i)
	}
	itemsFile := filepath.Join(shared, "items.txt")
	if err := os.WriteFile(itemsFile, []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(env.AgentctlBin, "--socket", front.Socket, "queue", "push", "work", "--lines", itemsFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("pushed %d items to work", n)) {
		t.Fatalf("agentctl queue push: %v\n%s", err, out)
	}
	start := time.Now()

	// Lose a follower that is working, once a third of the items is done.
	victim := -1
	for i := range c.Agents {
		if i != leader && c.Agents[i] != front {
			victim = i
		}
	}
	waitFor(t, 60*time.Second, "a third of the items done", func() (bool, error) {
		q := queueInfo(t, front, "work")
		return q.Status.Done >= n/3, fmt.Errorf("%+v", q.Status)
	})
	var lost []uint64 // leased on the victim when it died
	for _, it := range allItems(t, front, "work") {
		if it.State == api.ItemLeased && it.Node == clusterNodeName(victim) {
			lost = append(lost, it.ID)
		}
	}
	leasedThere := len(lost)
	c.killNode(victim)
	killedAt := time.Now()
	t.Logf("killed %s after %s with %d items leased there", clusterNodeName(victim), killedAt.Sub(start).Round(time.Millisecond), leasedThere)

	var last api.QueueStatus
	waitFor(t, 100*time.Second, "every item done", func() (bool, error) {
		q := queueInfo(t, front, "work")
		last = q.Status
		return q.Status.Done == n, fmt.Errorf("%+v", q.Status)
	})
	took := time.Since(start)
	if last.Total != n || last.Dead != 0 || last.Queued != 0 || last.Leased != 0 {
		t.Errorf("final status %+v: want %d done and nothing else", last, n)
	}

	// The record: every item done once, by a worker that says where its
	// output is.
	items := allItems(t, front, "work")
	if len(items) != n {
		t.Fatalf("%d items recorded, want %d", len(items), n)
	}
	byNode := map[string]int{}
	for _, it := range items {
		if it.State != api.ItemDone || it.DoneNode == "" || it.DoneAt.IsZero() || it.ResultSize == 0 {
			t.Errorf("item %d: state %s, done on %q at %v, result %d bytes", it.ID, it.State, it.DoneNode, it.DoneAt, it.ResultSize)
		}
		byNode[it.DoneNode]++
	}
	// The lost node's items came back at once (not after their visibility
	// timeout: no failed attempt) and were done elsewhere.
	requeued := 0
	for _, id := range lost {
		it := items[id-1]
		if it.DoneNode == clusterNodeName(victim) {
			continue // acked in the instant before the kill
		}
		requeued++
		if !strings.Contains(it.LastError, "node "+clusterNodeName(victim)+" was lost") || it.Attempts != 1 {
			t.Errorf("item %d, leased on the lost node: attempts %d, last error %q: want it queued again without a failed attempt", it.ID, it.Attempts, it.LastError)
		}
	}
	if len(lost) > 0 && requeued == 0 {
		t.Errorf("none of the %d items leased on the lost node was queued again", len(lost))
	}
	if last.FailedAttempts != 0 {
		t.Errorf("%d failed attempts: the lost node's items should come back at once, not by their visibility timeout", last.FailedAttempts)
	}
	t.Logf("%d items in %s (%.1f/s): done per node %v, failed attempts %d", n, took.Round(time.Millisecond),
		float64(n)/took.Seconds(), byNode, last.FailedAttempts)
	if len(byNode) < 2 {
		t.Errorf("items done on %v: want the work spread over the nodes", byNode)
	}
	// A done item's output stays on the node that completed it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, it := range items[:20] {
		full, err := front.api().QueueItem(ctx, "work", it.ID)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Node  string           `json:"node"`
			Dir   string           `json:"dir"`
			Files map[string]int64 `json:"files"`
		}
		if err := json.Unmarshal(full.Result, &res); err != nil || res.Node != it.DoneNode || res.Files["result"] == 0 {
			t.Errorf("item %d: result %s (%v): want the node that did it and its result file", it.ID, full.Result, err)
			continue
		}
		if res.Node == clusterNodeName(victim) {
			continue
		}
		got, err := os.ReadFile(filepath.Join(res.Dir, "result"))
		if err != nil || string(got) != "done "+string(full.Data) {
			t.Errorf("item %d: output %s: %q, %v", it.ID, res.Dir, got, err)
		}
	}

	// Executed at least once each; more than once only for what the lost
	// node had.
	log, err := os.ReadFile(filepath.Join(shared, "exec.log"))
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			runs[f[1]]++
		}
	}
	again := 0
	for i := range n {
		k := fmt.Sprintf("item-%03d", i)
		switch {
		case runs[k] == 0:
			t.Errorf("%s never ran", k)
		case runs[k] > 1:
			again += runs[k] - 1
		}
	}
	t.Logf("%d executions for %d items (%d again)", len(strings.Split(strings.TrimSpace(string(log)), "\n")), n, again)
	if again > leasedThere+6 {
		t.Errorf("%d executions repeated, want at most the %d items the lost node had (+ the few it leased meanwhile)", again, leasedThere)
	}

	// Nothing of the queue keeps running on the survivors.
	for i, a := range c.Agents {
		if i == victim {
			continue
		}
		waitFor(t, 20*time.Second, clusterNodeName(i)+" runs no item groups", func() (bool, error) {
			gs, err := a.api().List(ctx)
			if err != nil {
				return false, err
			}
			for _, g := range gs {
				if strings.HasPrefix(g.Name, "work_") {
					return false, fmt.Errorf("%s is %s", g.Name, g.State)
				}
			}
			return true, nil
		})
	}
}

// TestQueuePullWorkerCrashItemComesBack runs a pull-mode worker that
// crashes on its first item without an ack: the item comes back once its
// visibility timeout passes, and completes on the second attempt.
func TestQueuePullWorkerCrashItemComesBack(t *testing.T) {
	shared := env.newDir(t, "pull")
	a := startAgent(t, agentOpts{NodeName: "solo", Flags: map[string]string{"--host-path-prefix": shared}})
	applyTOML(t, a, "pull.toml", fmt.Sprintf(`name = "pull"
grace_period = "1s"
network = "none"
restart_backoff = { initial = "200ms" }
[placement]
replicas = 1
[queue]
mode = "pull"
visibility_timeout = "3s"
[[volume]]
name = "log"
type = "host"
path = %q
[[container]]
name = "worker"
image = "berth.local/testapp:latest"
args = ["queue-worker", "--record", "/log/done.log", "--crash-once", "/log/crashed"]
[[container.mount]]
volume = "log"
path = "/log"
`, shared))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var data [][]byte
	for i := range 5 {
		data = append(data, []byte(fmt.Sprintf("job-%d", i)))
	}
	pushed, err := a.api().Push(ctx, "pull", data)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 45*time.Second, "every item done", func() (bool, error) {
		q := queueInfo(t, a, "pull")
		return q.Status.Done == 5, fmt.Errorf("%+v", q.Status)
	})
	crashed, err := os.ReadFile(filepath.Join(shared, "crashed"))
	if err != nil {
		t.Fatalf("the worker never crashed: %v", err)
	}
	// "<worker> <id> <token> <attempt> <data>"
	f := strings.Fields(string(crashed))
	if len(f) != 5 || f[3] != "1" {
		t.Fatalf("crash record %q", crashed)
	}
	id, _ := strconv.ParseUint(f[1], 10, 64)
	if id != pushed.IDs[0] {
		t.Errorf("crashed on item %d, want the first, %d", id, pushed.IDs[0])
	}
	it, err := a.api().QueueItem(ctx, "pull", id)
	if err != nil {
		t.Fatal(err)
	}
	if it.State != api.ItemDone || it.Attempts != 2 || it.DoneAttempt != 2 || !strings.Contains(it.LastError, "visibility timeout") {
		t.Errorf("crashed item: state %s, attempts %d, done at attempt %d, last error %q: want done at attempt 2 after an expired lease",
			it.State, it.Attempts, it.DoneAttempt, it.LastError)
	}
	if !bytes.Equal(it.Result, []byte("ok "+string(it.Data))) {
		t.Errorf("result %q", it.Result)
	}
	firstLease, _ := strconv.ParseUint(f[2], 10, 64)
	if it.Token == firstLease {
		t.Errorf("done with the crashed lease's token %d: want a new lease", firstLease)
	}
	// It came back only after its visibility timeout: every other item
	// was done first.
	for _, other := range allItems(t, a, "pull") {
		if other.ID != id && other.DoneAt.After(it.DoneAt) {
			t.Errorf("item %d done at %v, after the crashed one (%v): it should have waited out its lease", other.ID, other.DoneAt, it.DoneAt)
		}
		if other.ID != id && other.Attempts != 1 {
			t.Errorf("item %d: %d attempts, want 1", other.ID, other.Attempts)
		}
	}
	if d := it.DoneAt.Sub(it.EnqueuedAt); d < 3*time.Second {
		t.Errorf("crashed item done %s after its push, before its 3s visibility timeout could pass", d)
	}
	done, _ := os.ReadFile(filepath.Join(shared, "done.log"))
	if got := strings.Count(string(done), "\n"); got != 5 {
		t.Errorf("done.log has %d lines, want 5 (each item worked on once to the end):\n%s", got, done)
	}
}

// TestQueueErrorsAreClear pushes an item over the queue's size limit and
// to a queue that does not exist, through agentctl and the API, and
// applies a [queue] without [placement]: each error says what and where.
func TestQueueErrorsAreClear(t *testing.T) {
	env.needAgentctl(t)
	a := startAgent(t, agentOpts{NodeName: "solo"})
	applyTOML(t, a, "small.toml", `name = "small"
network = "none"
[placement]
replicas = 1
[queue]
mode = "pull"
max_item_size = "1KiB"
[[container]]
name = "worker"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`)
	dir := t.TempDir()
	okFile, big := filepath.Join(dir, "ok.txt"), filepath.Join(dir, "big.bin")
	os.WriteFile(okFile, []byte("fine"), 0o644)
	os.WriteFile(big, bytes.Repeat([]byte("x"), 2048), 0o644)

	agentctl := func(args ...string) (string, int) {
		out, err := exec.Command(env.AgentctlBin, append([]string{"--socket", a.Socket}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := agentctl("queue", "push", "small", okFile, big)
	if code != 3 || !strings.Contains(out, big+" is 2.0 KiB") || !strings.Contains(out, "max_item_size of 1.0 KiB") {
		t.Errorf("oversized item through agentctl: exit %d, want 3 naming the file, its size and the limit:\n%s", code, out)
	}
	// The API says the same, by position, when a program pushes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.api().Push(ctx, "small", [][]byte{[]byte("fine"), bytes.Repeat([]byte("x"), 2048)})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "item 2 of 2 is 2KiB (2048 bytes), more than the queue's max_item_size of 1KiB (1024 bytes)") {
		t.Errorf("oversized item through the API: %v", err)
	}
	if q := queueInfo(t, a, "small"); q.Status.Total != 0 {
		t.Errorf("%d items in the queue after refused pushes, want 0", q.Status.Total)
	}

	out, code = agentctl("queue", "push", "nope", okFile)
	if code != 4 || !strings.Contains(out, `queue "nope" not found`) {
		t.Errorf("push to a missing queue: exit %d, want 4 naming the queue:\n%s", code, out)
	}
	out, code = agentctl("queue", "push", "small", okFile)
	if code != 0 || !strings.Contains(out, "pushed 1 item to small") {
		t.Errorf("a good push: exit %d:\n%s", code, out)
	}

	// [queue] belongs to cluster groups.
	_, err = a.api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "local.toml", Content: `name = "local"
[queue]
mode = "pull"
[[container]]
name = "w"
image = "berth.local/busybox:latest"
`}}})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "[queue] needs [placement]") {
		t.Errorf("a local group with [queue]: %v", err)
	}
}

// TestQueueItemsSurviveAgentCrash kills agentd (SIGKILL) while two items
// run in container mode and starts it again: the items' containers kept
// running, the new agent reattaches to them and acks them, and no item
// runs twice.
func TestQueueItemsSurviveAgentCrash(t *testing.T) {
	shared := env.newDir(t, "crash")
	a := startAgent(t, agentOpts{NodeName: "solo", Flags: map[string]string{"--host-path-prefix": shared}})
	applyTOML(t, a, "slow.toml", strings.Replace(containerQueueGroup("slow", shared, 1, 2),
		`args = ["queue-item", "--record", "/log/exec.log"]`, `args = ["queue-item", "--record", "/log/exec.log", "--work", "3s"]`, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := a.api().Push(ctx, "slow", [][]byte{[]byte("one"), []byte("two"), []byte("three"), []byte("four")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "two item groups running", func() (bool, error) {
		running := 0
		for _, name := range []string{"slow_1", "slow_2"} {
			if st, err := a.api().Get(ctx, name); err == nil && st.State == api.GroupRunning {
				running++
			}
		}
		return running == 2, nil
	})
	a.Kill()
	a.start()
	waitFor(t, 40*time.Second, "every item done", func() (bool, error) {
		q := queueInfo(t, a, "slow")
		return q.Status.Done == 4, fmt.Errorf("%+v", q.Status)
	})
	for _, it := range allItems(t, a, "slow") {
		if it.Attempts != 1 || it.DoneAttempt != 1 {
			t.Errorf("item %d: %d attempts, done at attempt %d: want the first, reattached", it.ID, it.Attempts, it.DoneAttempt)
		}
	}
	log, err := os.ReadFile(filepath.Join(shared, "exec.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, item := range []string{"one", "two", "three", "four"} {
		if n := strings.Count(string(log), " "+item+"\n"); n != 1 {
			t.Errorf("item %q ran %d times, want once:\n%s", item, n, log)
		}
	}
	noGroups := func() {
		waitFor(t, 20*time.Second, "no item groups left", func() (bool, error) {
			gs, err := a.api().List(ctx)
			if err != nil {
				return false, err
			}
			for _, g := range gs {
				if strings.HasPrefix(g.Name, "slow_") {
					return false, fmt.Errorf("%s is %s", g.Name, g.State)
				}
			}
			return true, nil
		})
	}
	noGroups()

	// Items that finish while agentd is down are acked when it is back,
	// and not run again.
	if _, err := a.api().Push(ctx, "slow", [][]byte{[]byte("five"), []byte("six")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "two more item groups running", func() (bool, error) {
		running := 0
		for _, name := range []string{"slow_5", "slow_6"} {
			if st, err := a.api().Get(ctx, name); err == nil && st.State == api.GroupRunning {
				running++
			}
		}
		return running == 2, nil
	})
	a.Kill()
	time.Sleep(4 * time.Second) // the items' 3s of work end meanwhile
	a.start()
	waitFor(t, 30*time.Second, "six items done", func() (bool, error) {
		q := queueInfo(t, a, "slow")
		return q.Status.Done == 6, fmt.Errorf("%+v", q.Status)
	})
	log, _ = os.ReadFile(filepath.Join(shared, "exec.log"))
	for _, item := range []string{"five", "six"} {
		if n := strings.Count(string(log), " "+item+"\n"); n != 1 {
			t.Errorf("item %q, done while agentd was down, ran %d times, want once:\n%s", item, n, log)
		}
	}
	noGroups()
}

// TestQueueContainerItemFailsWithItsExitCodeAndLogs: an item whose
// container exits 1 is retried after the backoff and becomes a dead letter
// after max_attempts, with the exit code and the container's last log
// lines as its error; agentctl queue retry puts it back. A good item's
// output stays under the agent's state dir.
func TestQueueContainerItemFailsWithItsExitCodeAndLogs(t *testing.T) {
	env.needAgentctl(t)
	shared := env.newDir(t, "fail")
	a := startAgent(t, agentOpts{NodeName: "solo", Flags: map[string]string{"--host-path-prefix": shared}})
	spec := strings.Replace(containerQueueGroup("flaky", shared, 1, 2),
		`args = ["queue-item", "--record", "/log/exec.log"]`, `args = ["queue-item", "--record", "/log/exec.log", "--fail-on", "bad"]`, 1)
	spec = strings.Replace(spec, `backoff = "1s"`, "backoff = \"1s\"\nmax_attempts = 2", 1)
	applyTOML(t, a, "flaky.toml", spec)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pushed, err := a.api().Push(ctx, "flaky", [][]byte{[]byte("good"), []byte("bad")})
	if err != nil {
		t.Fatal(err)
	}
	good, bad := pushed.IDs[0], pushed.IDs[1]
	waitFor(t, 30*time.Second, "one done, one dead", func() (bool, error) {
		q := queueInfo(t, a, "flaky")
		return q.Status.Done == 1 && q.Status.Dead == 1, fmt.Errorf("%+v", q.Status)
	})
	it, err := a.api().QueueItem(ctx, "flaky", bad)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"attempt 2 on node solo", "container item exited with code 1", "last log lines", `item "bad" contains "bad": failing`} {
		if !strings.Contains(it.LastError, want) {
			t.Errorf("dead letter's error lacks %q:\n%s", want, it.LastError)
		}
	}
	if it.Attempts != 2 {
		t.Errorf("dead letter after %d attempts, want max_attempts 2", it.Attempts)
	}
	// The good item's output, on this node.
	done, err := a.api().QueueItem(ctx, "flaky", good)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(a.StateDir, "queues", "flaky", strconv.FormatUint(good, 10), "out", "result")
	if got, err := os.ReadFile(out); err != nil || string(got) != "done good" || done.DoneNode != "solo" {
		t.Errorf("output %s: %q %v (done on %q)", out, got, err, done.DoneNode)
	}
	// Retried by hand: two more attempts, dead again.
	cmd := exec.Command(env.AgentctlBin, "--socket", a.Socket, "queue", "retry", "flaky", strconv.FormatUint(bad, 10))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "retrying 1 item of flaky") {
		t.Fatalf("agentctl queue retry: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "dead again after two more attempts", func() (bool, error) {
		q := queueInfo(t, a, "flaky")
		return q.Status.Dead == 1 && q.Status.FailedAttempts == 4, fmt.Errorf("%+v", q.Status)
	})
	log, _ := os.ReadFile(filepath.Join(shared, "exec.log"))
	if n := strings.Count(string(log), " bad\n"); n != 4 {
		t.Errorf("the bad item ran %d times, want 4 (2 attempts, retried, 2 more)", n)
	}
	// No failed run leaves files behind, once its group is gone.
	waitFor(t, 10*time.Second, "the failed item's files removed", func() (bool, error) {
		_, err := os.Stat(filepath.Join(a.StateDir, "queues", "flaky", strconv.FormatUint(bad, 10)))
		return errors.Is(err, os.ErrNotExist), err
	})
}

// TestQueueExamplesRun applies the work queue examples as they are in
// contrib/examples/cluster and works items through both.
func TestQueueExamplesRun(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "solo"})
	for _, f := range []string{"work-queue.toml", "work-queue-pull.toml"} {
		b, err := os.ReadFile(filepath.Join(env.RepoRoot, "contrib", "examples", "cluster", f))
		if err != nil {
			t.Fatal(err)
		}
		applyTOML(t, a, f, string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lines := []string{"the quick brown fox", "jumps over", "the lazy dog"}
	var items [][]byte
	for _, l := range lines {
		items = append(items, []byte(l))
	}
	words, err := a.api().Push(ctx, "words", items)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.api().Push(ctx, "jobs", items); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"words", "jobs"} {
		waitFor(t, 40*time.Second, q+": every item done", func() (bool, error) {
			info := queueInfo(t, a, q)
			return info.Status.Done == len(lines), fmt.Errorf("%+v", info.Status)
		})
	}
	for i, id := range words.IDs {
		p := filepath.Join(a.StateDir, "queues", "words", strconv.FormatUint(id, 10), "out", "words")
		got, err := os.ReadFile(p)
		if want := strconv.Itoa(len(strings.Fields(lines[i]))); err != nil || strings.TrimSpace(string(got)) != want {
			t.Errorf("item %d (%q): %s = %q (%v), want %s", id, lines[i], p, got, err, want)
		}
	}
}
