package cluster

import "testing"

func TestShardMovesTable(t *testing.T) {
	for _, s := range []int{16, 256} {
		for n := 3; n <= 10; n++ {
			r, err := ShardMoves(s, 2, n)
			if err != nil {
				t.Fatalf("S=%d N=%d: %v", s, n, err)
			}
			t.Logf("S=%3d R=2 N=%2d  join: moves %3d opt %6.1f ratio %.3f max %3d mean %6.1f load %.3f bound %3d passes %d | leave: moves %3d opt %6.1f ratio %.3f max %3d mean %6.1f load %.3f passes %d",
				s, n, r.Join.Moves, r.Join.Optimum, r.Join.MoveRatio(), r.Join.MaxLoad, r.Join.MeanLoad, r.Join.LoadRatio(), r.Join.Bound, r.Join.Passes,
				r.Leave.Moves, r.Leave.Optimum, r.Leave.MoveRatio(), r.Leave.MaxLoad, r.Leave.MeanLoad, r.Leave.LoadRatio(), r.Leave.Passes)
		}
	}
}
