package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTopAndDescribeShowUsage: a container that burns CPU shows a CPU
// rate in top, and describe gives its memory and pids now.
func TestTopAndDescribeShowUsage(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "busy.toml", `name = "busy"
[[container]]
name = "spin"
image = "berth.local/busybox:latest"
command = ["sh", "-c", "while true; do :; done"]
[container.resources]
memory = "64MiB"
cpu = "500m"
`)
	waitGroup(t, a, "busy", 30*time.Second, "running", allRunning)
	var cpu float64
	waitFor(t, 10*time.Second, "top shows the spinning container", func() (bool, error) {
		us, err := a.api().Top(context.Background())
		if err != nil || len(us) != 1 {
			return false, err
		}
		cpu = us[0].CPU
		return us[0].Group == "busy" && us[0].Container == "spin" && cpu > 0.2 && us[0].MemoryLimit == 64<<20 && us[0].Pids >= 1, nil
	})
	// The CFS quota of 500m caps it at half a core.
	if cpu > 0.65 {
		t.Errorf("cpu %.2f cores, want ≤ 0.5 (+ sampling error) under a 500m limit", cpu)
	}
	st := getGroup(t, a, "busy")
	if u := st.Containers[0].Usage; u == nil || u.Memory <= 0 || u.CPUSeconds <= 0 {
		t.Errorf("describe usage = %+v", u)
	}
	env.needAgentctl(t)
	out, err := exec.Command(env.AgentctlBin, "--socket", a.Socket, "top").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "spin") || !strings.Contains(string(out), "CPU") {
		t.Errorf("agentctl top: %v\n%s", err, out)
	}
}
