package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

func discardLogger() *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is a member on a free loopback port.
func testConfig(name, key string, join []string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.EncryptKey = key
	cfg.Join = join
	cfg.JoinRetry = JoinRetry{Interval: 50 * time.Millisecond, Max: 200 * time.Millisecond}
	cfg.LeaveTimeout = time.Second
	return cfg
}

func testKey(t *testing.T) string {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func metaFor(name string) Meta {
	return Meta{
		Name: name, APIAddr: "127.0.0.1:7443", RaftAddr: "127.0.0.1:7444",
		Capacity: api.Resources{CPU: 4000, Memory: 8 << 30, Pids: 32768},
		Labels:   map[string]string{"zone": "z-" + name}, Version: "test", Server: true,
	}
}

// startMember makes a member and runs it until the test ends.
func startMember(t *testing.T, name, key string, join []string) *Membership {
	t.Helper()
	m, err := New(testConfig(name, key, join), metaFor(name), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return m
}

// startCluster starts n members: the first is the seed the others join.
func startCluster(t *testing.T, key string, names ...string) []*Membership {
	t.Helper()
	seed := startMember(t, names[0], key, nil)
	ms := []*Membership{seed}
	for _, name := range names[1:] {
		ms = append(ms, startMember(t, name, key, []string{seed.LocalNode().Addr}))
	}
	for _, m := range ms {
		waitFor(t, 5*time.Second, func() bool { return countAlive(m) == len(names) },
			"%s sees %d alive members", m.LocalNode().Name, len(names))
	}
	return ms
}

func countAlive(m *Membership) int {
	n := 0
	for _, mem := range m.Members() {
		if mem.State == raftstore.NodeAlive {
			n++
		}
	}
	return n
}

func member(m *Membership, name string) (Member, bool) {
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem, true
		}
	}
	return Member{}, false
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEvent returns the first event about name of one of the given types,
// failing on an event about name of another type in skipped-never.
func waitEvent(t *testing.T, m *Membership, name string, timeout time.Duration, want EventType, forbidden ...EventType) MemberEvent {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev := <-m.Events():
			if ev.Member.Name != name {
				continue
			}
			if ev.Type == want {
				return ev
			}
			for _, f := range forbidden {
				if ev.Type == f {
					t.Fatalf("%s: got %s for %s, want %s", m.LocalNode().Name, ev.Type, name, want)
				}
			}
		case <-timer.C:
			t.Fatalf("%s: no %s event for %s within %s", m.LocalNode().Name, want, name, timeout)
		}
	}
}

func TestThreeMembersJoinThroughOneSeed(t *testing.T) {
	key := testKey(t)
	ms := startCluster(t, key, "a", "b", "c")
	for _, m := range ms {
		for _, name := range []string{"a", "b", "c"} {
			mem, ok := member(m, name)
			if !ok || mem.State != raftstore.NodeAlive {
				t.Fatalf("%s sees %s as %+v", m.LocalNode().Name, name, mem)
			}
			if !reflect.DeepEqual(mem.Meta, metaFor(name)) {
				t.Fatalf("%s sees %s's meta as %+v, want %+v", m.LocalNode().Name, name, mem.Meta, metaFor(name))
			}
			if ni := mem.NodeInfo(); ni.Status != raftstore.NodeAlive || ni.RaftAddr != "127.0.0.1:7444" {
				t.Fatalf("NodeInfo: %+v", ni)
			}
		}
	}
}

func TestMetaUpdatePropagates(t *testing.T) {
	ms := startCluster(t, testKey(t), "a", "b", "c")
	meta := metaFor("b")
	meta.Labels = map[string]string{"zone": "moved"}
	meta.Capacity.CPU = 2000
	if err := ms[1].UpdateMeta(meta); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Membership{ms[0], ms[2]} {
		waitFor(t, 5*time.Second, func() bool {
			mem, _ := member(m, "b")
			return reflect.DeepEqual(mem.Meta, meta)
		}, "%s sees b's new meta", m.LocalNode().Name)
		ev := waitEvent(t, m, "b", 5*time.Second, EventUpdate)
		if !reflect.DeepEqual(ev.Member.Meta, meta) {
			t.Fatalf("update event carries %+v, want %+v", ev.Member.Meta, meta)
		}
	}
	if err := ms[1].UpdateMeta(Meta{Name: "not-b"}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("UpdateMeta naming another node: got %v, want api.ErrInvalid", err)
	}
}

func TestCrashedMemberIsFailed(t *testing.T) {
	ms := startCluster(t, testKey(t), "a", "b", "c")
	crashed := time.Now()
	if err := ms[2].Shutdown(); err != nil { // no leave message: a crash
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		ev := waitEvent(t, m, "c", 5*time.Second, EventFailed, EventLeave)
		t.Logf("%s declared c failed %s after it stopped", m.LocalNode().Name, ev.Time.Sub(crashed).Round(time.Millisecond))
		if mem, _ := member(m, "c"); mem.State != raftstore.NodeDead {
			t.Fatalf("%s lists c as %s, want dead", m.LocalNode().Name, mem.State)
		}
	}
}

