package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/berth-project/berth/api"
)

// The work queue benchmarks of issue 7:
//
//   - queue API throughput on three agents (real agentd processes on
//     127.0.0.54-56, -queue-ip-base): items pushed, then leased and acked,
//     by clients spread over the three agents' admin sockets (followers
//     forward to the leader), in batches of 100 and one item a request
//     (which the agents coalesce into shared Raft commands);
//   - the per-item overhead of a container-mode queue: N items whose
//     container runs `true`, against the same N one-shot groups applied
//     straight to the same agent (and, for scale, the bare containerd
//     client), one at a time and four at a time.

var (
	queueOnly   = flag.Bool("queue-only", false, "run only the work queue benchmarks")
	queueItems  = flag.Int("queue-items", 50000, "items of the queue API throughput measurement with batches (0 skips the queue benchmarks)")
	queueSingle = flag.Int("queue-single", 5000, "items of the one-item-a-request throughput measurement")
	queueRuns   = flag.Int("queue-runs", 40, "items of the container-mode overhead measurement, per parallelism")
	queueIPBase = flag.Int("queue-ip-base", 54, "the queue throughput benchmark's agents use 127.0.0.<base> to <base+2>")
)

// rate is a count over a time.
type rate struct {
	items, requests int
	took            time.Duration
}

func (r rate) perSecond() float64 { return float64(r.items) / r.took.Seconds() }

// overheadRow is the per-item time of one parallelism.
type overheadRow struct {
	parallelism         int
	queue, groups, bare time.Duration
}

type queueResult struct {
	pushBatch, pushSingle, workBatch, workSingle rate
	batch, clients                               int
	overhead                                     []overheadRow
}

func (b *bench) queueBenchOnly(ctx context.Context) error {
	r, err := b.measureQueues(ctx)
	if err != nil {
		return err
	}
	r.print()
	return nil
}

func (b *bench) measureQueues(ctx context.Context) (*queueResult, error) {
	r := &queueResult{batch: 100, clients: 6}
	var err error
	if r.overhead, err = b.measureQueueOverhead(ctx, *queueRuns); err != nil {
		return nil, fmt.Errorf("container-mode overhead: %w", err)
	}
	c, err := b.startBenchCluster(ctx, 3, clusterShape{prefix: "q", ipBase: *queueIPBase, subnetBase: 240, images: []string{b.busybox}})
	if c != nil {
		defer c.stop()
	}
	if err != nil {
		return nil, err
	}
	if err := r.throughput(ctx, c); err != nil {
		return nil, fmt.Errorf("queue throughput: %w", err)
	}
	return r, nil
}

// pullQueue is a pull-mode queue group whose container does not work on
// it: the bench is the worker, over the admin API.
func pullQueue(name string) string {
	return fmt.Sprintf(`name = %q
network = "none"
grace_period = "1s"
[placement]
replicas = 1
[queue]
mode = "pull"
visibility_timeout = "5m"
[[container]]
name = "idle"
image = "berth.local/busybox:latest"
command = ["sleep", "36000"]
`, name)
}

// throughput measures push and lease+ack on the three agents.
func (r *queueResult) throughput(ctx context.Context, c *benchCluster) error {
	clients := make([]*api.Client, len(c.nodes))
	for i, nd := range c.nodes {
		clients[i] = nd.api
	}
	for _, q := range []string{"tput", "tput1"} {
		if _, err := clients[0].Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: q + ".toml", Content: pullQueue(q)}}}); err != nil {
			return err
		}
		for _, cl := range clients {
			if err := waitQueue(ctx, cl, q); err != nil {
				return err
			}
		}
	}
	item := make([]byte, 64)
	var err error
	if r.pushBatch, err = pushAll(ctx, clients, "tput", *queueItems, r.batch, r.clients, item); err != nil {
		return err
	}
	if r.workBatch, err = workAll(ctx, clients, "tput", *queueItems, r.batch, r.clients); err != nil {
		return err
	}
	const single = 48 // concurrent requests of one item
	if r.pushSingle, err = pushAll(ctx, clients, "tput1", *queueSingle, 1, single, item); err != nil {
		return err
	}
	if r.workSingle, err = workAll(ctx, clients, "tput1", *queueSingle, 1, single); err != nil {
		return err
	}
	return nil
}

func waitQueue(ctx context.Context, c *api.Client, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Queue(ctx, name)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queue %s: %w", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pushAll pushes n items in batches of batch from workers goroutines,
// spread over the clients.
func pushAll(ctx context.Context, clients []*api.Client, queue string, n, batch, workers int, item []byte) (rate, error) {
	var next, requests atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%len(clients)]
			for {
				from := int(next.Add(int64(batch))) - batch
				if from >= n {
					return
				}
				items := make([][]byte, min(batch, n-from))
				for i := range items {
					items[i] = item
				}
				if _, err := cl.Push(ctx, queue, items); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				requests.Add(1)
			}
		}()
	}
	wg.Wait()
	return rate{items: n, requests: int(requests.Load()), took: time.Since(start)}, firstErr
}

