package integration

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/berth-project/berth/supervisor"
)

// Test agents get a [network] of their own: several test agents run at once
// on one host (the agents of one test, and other `go test` processes), and
// they must not share a bridge, a subnet or address records. Each gets a
// bridge "bt<pid>x<n>" (at most 15 characters) and a /24 in 10.200.0.0 –
// 10.239.255.0, claimed host-wide with a file in testNetDir, so two
// processes never pick the same one.
//
// The agent does not delete its bridge (in production it outlives the
// agent); the tests do: when the agent's directory is gone (its cleanup
// ran), sweepTestNetworks deletes its bridge, the port and masquerade
// rules that name it, and its claim. It runs whenever a test agent is
// configured and at the end of the run (cleanupTestNetworks, from
// TestMain's teardown), and it also sweeps what processes that died left.

// testNetDir holds the host-wide subnet claims of test agents: one file
// per subnet, "<pid> <bridge>". /run is emptied at boot, as bridges are.
const testNetDir = "/run/berth-test-net"

var testNet struct {
	mu sync.Mutex
	n  int
	// chains are the CNI chains that existed before this run's first test
	// agent: the end of the run leaves them.
	chains map[string]bool
	// mine maps the bridges of this process to their subnets; claimed
	// says when, so a bridge handed out but not yet written into its
	// agent.toml is not swept.
	mine    map[string]string
	claimed map[string]time.Time
}

// baseAgentConfig returns the agent.toml of a test agent: cfg plus the
// sections every test agent needs unless cfg sets them: [network] with a
// bridge and subnet of its own.
func baseAgentConfig(cfg string) string {
	if regexp.MustCompile(`(?m)^\s*\[network\]`).MatchString(cfg) {
		return cfg
	}
	section, err := newTestNetwork()
	if err != nil {
		// startAgent has no t here: the agent fails on the bad section
		// with this reason in its log.
		return cfg + fmt.Sprintf("\n[network]\nbridge = %q\n", "error: "+err.Error())
	}
	return cfg + "\n" + section
}

// newTestNetwork claims a bridge and subnet and returns their [network]
// section.
func newTestNetwork() (string, error) {
	testNet.mu.Lock()
	defer testNet.mu.Unlock()
	if testNet.mine == nil {
		testNet.mine, testNet.claimed = map[string]string{}, map[string]time.Time{}
		testNet.chains = cniChains()
	}
	sweepTestNetworksLocked(false)
	if err := os.MkdirAll(testNetDir, 0o755); err != nil {
		return "", err
	}
	testNet.n++
	bridge := fmt.Sprintf("bt%dx%d", os.Getpid(), testNet.n)
	used := hostPrefixes()
	start := (os.Getpid()*37 + testNet.n) % (40 * 256)
	for i := 0; i < 40*256; i++ {
		k := (start + i) % (40 * 256)
		subnet := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 200+k/256, k%256))
		if overlapsAny(subnet, used) {
			continue
		}
		claim := filepath.Join(testNetDir, strings.ReplaceAll(subnet.String(), "/", "_"))
		f, err := os.OpenFile(claim, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = fmt.Fprintf(f, "%d %s\n", os.Getpid(), bridge)
		f.Close()
		if err != nil {
			return "", err
		}
		testNet.mine[bridge] = subnet.String()
		testNet.claimed[bridge] = time.Now()
		return fmt.Sprintf("[network]\nbridge = %q\nsubnet = %q\n", bridge, subnet), nil
	}
	return "", errors.New("no free test subnet in 10.200.0.0-10.239.255.0")
}

