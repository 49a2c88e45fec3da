package cluster

import (
	"math"
	"strconv"
	"testing"
)

// TestShardsJoinAndLeaveNearOptimum is issue 6's shard requirement on the
// scheduler alone: S = 16, R = 2 on 3 → 4 → 3 nodes. The optimum of the
// join is the newcomer's fair share S·R/(N+1) = 8; the optimum of the
// leave is the fair share the leaving node held among N+1 nodes, the same
// S·R/(N+1) = 8. ShardMoves itself fails when an allocation is left
// unplaced or two replicas of a shard share a node.
func TestShardsJoinAndLeaveNearOptimum(t *testing.T) {
	r, err := ShardMoves(16, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name string
		s    ShardStep
	}{{"join 3→4", r.Join}, {"leave 4→3", r.Leave}} {
		if math.Abs(float64(step.s.Moves)-step.s.Optimum) > 0.10*step.s.Optimum {
			t.Errorf("%s: %d moves, not within 10%% of the optimum %.1f", step.name, step.s.Moves, step.s.Optimum)
		}
		if step.s.MaxLoad > step.s.Bound {
			t.Errorf("%s: a node holds %d allocations, above the bound %d", step.name, step.s.MaxLoad, step.s.Bound)
		}
		if step.s.Passes > 2 {
			t.Errorf("%s: took %d passes, want one pass and an empty one", step.name, step.s.Passes)
		}
	}
}

// TestShardMovesTable prints the benchmark's table (go test -v -run
// ShardMoves ./cluster) and holds the large S to issue 6's targets:
// moves/optimum ≤ 1.05 and max/mean ≤ 1.10 for N = 3..10. At S = 16 the
// loads are a few allocations per node, so one allocation above the mean
// is already more than 10 % (e.g. 4 on a mean of 3.2): there only the load
// bound itself is asserted.
func TestShardMovesTable(t *testing.T) {
	for _, shards := range []int{16, 256} {
		for n := 3; n <= 10; n++ {
			r, err := ShardMoves(shards, 2, n)
			if err != nil {
				t.Fatalf("S=%d N=%d: %v", shards, n, err)
			}
			t.Logf("S=%3d R=2 N=%2d | join: %3d moves / %5.1f = %.3f, max/mean %3d/%5.1f = %.3f (bound %3d) | leave: %3d / %5.1f = %.3f, max/mean %.3f | fail: %3d / %5.1f = %.3f, max/mean %.3f",
				shards, n,
				r.Join.Moves, r.Join.Optimum, r.Join.MoveRatio(), r.Join.MaxLoad, r.Join.MeanLoad, r.Join.LoadRatio(), r.Join.Bound,
				r.Leave.Moves, r.Leave.Optimum, r.Leave.MoveRatio(), r.Leave.LoadRatio(),
				r.Fail.Moves, r.Fail.Optimum, r.Fail.MoveRatio(), r.Fail.LoadRatio())
			for name, s := range map[string]ShardStep{"initial": r.Initial, "join": r.Join, "leave": r.Leave, "fail": r.Fail} {
				if s.MaxLoad > s.Bound {
					t.Errorf("S=%d N=%d %s: max load %d above the bound %d", shards, n, name, s.MaxLoad, s.Bound)
				}
				if s.Passes > 2 {
					t.Errorf("S=%d N=%d %s: %d passes, want one that decides and an empty one", shards, n, name, s.Passes)
				}
			}
			if shards < 256 {
				continue
			}
			for name, s := range map[string]ShardStep{"join": r.Join, "leave": r.Leave} {
				if s.MoveRatio() > 1.05 {
					t.Errorf("S=%d N=%d %s: moves/optimum %.3f > 1.05", shards, n, name, s.MoveRatio())
				}
				if s.LoadRatio() > 1.10 {
					t.Errorf("S=%d N=%d %s: max/mean %.3f > 1.10", shards, n, name, s.LoadRatio())
				}
			}
		}
	}
}

