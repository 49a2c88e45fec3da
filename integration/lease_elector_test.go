package integration

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// electorGroupTOML is a group whose app knows nothing of Berth: it only
// serves readiness. Its [[lease]] has an elector_port, as an app written
// against the paper's leader-elector sidecar expects on localhost:4040.
func electorGroupTOML(name string) string {
	return fmt.Sprintf(`name = %q
grace_period = "2s"
[[lease]]
name = "leader"
ttl = "2s"
elector_port = 4040
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "200ms", timeout = "150ms" }
`, name)
}

// TestLeaseElectorPortAnswersLikeTheSidecar: GET http://127.0.0.1:4040/
// inside the group's network namespace names the holder, as the contrib
// leader-elector sidecar did; other paths are refused; the port answers
// again after agentd is killed and started again.
func TestLeaseElectorPortAnswersLikeTheSidecar(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "solo"})
	applyTOML(t, a, "elect.toml", electorGroupTOML("elect"))
	st := waitGroup(t, a, "elect", 60*time.Second, "running and ready", func(st *api.GroupStatus) bool {
		return allRunning(st) && st.Ready
	})
	holder := func(netns string) func() (bool, error) {
		return func() (bool, error) {
			code, body := nsDo(t, netns, "GET", "http://127.0.0.1:4040/", "")
			if code != 200 {
				return false, fmt.Errorf("%d %s", code, body)
			}
			var ans api.ElectorAnswer
			if err := json.Unmarshal([]byte(body), &ans); err != nil {
				return false, fmt.Errorf("%s: %v", body, err)
			}
			if want := "elect@solo"; ans.Name != want {
				return false, fmt.Errorf("name %q, want %q", ans.Name, want)
			}
			return true, nil
		}
	}
	// Asking makes the group a candidate; the only candidate is elected.
	waitFor(t, 20*time.Second, "the elector port names the holder", holder(st.NetNS))
	if code, body := nsDo(t, st.NetNS, "GET", "http://127.0.0.1:4040/v1/self", ""); code != 404 {
		t.Errorf("GET /v1/self on the elector port = %d %s, want 404", code, body)
	}
	if code, body := nsDo(t, st.NetNS, "POST", "http://127.0.0.1:4040/", ""); code != 404 {
		t.Errorf("POST / on the elector port = %d %s, want 404", code, body)
	}

	a.Kill()
	a.start()
	st = waitGroup(t, a, "elect", 60*time.Second, "reattached", func(st *api.GroupStatus) bool {
		return allRunning(st) && st.Ready
	})
	waitFor(t, 20*time.Second, "the elector port answers after an agent restart", holder(st.NetNS))
}