// workAll leases and acks n items, batch at a time, from workers
// goroutines spread over the clients.
func workAll(ctx context.Context, clients []*api.Client, queue string, n, batch, workers int) (rate, error) {
	var done, requests atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%len(clients)]
			for done.Load() < int64(n) {
				l, err := cl.LeaseItems(ctx, queue, api.LeaseRequest{Max: batch, Wait: api.Duration(500 * time.Millisecond), Worker: fmt.Sprintf("bench-%d", w)})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				requests.Add(1)
				if len(l.Items) == 0 {
					continue
				}
				acks := make([]api.Ack, len(l.Items))
				for i, it := range l.Items {
					acks[i] = api.Ack{ID: it.ID, Token: it.Token}
				}
				res, err := cl.Ack(ctx, queue, acks...)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				requests.Add(1)
				for _, a := range res.Results {
					if a.Outcome == api.AckDone {
						done.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && done.Load() != int64(n) {
		firstErr = fmt.Errorf("%d items acked, want %d", done.Load(), n)
	}
	return rate{items: n, requests: int(requests.Load()), took: time.Since(start)}, firstErr
}

// measureQueueOverhead runs n items through a container-mode queue and n
// one-shot groups on the bench's own agent (a one-node cluster), at
// parallelism 1 and 4, in alternating rounds; each figure is the median
// of the rounds' times per item.
func (b *bench) measureQueueOverhead(ctx context.Context, n int) ([]overheadRow, error) {
	const rounds = 3
	var rows []overheadRow
	bare, err := b.bareOneShots(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("bare containerd: %w", err)
	}
	for _, p := range []int{1, 4} {
		var queue, groups []time.Duration
		for r := range rounds {
			g, err := b.oneShotGroups(ctx, n, p, r)
			if err != nil {
				return nil, fmt.Errorf("one-shot groups: %w", err)
			}
			q, err := b.queueItemsThrough(ctx, n, p, r)
			if err != nil {
				return nil, fmt.Errorf("queue: %w", err)
			}
			groups, queue = append(groups, g), append(queue, q)
		}
		row := overheadRow{parallelism: p, queue: pct(queue, 50), groups: pct(groups, 50)}
		if p == 1 {
			row.bare = bare
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// oneShotGroup is a group whose one container runs `true` once.
func oneShotGroup(name string) string {
	return fmt.Sprintf(`name = %q
network = "none"
restart = "never"
grace_period = "1s"
[[container]]
name = "item"
image = "berth.local/busybox:latest"
command = ["true"]
`, name)
}

// oneShotGroups applies n one-shot groups, p at a time, each as soon as
// one before it completed, and deletes each when it has. It returns the
// time per group, from the first apply to the last completion.
func (b *bench) oneShotGroups(ctx context.Context, n, p, round int) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	waiters := map[string]chan time.Time{}
	ready := make(chan struct{})
	go func() {
		_ = b.api.Events(ctx, api.EventOptions{Follow: true}, func(ev api.Event) error {
			select {
			case <-ready:
			default:
				close(ready) // the history arrived: the stream is live
			}
			if ev.Container != "" || (ev.Reason != "Completed" && ev.Reason != "ContainerFailed") {
				return nil
			}
			mu.Lock()
			ch := waiters[ev.Group]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- ev.Time:
				default:
				}
			}
			return nil
		})
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		return 0, errors.New("no event stream")
	}
	var next atomic.Int64
	var last atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				name := fmt.Sprintf("one-%d-%d-%d", p, round, i)
				ch := make(chan time.Time, 1)
				mu.Lock()
				waiters[name] = ch
				mu.Unlock()
				if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: name + ".toml", Content: oneShotGroup(name)}}}); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				select {
				case at := <-ch:
					for {
						old := last.Load()
						if at.UnixNano() <= old || last.CompareAndSwap(old, at.UnixNano()) {
							break
						}
					}
				case <-time.After(30 * time.Second):
					once.Do(func() { firstErr = fmt.Errorf("%s did not complete in 30s", name) })
					return
				}
				go func() { _ = b.api.Delete(context.Background(), name, false) }()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	took := time.Unix(0, last.Load()).Sub(start)
	return took / time.Duration(n), b.waitNoGroups(ctx, "one-")
}