func TestGracefulLeaveIsReportedAsLeave(t *testing.T) {
	ms := startCluster(t, testKey(t), "a", "b", "c")
	if err := ms[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		waitEvent(t, m, "c", 5*time.Second, EventLeave, EventFailed)
		if mem, _ := member(m, "c"); mem.State != raftstore.NodeLeft {
			t.Fatalf("%s lists c as %s, want left", m.LocalNode().Name, mem.State)
		}
	}
	if err := ms[2].Leave(time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
}

// TestRunLeavesOnlyWhenLeaveOnStopSaysSo: a member whose LeaveOnStop says
// no (an agent restarting, its groups running) stops gossiping without a
// leave, so the others find it failed, not left; one that says yes leaves.
func TestRunLeavesOnlyWhenLeaveOnStopSaysSo(t *testing.T) {
	key := testKey(t)
	for _, tc := range []struct {
		name  string
		leave bool
		want  EventType
		not   EventType
	}{{"stays", false, EventFailed, EventLeave}, {"goes", true, EventLeave, EventFailed}} {
		seed := startMember(t, "seed-"+tc.name, key, nil)
		cfg := testConfig(tc.name, key, []string{seed.LocalNode().Addr})
		asked := make(chan struct{}, 1)
		cfg.LeaveOnStop = func() bool { asked <- struct{}{}; return tc.leave }
		m, err := New(cfg, metaFor(tc.name), discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		waitFor(t, 5*time.Second, func() bool { _, ok := member(seed, tc.name); return ok && countAlive(seed) == 2 },
			"the seed sees %s alive", tc.name)
		cancel()
		if err := <-done; err != nil {
			// With one other member the leave broadcast's wait can time
			// out although the message went: the event below decides.
			t.Logf("%s: Run = %v", tc.name, err)
		}
		select {
		case <-asked:
		default:
			t.Fatalf("%s: LeaveOnStop was not asked", tc.name)
		}
		waitEvent(t, seed, tc.name, 5*time.Second, tc.want, tc.not)
	}
}

func TestMemberWithAnotherKeyCannotJoin(t *testing.T) {
	ms := startCluster(t, testKey(t), "a", "b")
	intruder := startMember(t, "x", testKey(t), nil)
	n, err := intruder.ml.Join([]string{ms[0].LocalNode().Addr})
	if n != 0 || err == nil {
		t.Fatalf("join with another key: contacted %d, err %v; want 0 and an error", n, err)
	}
	t.Logf("join with another key failed as it should: %v", err)
	// Give gossip a few rounds to spread x if it had got in.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if _, ok := member(m, "x"); ok {
				t.Fatalf("%s lists the member with the wrong key", m.LocalNode().Name)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := len(intruder.Members()); got != 1 {
		t.Fatalf("intruder knows %d members, want only itself", got)
	}
}

func TestValidate(t *testing.T) {
	key := testKey(t)
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"default is valid", func(*Config) {}, ""},
		{"join with a key", func(c *Config) { c.Join = []string{"10.0.0.1:7946"}; c.EncryptKey = key }, ""},
		{"join without a key", func(c *Config) { c.Join = []string{"10.0.0.1:7946"} },
			"gossip encryption is required whenever more than one node is configured"},
		{"key not base64", func(c *Config) { c.EncryptKey = "not base64!" }, "not base64"},
		{"key too short", func(c *Config) { c.EncryptKey = "c2hvcnQ=" }, "want 32"},
		{"bad keyring key", func(c *Config) { c.EncryptKey = key; c.Keyring = [][]byte{[]byte("x")} }, "keyring key 0"},
		{"no name", func(c *Config) { c.NodeName = "" }, "node name is empty"},
		{"probe timeout over interval", func(c *Config) { c.ProbeTimeout = 2 * c.ProbeInterval }, "probe timeout"},
		{"zero join retry", func(c *Config) { c.JoinRetry = JoinRetry{} }, "join retry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeName = "n1"
			tt.change(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate: got %v, want an api.ErrInvalid containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestEventsNeverBlockTheCallback(t *testing.T) {
	d := &eventDelegate{ch: make(chan MemberEvent, 1), table: newMemberTable(), log: discardLogger()}
	m, err := New(testConfig("solo", "", nil), metaFor("solo"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	node := *m.ml.LocalNode() // a copy: memberlist writes the original
	done := make(chan struct{})
	go func() {
		d.NotifyJoin(&node)
		d.NotifyUpdate(&node) // buffer full: dropped, not blocked
		d.NotifyLeave(&node)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a callback blocked on a full events channel")
	}
	if ev := <-d.ch; ev.Type != EventJoin || ev.Member.Meta.Name != "solo" {
		t.Fatalf("kept event: %+v, want the first (join)", ev)
	}
}

func TestRunRetriesJoinUntilTheSeedAppears(t *testing.T) {
	key := testKey(t)
	// Reserve a port by starting the seed, note it and stop it; the joiner
	// starts retrying against it, then the seed comes up on that port. The
	// kernel may hand the free port to someone else in between: then the
	// whole round is repeated on a new port (never skipped).
	var (
		joiner *Membership
		seed   *Membership
		errs   []error
	)
	for range 5 {
		probe, err := New(testConfig("seed", key, nil), metaFor("seed"), discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		addr := probe.LocalNode().Addr
		port := probe.ml.LocalNode().Port
		probe.Shutdown()

		joiner = startMember(t, "joiner", key, []string{addr})
		cfg := testConfig("seed", key, nil)
		cfg.BindPort = int(port)
		seed, err = New(cfg, metaFor("seed"), discardLogger())
		if err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("port %d: %w", port, err))
		joiner.Shutdown()
	}
	if seed == nil {
		t.Fatalf("the seed's port was taken again every time: %v", errs)
	}
	defer seed.Shutdown()
	waitFor(t, 5*time.Second, func() bool { return countAlive(joiner) == 2 && countAlive(seed) == 2 },
		"joiner and seed see each other")
}

func TestGenerateKeyIsValid(t *testing.T) {
	k := testKey(t)
	cfg := DefaultConfig()
	cfg.EncryptKey = k
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if k2 := testKey(t); k2 == k {
		t.Fatal("two generated keys are equal")
	}
}
