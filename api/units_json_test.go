package api

import (
	"encoding/json"
	"testing"
)

func TestMilliCPUJSONRoundTrip(t *testing.T) {
	for _, c := range []MilliCPU{0, 1, 250, 500, 1000, 1500, 2000} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back MilliCPU
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if back != c {
			t.Errorf("%d millicores → %s → %d", c, b, back)
		}
	}
}