func TestShardMovesIsDeterministic(t *testing.T) {
	a, err := ShardMoves(64, 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ShardMoves(64, 3, 5)
	if a != b {
		t.Errorf("two runs differ:\n%+v\n%+v", a, b)
	}
	if _, err := ShardMoves(0, 2, 3); err == nil {
		t.Errorf("ShardMoves(0, 2, 3) did not fail")
	}
}

func TestShardBound(t *testing.T) {
	for _, tc := range []struct {
		total, members int
		lf             float64
		want           int
	}{
		{32, 4, 1.10, 8},     // 8.8 rounds down to the fair share
		{32, 3, 1.10, 11},    // ⌈10.67⌉ = 11 > ⌊11.73⌋? no: both 11
		{512, 10, 1.10, 56},  // ⌊56.32⌋: max/mean 1.094, not ⌈⌉'s 1.113
		{512, 3, 1.10, 187},  // ⌊187.7⌋
		{7, 3, 1.10, 3},      // never below ⌈T/M⌉
		{100, 4, 1.25, 31},   // ⌊31.25⌋
		{10, 0, 1.10, 0},     // no members
		{1000, 50, 1.10, 22}, // exactly 22.0 stays 22
	} {
		if got := shardBound(tc.total, tc.members, tc.lf); got != tc.want {
			t.Errorf("shardBound(%d, %d, %v) = %d, want %d", tc.total, tc.members, tc.lf, got, tc.want)
		}
	}
}

// TestShardsStayWithinTheBoundForAnyName: with S = 16, R = 2 on 3 nodes
// the bound (11 of a mean 10.7) leaves one slot to spare, and placing in
// shard order used to strand the last replicas on a node above it for some
// group names ("kv" on n1..n3: 12). Augmenting paths (plan_shards.go) find
// a placement within the bound whenever one exists, and for S·R ≤ N·bound
// with R < N one always does. Every step of the simulation is checked, for
// many group names and the node names of the integration tests.
func TestShardsStayWithinTheBoundForAnyName(t *testing.T) {
	for g := range 40 {
		group := "g" + strconv.Itoa(g)
		if g == 0 {
			group = "kv"
		}
		for _, sr := range [][2]int{{16, 2}, {16, 3}, {64, 2}} {
			for n := 3; n <= 6; n++ {
				nodes := make([]string, n+1)
				for i := range nodes {
					nodes[i] = "n" + strconv.Itoa(i+1)
				}
				r, err := ShardMovesNamed(group, sr[0], sr[1], nodes)
				if err != nil {
					t.Fatalf("%s S=%d R=%d N=%d: %v", group, sr[0], sr[1], n, err)
				}
				for name, s := range map[string]ShardStep{"initial": r.Initial, "join": r.Join, "leave": r.Leave, "fail": r.Fail} {
					if s.MaxLoad > s.Bound {
						t.Errorf("%s S=%d R=%d N=%d %s: a node holds %d, above the bound %d", group, sr[0], sr[1], n, name, s.MaxLoad, s.Bound)
					}
				}
			}
		}
	}
}

// TestShardsOfTheIntegrationTest is the scheduler's side of
// integration/TestClusterShardsMoveNearTheOptimum (group "kv", S = 16,
// R = 2 on n1..n3, n4 joins and leaves): the join moves exactly the
// newcomer's fair share, the least that brings every node to the bound 8,
// and the leave exactly what the leaving node held.
func TestShardsOfTheIntegrationTest(t *testing.T) {
	r, err := ShardMovesNamed("kv", 16, 2, []string{"n1", "n2", "n3", "n4"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Initial.MaxLoad > 11 || r.Join.Moves != 8 || r.Join.MaxLoad != 8 || r.Leave.Moves != 8 || r.Leave.MaxLoad > 11 {
		t.Errorf("initial max %d (bound 11), join %d moves max %d (want 8, 8), leave %d moves max %d (want 8, ≤ 11)",
			r.Initial.MaxLoad, r.Join.Moves, r.Join.MaxLoad, r.Leave.Moves, r.Leave.MaxLoad)
	}
}