// hostPrefixes lists the IPv4 prefixes of the host's addresses.
func hostPrefixes() []netip.Prefix {
	addrs, _ := netlink.AddrList(nil, netlink.FAMILY_V4)
	var out []netip.Prefix
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			ones, _ := a.Mask.Size()
			out = append(out, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return out
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

// cleanupTestNetworks removes what test agents left of networking at the
// end of the run: every bridge of this process (every agent has stopped),
// the rules naming them, their claims, and the shared CNI chains this run
// made, if nothing uses them any more.
func cleanupTestNetworks() error {
	testNet.mu.Lock()
	defer testNet.mu.Unlock()
	var errs []error
	for bridge := range testNet.mine {
		errs = append(errs, removeTestNetwork(bridge, testNet.mine[bridge]))
		delete(testNet.mine, bridge)
	}
	sweepTestNetworksLocked(true)
	if testNet.chains != nil {
		errs = append(errs, removeSharedCNIChains(testNet.chains))
	}
	return errors.Join(errs...)
}

// sweepTestNetworksLocked removes the networks of test agents that are
// gone: of this process, those whose agent directory was removed (no
// agent.toml under the run's temp dir names the bridge), or all of them
// at the end of the run; of other processes, those whose process is gone.
func sweepTestNetworksLocked(end bool) {
	live := liveTestBridges()
	claims, _ := os.ReadDir(testNetDir)
	for _, c := range claims {
		path := filepath.Join(testNetDir, c.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		bridge, subnet := f[1], strings.ReplaceAll(c.Name(), "_", "/")
		switch {
		case pid == os.Getpid():
			if !end && (live[bridge] || time.Since(testNet.claimed[bridge]) < 10*time.Second) {
				continue
			}
			delete(testNet.mine, bridge)
			delete(testNet.claimed, bridge)
		case processAlive(pid):
			continue
		}
		_ = removeTestNetwork(bridge, subnet)
		_ = os.Remove(path)
	}
}

// liveTestBridges returns the bridges named by the agent.toml of every
// test agent directory that still exists.
func liveTestBridges() map[string]bool {
	live := map[string]bool{}
	if env.TempDir == "" {
		return live
	}
	re := regexp.MustCompile(`(?m)^\s*bridge\s*=\s*"([^"]+)"`)
	paths, _ := filepath.Glob(filepath.Join(env.TempDir, "*", "agent.toml"))
	more, _ := filepath.Glob(filepath.Join(env.TempDir, "*", "*", "agent.toml"))
	for _, p := range append(paths, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			live[m[1]] = true
		}
	}
	return live
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeTestNetwork deletes a test agent's bridge and the iptables rules
// that name its network (port forwards and masquerade of groups still
// attached when the agent was stopped) or its subnet (firewall rules).
func removeTestNetwork(bridge, subnet string) error {
	var errs []error
	if l, err := netlink.LinkByName(bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", bridge, err))
		}
	}
	name := `name: \"` + bridge + `\"`
	errs = append(errs,
		purgeRules("nat", "CNI-HOSTPORT-DNAT", func(r string) bool { return strings.Contains(r, name) }),
		purgeRules("nat", "POSTROUTING", func(r string) bool { return strings.Contains(r, name) }))
	if p, err := netip.ParsePrefix(subnet); err == nil {
		errs = append(errs, purgeRules("filter", "CNI-FORWARD", func(r string) bool {
			for _, f := range strings.Fields(r) {
				if a, err := netip.ParsePrefix(f); err == nil && p.Contains(a.Addr()) {
					return true
				}
			}
			return false
		}))
	}
	return errors.Join(errs...)
}

// purgeRules deletes the rules of chain that match, and the CNI chains
// they jump to.
func purgeRules(table, chain string, match func(rule string) bool) error {
	out, err := exec.Command("iptables", "-w", "-t", table, "-S", chain).Output()
	if err != nil {
		return nil // no such chain
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "-A ") || !match(line) {
			continue
		}
		args, err := supervisor.SplitIptablesRule(line)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		args[0] = "-D"
		if b, err := exec.Command("iptables", append([]string{"-w", "-t", table}, args...)...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s %s: %v: %s", table, strings.Join(args, " "), err, b))
		}
		for i := range args {
			if args[i] == "-j" && i+1 < len(args) && strings.HasPrefix(args[i+1], "CNI-") && !sharedCNIChain(args[i+1]) {
				_ = exec.Command("iptables", "-w", "-t", table, "-F", args[i+1]).Run()
				_ = exec.Command("iptables", "-w", "-t", table, "-X", args[i+1]).Run()
			}
		}
	}
	return errors.Join(errs...)
}

// The CNI plugins' chains that every attachment shares, with the rules
// that jump to them: no plugin ever deletes them.
var sharedChains = []struct {
	table, chain string
	jumps        [][]string // rules in built-in chains that jump to it
}{
	{"nat", "CNI-HOSTPORT-DNAT", [][]string{
		{"PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
		{"OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"}}},
	{"nat", "CNI-HOSTPORT-MASQ", [][]string{
		{"POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"}}},
	{"nat", "CNI-HOSTPORT-SETMARK", nil},
	{"filter", "CNI-FORWARD", [][]string{
		{"FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules", "-j", "CNI-FORWARD"}}},
	{"filter", "CNI-ADMIN", nil},
}

func sharedCNIChain(name string) bool {
	for _, c := range sharedChains {
		if c.chain == name {
			return true
		}
	}
	return false
}

// cniChains lists the CNI chains of the nat and filter tables, as
// "table/chain".
func cniChains() map[string]bool {
	out := map[string]bool{}
	for _, table := range []string{"nat", "filter"} {
		b, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "-N" && strings.HasPrefix(f[1], "CNI-") {
				out[table+"/"+f[1]] = true
			}
		}
	}
	return out
}

// removeSharedCNIChains deletes the shared CNI chains of a table that
// were not there before (had), once no attachment's rule is left in them:
// rules in CNI-HOSTPORT-DNAT (nat) and CNI-FORWARD (filter, but for its
// jump to CNI-ADMIN) belong to attachments, maybe another run's.
func removeSharedCNIChains(had map[string]bool) error {
	var errs []error
	now := cniChains()
	for _, owner := range []struct{ table, chain, ignore string }{
		{"nat", "CNI-HOSTPORT-DNAT", ""},
		{"filter", "CNI-FORWARD", "-j CNI-ADMIN"},
	} {
		b, _ := exec.Command("iptables", "-w", "-t", owner.table, "-S", owner.chain).Output()
		inUse := false
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "-A ") && (owner.ignore == "" || !strings.Contains(l, owner.ignore)) {
				inUse = true
			}
		}
		if inUse {
			continue
		}
		var mine []string
		for _, c := range sharedChains {
			if c.table != owner.table || !now[c.table+"/"+c.chain] || had[c.table+"/"+c.chain] {
				continue
			}
			for _, j := range c.jumps {
				_ = exec.Command("iptables", append([]string{"-w", "-t", c.table, "-D"}, j...)...).Run()
			}
			mine = append(mine, c.chain)
		}
		for _, c := range mine {
			_ = exec.Command("iptables", "-w", "-t", owner.table, "-F", c).Run()
		}
		for _, c := range mine {
			if b, err := exec.Command("iptables", "-w", "-t", owner.table, "-X", c).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("iptables -t %s -X %s: %v: %s", owner.table, c, err, b))
			}
		}
	}
	return errors.Join(errs...)
}
