package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestAmbassadorNat: an ambassador with mode = "nat" is DNAT rules in
// the client group's network namespace. It spreads connections round
// robin over the three ready replicas of a cluster group on this node,
// stops sending to one within about a readiness period of it turning not
// ready, sends a split about its share, refuses at once when the service
// has no endpoint, and leaves nothing behind when the group is deleted.
func TestAmbassadorNat(t *testing.T) {
	if _, err := exec.LookPath("iptables-save"); err != nil {
		msg := "needs iptables-save (contrib/scripts/install-deps.sh installs iptables)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
		}
		t.Skip(msg + " (set CI=true to make this a failure)")
	}
	hostLocalnet := readTrim(t, "/proc/sys/net/ipv4/conf/all/route_localnet")
	c := startPublishingCluster(t, 1, ambassadorBase+5)
	a := c.Agents[0]
	const period = 300 * time.Millisecond
	backend := func(name, placement string) string {
		return fmt.Sprintf(`name = %q
grace_period = "1s"
[placement]
%s
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "%s", timeout = "200ms", failure_threshold = 1 }
`, name, placement, period)
	}
	applyTOML(t, a, "nb.toml", backend("nb", "replicas = 3\nspread = \"prefer\""))
	applyTOML(t, a, "nbexp.toml", backend("nbexp", "replicas = 1"))
	applyTOML(t, a, "nclient.toml", `name = "nclient"
grace_period = "1s"
[[ambassador]]
listen = "127.0.0.1:7001"
service = "nb"
port = 8080
mode = "nat"
[[ambassador]]
listen = "127.0.0.1:7002"
service = "nothing"
port = 8080
mode = "nat"
[[ambassador]]
listen = "127.0.0.1:7003"
service = "nb"
port = 8080
mode = "nat"
split = [{ service = "nbexp", percent = 20 }]
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`)
	waitClusterGroup(t, a, "nb", 90*time.Second, "all ready", allReady(3))
	waitClusterGroup(t, a, "nbexp", 90*time.Second, "all ready", allReady(1))
	client := waitGroup(t, a, "nclient", 30*time.Second, "ready", func(st *api.GroupStatus) bool { return allRunning(st) && st.Ready })
	ns := client.NetNS
	eps, err := a.api().Endpoints(t.Context(), "nb")
	if err != nil || len(eps) != 3 {
		t.Fatalf("endpoints of nb: %+v %v; want 3", eps, err)
	}
	replicas := map[string]string{} // name → bridge address
	for _, ep := range eps {
		replicas[ep.Group] = ep.Address
	}

	// Round robin: --mode nth is exact, whatever the phase.
	waitFor(t, 10*time.Second, "the nat ambassador reaches the three replicas", func() (bool, error) {
		counts, _ := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 3)
		if len(counts) != 3 {
			return false, fmt.Errorf("answers %v", counts)
		}
		return true, nil
	})
	counts, _ := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 30)
	for name := range replicas {
		if counts[name] != 10 {
			t.Errorf("round robin over 30 connections: %v; want 10 for each of %v", counts, replicas)
			break
		}
	}

	// No endpoint: refused at once, not a timeout.
	err = inNetns(t, ns, func() error {
		t0 := time.Now()
		_, err := net.DialTimeout("tcp", "127.0.0.1:7002", 3*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(t0) > time.Second {
			return fmt.Errorf("dial with no endpoint: %v after %s; want connection refused at once", err, time.Since(t0))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// A replica turns not ready: no new connection reaches it.
	victim := slices.Sorted(func(yield func(string) bool) {
		for n := range replicas {
			if !yield(n) {
				return
			}
		}
	})[0]
	t0 := time.Now()
	if code, b, err := hostPost(fmt.Sprintf("http://%s:8080/ready?v=false", replicas[victim])); err != nil || code != 200 {
		t.Fatalf("set %s not ready: %d %s %v", victim, code, b, err)
	}
	var gone time.Duration
	waitFor(t, 5*time.Second, victim+" out of the rules", func() (bool, error) {
		counts, _ := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 3)
		if counts[victim] > 0 || counts[""] > 0 {
			return false, fmt.Errorf("answers %v", counts)
		}
		gone = time.Since(t0)
		return true, nil
	})
	t.Logf("%s got no more connections %s after it turned not ready (readiness period %s)", victim, gone.Round(time.Millisecond), period)
	if gone > 3*period+500*time.Millisecond {
		t.Errorf("%s still got connections %s after it turned not ready; want about one readiness period (%s)", victim, gone, period)
	}
	counts, _ = tally(t, ns, "", "127.0.0.1:7001", "/hostname", 20)
	if len(counts) != 2 || counts[victim] > 0 || counts[""] > 0 {
		t.Errorf("with %s not ready: %v; want the other two, 10 each", victim, counts)
	}
	if _, _, err := hostPost(fmt.Sprintf("http://%s:8080/ready?v=true", replicas[victim])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, victim+" back in the rules", func() (bool, error) {
		counts, _ := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 3)
		return len(counts) == 3, fmt.Errorf("answers %v", counts)
	})

	// Split: 20 % to nbexp (random: about).
	counts, _ = tally(t, ns, "", "127.0.0.1:7003", "/hostname", 300)
	exp := 0
	for name, n := range counts {
		if strings.HasPrefix(name, "nbexp") {
			exp += n
		}
	}
	t.Logf("split 20%%: %v", counts)
	if exp < 30 || exp > 90 || counts[""] > 0 {
		t.Errorf("split 20%% to nbexp over 300 connections: %d (%v); want about 60", exp, counts)
	}

	st := getGroup(t, a, "nclient")
	if !slices.ContainsFunc(st.Events, func(ev api.Event) bool {
		return ev.Reason == "AmbassadorListening" && strings.Contains(ev.Message, `mode = "nat"`)
	}) {
		t.Errorf("no AmbassadorListening event for nat in nclient's events: %+v", st.Events)
	}
	out, err := exec.Command("nsenter", "--net="+ns, "iptables-save").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 7001 -j BERTH-AMB-7F000001-7001") ||
		!strings.Contains(string(out), "BERTH-AMB-GUARD") {
		t.Errorf("rules in nclient's namespace (%v):\n%s", err, out)
	}

	// Deleted: the namespace and its rules are gone, the host is as it
	// was.
	if err := a.api().Delete(t.Context(), "nclient", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "nclient gone", func() (bool, error) {
		_, err := a.api().Get(t.Context(), "nclient")
		return err != nil, nil
	})
	if _, err := os.Stat(ns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nclient's namespace %s is still there: %v", ns, err)
	}
	host, err := exec.Command("iptables-save").CombinedOutput()
	if err != nil || strings.Contains(string(host), "BERTH-AMB") {
		t.Errorf("the host's iptables-save (%v) holds BERTH-AMB:\n%s", err, host)
	}
	if got := readTrim(t, "/proc/sys/net/ipv4/conf/all/route_localnet"); got != hostLocalnet {
		t.Errorf("the host's route_localnet is %s; was %s", got, hostLocalnet)
	}
}