// queueItemsThrough pushes n items into a container-mode queue of
// parallelism p whose container runs `true`, and returns the time per
// item from the push to the last completion recorded.
func (b *bench) queueItemsThrough(ctx context.Context, n, p, round int) (time.Duration, error) {
	name := fmt.Sprintf("over%d-%d", p, round)
	spec := fmt.Sprintf(`name = %q
network = "none"
grace_period = "1s"
[placement]
replicas = 1
[queue]
mode = "container"
parallelism = %d
[[container]]
name = "item"
image = "berth.local/busybox:latest"
command = ["true"]
`, name, p)
	if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: name + ".toml", Content: spec}}}); err != nil {
		return 0, err
	}
	defer func() { _ = b.api.Delete(context.Background(), name, true) }()
	if err := waitQueue(ctx, b.api, name); err != nil {
		return 0, err
	}
	// The worker leases only once the allocation is placed and reported.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := b.api.ClusterGroup(ctx, name)
		if err == nil && g.Ready == 1 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("queue group %s not ready: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	items := make([][]byte, n)
	for i := range items {
		items[i] = []byte(fmt.Sprintf("item %d", i))
	}
	start := time.Now()
	if _, err := b.api.Push(ctx, name, items); err != nil {
		return 0, err
	}
	deadline = time.Now().Add(time.Duration(n) * 5 * time.Second)
	for {
		q, err := b.api.Queue(ctx, name)
		if err != nil {
			return 0, err
		}
		if q.Status.Done == n {
			break
		}
		if q.Status.Dead > 0 || time.Now().After(deadline) {
			return 0, fmt.Errorf("queue %s: %+v", name, q.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var last time.Time
	var after uint64
	for {
		its, err := b.api.QueueItems(ctx, name, api.ItemFilter{After: after, Limit: 1000})
		if err != nil {
			return 0, err
		}
		for _, it := range its {
			if it.DoneAt.After(last) {
				last = it.DoneAt
			}
		}
		if len(its) < 1000 {
			break
		}
		after = its[len(its)-1].ID
	}
	return last.Sub(start) / time.Duration(n), b.waitNoGroups(ctx, name+"_")
}

// waitNoGroups waits until no group of the agent has prefix.
func (b *bench) waitNoGroups(ctx context.Context, prefix string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		gs, err := b.api.List(ctx)
		if err != nil {
			return err
		}
		left := 0
		for _, g := range gs {
			if len(g.Name) >= len(prefix) && g.Name[:len(prefix)] == prefix {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d groups %s* left", left, prefix)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bareOneShots runs n containers of `true` one after the other with the
// containerd client alone (no netns, no log driver): container, task,
// wait, delete. It returns the time per container.
func (b *bench) bareOneShots(ctx context.Context, n int) (time.Duration, error) {
	ctx = namespaces.WithNamespace(ctx, directNS)
	img, err := b.client.GetImage(ctx, "berth.local/busybox:latest")
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("oneshot-%d", i)
		c, err := b.client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
			containerd.WithRuntime("io.containerd.runc.v2", nil), containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("true")))
		if err != nil {
			return 0, err
		}
		t, err := c.NewTask(ctx, cio.NullIO)
		if err != nil {
			return 0, err
		}
		exit, err := t.Wait(ctx)
		if err != nil {
			return 0, err
		}
		if err := t.Start(ctx); err != nil {
			return 0, err
		}
		<-exit
		if _, err := t.Delete(ctx); err != nil {
			return 0, err
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

func (r *queueResult) print() {
	fmt.Printf("\nWork queues\n")
	fmt.Printf("  API throughput, 3 agentd processes on 127.0.0.%d-%d, clients on all three admin sockets (followers forward to the leader)\n",
		*queueIPBase, *queueIPBase+2)
	row := func(what string, x rate) {
		fmt.Printf("    %-52s %8.0f items/s  (%d items, %d requests, %s)\n", what, x.perSecond(), x.items, x.requests, x.took.Round(time.Millisecond))
	}
	row(fmt.Sprintf("push, %d items a request, %d clients", r.batch, r.clients), r.pushBatch)
	row(fmt.Sprintf("lease+ack, up to %d items a request, %d clients", r.batch, r.clients), r.workBatch)
	row("push, 1 item a request, 48 clients (coalesced)", r.pushSingle)
	row("lease+ack, 1 item a request, 48 clients", r.workSingle)
	fmt.Printf("    target ≥ 5,000 ops/s with batching: push %.0f/s, lease+ack %.0f/s\n", r.pushBatch.perSecond(), r.workBatch.perSecond())
	fmt.Printf("  container-mode per-item time (%d items of `true`, one agent; median of 3 rounds)\n", *queueRuns)
	fmt.Printf("    %-12s %14s %16s %12s %10s\n", "parallelism", "queue", "one-shot groups", "ratio", "bare ctrd")
	for _, o := range r.overhead {
		bare := "-"
		if o.bare > 0 {
			bare = ms(o.bare)
		}
		fmt.Printf("    %-12d %14s %16s %12.2f %10s\n", o.parallelism, ms(o.queue), ms(o.groups), float64(o.queue)/float64(o.groups), bare)
	}
	fmt.Printf("    target: queue / one-shot groups ≤ 1.2\n")
}
