package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// fakeQueues serves the queue routes of the admin API for one queue,
// "jobs" (max_item_size 16 B), and records what it was sent.
type fakeQueues struct {
	sock string

	mu       sync.Mutex
	pushes   [][][]byte // each push request's items
	items    []api.QueueItem
	statuses []api.QueueStatus // successive answers of GET /v1/queues/jobs; the last repeats
	gets     int
	retried  [][]uint64
}

func newFakeQueues(t *testing.T) *fakeQueues {
	t.Helper()
	f := &fakeQueues{sock: filepath.Join(t.TempDir(), "s")}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/queues", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, []api.QueueInfo{f.info(false)})
	})
	mux.HandleFunc("GET /v1/queues/{q}", func(w http.ResponseWriter, r *http.Request) {
		if !f.known(w, r) {
			return
		}
		writeJSON(w, f.info(true))
	})
	mux.HandleFunc("POST /v1/queues/{q}/items", func(w http.ResponseWriter, r *http.Request) {
		if !f.known(w, r) {
			return
		}
		var req api.PushRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, 400, "invalid", err.Error())
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.pushes = append(f.pushes, req.Items)
		res := api.PushResponse{Queue: "jobs"}
		for range req.Items {
			res.IDs = append(res.IDs, uint64(100+len(res.IDs)+len(f.pushes)*1000))
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("GET /v1/queues/{q}/items", func(w http.ResponseWriter, r *http.Request) {
		if !f.known(w, r) {
			return
		}
		q := r.URL.Query()
		after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
		limit, _ := strconv.Atoi(q.Get("limit"))
		out := []api.QueueItem{}
		for _, it := range f.items {
			if it.ID > after && (q.Get("state") == "" || string(it.State) == q.Get("state")) && (limit == 0 || len(out) < limit) {
				out = append(out, it)
			}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("POST /v1/queues/{q}/retry", func(w http.ResponseWriter, r *http.Request) {
		if !f.known(w, r) {
			return
		}
		var req api.RetryRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		f.retried = append(f.retried, req.IDs)
		f.mu.Unlock()
		ids := req.IDs
		if len(ids) == 0 {
			ids = []uint64{7, 8, 9}
		}
		writeJSON(w, api.RetryResponse{IDs: ids})
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeQueues) known(w http.ResponseWriter, r *http.Request) bool {
	if q := r.PathValue("q"); q != "jobs" {
		writeError(w, 404, "not_found", fmt.Sprintf("queue %q not found (agentctl queue ls lists them)", q))
		return false
	}
	return true
}

func (f *fakeQueues) info(advance bool) api.QueueInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := api.QueueStatus{Queued: 3, Leased: 2, Done: 5, Dead: 1, Total: 11, FailedAttempts: 4, Rate: 2.5, LastDoneAt: testNow.Add(-10 * time.Second)}
	if len(f.statuses) > 0 {
		i := min(f.gets, len(f.statuses)-1)
		st = f.statuses[i]
		if advance {
			f.gets++
		}
	}
	return api.QueueInfo{Name: "jobs", Group: "jobs", Status: st,
		Spec: api.QueueSpec{Mode: api.QueueContainer, Parallelism: 4, MaxItemSize: 16}}
}

func (f *fakeQueues) run(stdin string, args ...string) result {
	return runAgentctl(context.Background(), nil, stdin, append([]string{"--socket", f.sock}, args...)...)
}

func TestQueuePushFilesStdinDirAndLines(t *testing.T) {
	f := newFakeQueues(t)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.txt", "alpha")
	sub := filepath.Join(dir, "batch")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write("batch/2", "two")
	write("batch/1", "one")
	if err := os.Mkdir(filepath.Join(sub, "nested"), 0o755); err != nil {
		t.Fatal(err)
	}

	r := f.run("from stdin", "queue", "push", "jobs", a, "-", sub)
	wantCode(t, r, exitOK)
	if len(f.pushes) != 1 {
		t.Fatalf("%d push requests, want 1", len(f.pushes))
	}
	var got []string
	for _, it := range f.pushes[0] {
		got = append(got, string(it))
	}
	if want := []string{"alpha", "from stdin", "one", "two"}; !slices.Equal(got, want) {
		t.Errorf("pushed %q, want %q (files in order, stdin, the directory's files by name, not recursing)", got, want)
	}
	if !strings.HasPrefix(r.stdout, "pushed 4 items to jobs: ") {
		t.Errorf("stdout %q", r.stdout)
	}

	lines := write("lines.txt", "x1\n\n  \nx2\r\nx3")
	r = f.run("", "queue", "push", "jobs", "--lines", lines)
	wantCode(t, r, exitOK)
	got = nil
	for _, it := range f.pushes[1] {
		got = append(got, string(it))
	}
	if want := []string{"x1", "x2", "x3"}; !slices.Equal(got, want) {
		t.Errorf("--lines pushed %q, want %q", got, want)
	}
	r = f.run("", "queue", "push", "jobs", "-o", "json", lines)
	wantCode(t, r, exitOK)
	var pr api.PushResponse
	if err := json.Unmarshal([]byte(r.stdout), &pr); err != nil || pr.Queue != "jobs" || len(pr.IDs) != 1 {
		t.Errorf("-o json: %q (%v)", r.stdout, err)
	}
}

func TestQueuePushOversizedItemNamesTheFileAndSendsNothing(t *testing.T) {
	f := newFakeQueues(t)
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	big := filepath.Join(dir, "big.bin")
	os.WriteFile(small, []byte("ok"), 0o644)
	os.WriteFile(big, []byte(strings.Repeat("x", 40)), 0o644)
	r := f.run("", "queue", "push", "jobs", small, big)
	wantCode(t, r, exitInvalid)
	for _, want := range []string{big + " is 40 B", "max_item_size of 16 B", "nothing was pushed"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if len(f.pushes) != 0 {
		t.Errorf("%d push requests sent, want none", len(f.pushes))
	}
	// One line too long with --lines names the line.
	lines := filepath.Join(dir, "lines")
	os.WriteFile(lines, []byte("a\n"+strings.Repeat("y", 17)+"\n"), 0o644)
	r = f.run("", "queue", "push", "jobs", "--lines", lines)
	wantCode(t, r, exitInvalid)
	if !strings.Contains(r.stderr, lines+":2 is 17 B") {
		t.Errorf("stderr does not name line 2:\n%s", r.stderr)
	}
}

func TestQueuePushToMissingQueue(t *testing.T) {
	f := newFakeQueues(t)
	p := filepath.Join(t.TempDir(), "i")
	os.WriteFile(p, []byte("x"), 0o644)
	r := f.run("", "queue", "push", "nope", p)
	wantCode(t, r, exitNotFound)
	if !strings.Contains(r.stderr, `queue "nope" not found`) {
		t.Errorf("stderr %q", r.stderr)
	}
	r = f.run("", "queue", "push", "jobs", filepath.Join(t.TempDir(), "missing"))
	wantCode(t, r, exitFailure)
	r = f.run("", "queue", "push", "jobs")
	wantCode(t, r, exitUsage)
	empty := t.TempDir()
	r = f.run("", "queue", "push", "jobs", empty)
	wantCode(t, r, exitInvalid)
	if !strings.Contains(r.stderr, "no items in") {
		t.Errorf("empty directory: %q", r.stderr)
	}
}

func TestQueuePushBatches(t *testing.T) {
	items := make([]item, 2500)
	for i := range items {
		items[i] = item{data: []byte("x")}
	}
	b := pushBatches(items)
	if len(b) != 3 || len(b[0]) != 1000 || len(b[2]) != 500 {
		t.Errorf("2500 small items: batches of %d, %d, %d", len(b[0]), len(b[1]), len(b[2]))
	}
	big := []item{{data: make([]byte, 3<<20)}, {data: make([]byte, 3<<20)}, {data: []byte("x")}}
	if b := pushBatches(big); len(b) != 2 || len(b[0]) != 1 || len(b[1]) != 2 {
		t.Errorf("two 3 MiB items: %d batches, want 2 (4 MiB per request)", len(b))
	}
	if got := idRanges([]uint64{5, 1, 2, 3, 9, 11, 12}); got != "1-3, 5, 9, 11-12" {
		t.Errorf("idRanges = %q", got)
	}
}

func TestQueueListAndStatus(t *testing.T) {
	f := newFakeQueues(t)
	r := f.run("", "queue", "ls")
	wantCode(t, r, exitOK)
	want := `NAME  GROUP  MODE       PARALLELISM  QUEUED  RUNNING  DONE  DEAD  TOTAL
jobs  jobs   container  4            3       2        5     1     11
`
	if r.stdout != want {
		t.Errorf("ls =\n%s\nwant\n%s", r.stdout, want)
	}
	r = f.run("", "queue", "status", "jobs")
	wantCode(t, r, exitOK)
	flat := strings.Join(strings.Fields(r.stdout), " ")
	for _, want := range []string{"Mode: container", "Max attempts: 3", "Visibility timeout: 30s",
		"Max item size: 16 B", "Failed attempts: 4", "Rate: 2.5/s", "(10s ago)", "Queued: 3 Running: 2 Done: 5 Dead: 1 Total: 11"} {
		if !strings.Contains(flat, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = f.run("", "queue", "status", "nope")
	wantCode(t, r, exitNotFound)
}

func TestQueueItemsFiltersAndPages(t *testing.T) {
	f := newFakeQueues(t)
	for i := 1; i <= 2500; i++ {
		it := api.QueueItem{ID: uint64(i), Queue: "jobs", State: api.ItemQueued, Size: 3, EnqueuedAt: testNow.Add(-time.Minute)}
		switch i % 5 {
		case 0:
			it.State, it.DoneNode, it.ResultSize, it.Attempts = api.ItemDone, "n2", 2048, 1
		case 1:
			it.State, it.LastError, it.Attempts, it.Node = api.ItemDead, "exit code 1\nlast log line", 3, "n1"
		}
		f.items = append(f.items, it)
	}
	r := f.run("", "queue", "items", "jobs", "-o", "json")
	wantCode(t, r, exitOK)
	var all []api.QueueItem
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil || len(all) != 2500 {
		t.Fatalf("all items: %d (%v), want 2500 over three pages", len(all), err)
	}
	r = f.run("", "queue", "items", "jobs", "--state", "dead", "--limit", "2")
	wantCode(t, r, exitOK)
	want := `ID  STATE  ATTEMPTS  SIZE  NODE  AGE  INFO
1   dead   3         3 B   n1    1m   exit code 1
6   dead   3         3 B   n1    1m   exit code 1
`
	if r.stdout != want {
		t.Errorf("items --state dead =\n%s\nwant\n%s", r.stdout, want)
	}
	r = f.run("", "queue", "items", "jobs", "--state", "done", "--limit", "1")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "n2    1m   result 2.0 KiB") {
		t.Errorf("a done item shows its node and result size:\n%s", r.stdout)
	}
	r = f.run("", "queue", "items", "jobs", "--state", "finished")
	wantCode(t, r, exitUsage)
	f.items = nil
	r = f.run("", "queue", "items", "jobs", "--state", "leased")
	wantCode(t, r, exitOK)
	if r.stderr != "no leased items in queue jobs\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestQueueRetry(t *testing.T) {
	f := newFakeQueues(t)
	r := f.run("", "queue", "retry", "jobs", "4", "5")
	wantCode(t, r, exitOK)
	if r.stdout != "retrying 2 items of jobs: 4-5\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = f.run("", "queue", "retry", "jobs", "--all")
	wantCode(t, r, exitOK)
	if len(f.retried) != 2 || len(f.retried[1]) != 0 {
		t.Errorf("retry requests %v, want [4 5] then all", f.retried)
	}
	for _, args := range [][]string{{"jobs"}, {"jobs", "--all", "3"}, {"jobs", "x"}, {"jobs", "0"}} {
		r = f.run("", append([]string{"queue", "retry"}, args...)...)
		wantCode(t, r, exitUsage)
	}
}

func TestQueueWaitPlainLines(t *testing.T) {
	f := newFakeQueues(t)
	f.statuses = []api.QueueStatus{
		{Queued: 8, Leased: 2, Total: 10},
		{Queued: 3, Leased: 2, Done: 5, Total: 10, Rate: 5, FailedAttempts: 1},
		{Done: 10, Total: 10, Rate: 5, FailedAttempts: 1},
	}
	r := f.run("", "queue", "wait", "jobs", "--interval", "10ms")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a line per poll without a terminal, got:\n%s", r.stdout)
	}
	if want := "[##########..........] done 5/10  running 2  queued 3  failed 1  dead 0  rate 5.0/s  ETA 1s"; lines[1] != want {
		t.Errorf("line 2 = %q\nwant     %q", lines[1], want)
	}
	if strings.Contains(r.stdout, "\r") {
		t.Errorf("carriage returns without a terminal: %q", r.stdout)
	}
	if !strings.HasPrefix(lines[2], "[####################] done 10/10") {
		t.Errorf("last line %q", lines[2])
	}
}

func TestQueueWaitFailsWithDeadLettersAndUpdatesInPlaceOnATerminal(t *testing.T) {
	f := newFakeQueues(t)
	f.statuses = []api.QueueStatus{
		{Queued: 1, Done: 8, Total: 10},
		{Done: 8, Dead: 2, Total: 10, FailedAttempts: 6},
	}
	r := runAgentctl(context.Background(), func(a *app) { a.isTerminal = func(w io.Writer) bool { return w == a.stdout } },
		"", "--socket", f.sock, "queue", "wait", "jobs")
	wantCode(t, r, exitFailure)
	if strings.Count(r.stdout, "\r\033[K") != 2 || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("a terminal gets one line redrawn in place: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "2 items of 10 failed for good") || !strings.Contains(r.stderr, "queue retry jobs --all") {
		t.Errorf("stderr %q", r.stderr)
	}
	r = f.run("", "queue", "wait", "nope")
	wantCode(t, r, exitNotFound)
}

func TestProgressRateAndETA(t *testing.T) {
	var p progress
	t0 := testNow
	p.observe(t0, api.QueueStatus{Queued: 100, Total: 100, Rate: 50})
	if got := p.rate(); got != 50 {
		t.Errorf("rate before two samples = %v, want the agent's 50", got)
	}
	p.observe(t0.Add(2*time.Second), api.QueueStatus{Queued: 80, Done: 18, Dead: 2, Total: 100, Rate: 50})
	if got := p.rate(); got != 10 {
		t.Errorf("rate = %v, want 10/s measured (20 finished in 2s)", got)
	}
	if line := p.line(t0); !strings.HasSuffix(line, "rate 10.0/s  ETA 8s") {
		t.Errorf("line %q: want ETA 80/10 = 8s", line)
	}
	// Old samples leave the window.
	p.observe(t0.Add(62*time.Second), api.QueueStatus{Queued: 70, Done: 28, Dead: 2, Total: 100})
	p.observe(t0.Add(64*time.Second), api.QueueStatus{Queued: 50, Done: 48, Dead: 2, Total: 100})
	if got := p.rate(); got != 10 {
		t.Errorf("rate over the last window = %v, want 10", got)
	}
	var idle progress
	idle.observe(t0, api.QueueStatus{Queued: 5, Total: 5})
	if line := idle.line(t0); !strings.HasSuffix(line, "rate -  ETA -") {
		t.Errorf("no rate yet: %q", line)
	}
}
