package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-project/berth/agent/ambassador"
	"github.com/berth-project/berth/api"
)

// The ambassador benchmark: a 1 KiB request answered by a 1 KiB response
// over loopback, straight to an echo backend, through a bare user-space
// relay, and through an ambassador.Proxy to the same backend, in one run.
// Two topologies: everything in this process, and the way a node runs it
// — the client (this process), the proxy (agentd) and the backend each in
// its own process. It needs neither root nor containerd, so it runs first,
// and alone with -ambassador-only.
var (
	ambOnly     = flag.Bool("ambassador-only", false, "run only the ambassador benchmark (needs neither root nor containerd)")
	ambRequests = flag.Int("ambassador-requests", 20000, "requests per row of the ambassador benchmark")
	ambRounds   = flag.Int("ambassador-rounds", 5, "rounds of the ambassador benchmark; the rows alternate within each")
)

const (
	ambMsg = 1 << 10 // request and response size
	// ambRoleEnv makes this binary a server of the benchmark in a child
	// process: "echo", "relay" or "proxy" (to ambTargetEnv).
	ambRoleEnv   = "BERTH_BENCH_AMB_ROLE"
	ambTargetEnv = "BERTH_BENCH_AMB_TARGET"
)

// ambassadorFirst runs the ambassador benchmark before the others, and
// exits the program after it with -ambassador-only. In a child process
// started by the benchmark it serves its role instead and never returns.
func ambassadorFirst() {
	if role := os.Getenv(ambRoleEnv); role != "" {
		if err := ambChild(role, os.Getenv(ambTargetEnv)); err != nil {
			fmt.Fprintf(os.Stderr, "bench: ambassador %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *ambOnly {
		fmt.Printf("machine: %s, %d cores, %s\n", hostInfo(), runtime.NumCPU(), runtime.Version())
	}
	if err := measureAmbassador(*ambRequests, *ambRounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench: ambassador:", err)
		os.Exit(1)
	}
	if *ambOnly {
		os.Exit(0)
	}
}

// ambResult is one row's samples over every round.
type ambResult struct {
	lat      []time.Duration
	requests int
	elapsed  time.Duration
	cpu      time.Duration // of every process involved, while the requests ran
}

func (r *ambResult) add(o ambResult) {
	r.lat = append(r.lat, o.lat...)
	r.requests += o.requests
	r.elapsed += o.elapsed
	r.cpu += o.cpu
}

func (r ambResult) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// ambServer is an echo backend, a relay or a proxy of the benchmark, in
// this process (pid 0) or in a child.
type ambServer struct {
	addr  string
	pid   int
	close func() error
}

// ambTopology is the three servers of one topology.
type ambTopology struct {
	name               string
	echo, relay, proxy *ambServer
}

func (t *ambTopology) pids() []int {
	var out []int
	for _, s := range []*ambServer{t.echo, t.relay, t.proxy} {
		if s != nil && s.pid != 0 {
			out = append(out, s.pid)
		}
	}
	return out
}

func (t *ambTopology) close() error {
	var errs []error
	for _, s := range []*ambServer{t.proxy, t.relay, t.echo} {
		if s != nil {
			errs = append(errs, s.close())
		}
	}
	return errors.Join(errs...)
}

func ambStartTopology(name string, separate bool) (t *ambTopology, retErr error) {
	t = &ambTopology{name: name}
	defer func() {
		if retErr != nil {
			_ = t.close()
		}
	}()
	start := ambServe
	if separate {
		start = ambSpawn
	}
	var err error
	if t.echo, err = start("echo", ""); err != nil {
		return t, err
	}
	if t.relay, err = start("relay", t.echo.addr); err != nil {
		return t, err
	}
	if t.proxy, err = start("proxy", t.echo.addr); err != nil {
		return t, err
	}
	return t, nil
}

func measureAmbassador(requests, rounds int) (retErr error) {
	var tops []*ambTopology
	defer func() {
		for _, t := range tops {
			if err := t.close(); err != nil && retErr == nil {
				retErr = err
			}
		}
	}()
	for _, sep := range []bool{false, true} {
		name := "client, proxy and echo backend in one process"
		if sep {
			name = "client, proxy and echo backend in three processes, as on a node (app, agentd, backend)"
		}
		t, err := ambStartTopology(name, sep)
		if err != nil {
			return err
		}
		tops = append(tops, t)
	}

	type row struct {
		top   *ambTopology
		name  string
		addr  string
		conns int
	}
	var rows []row
	for _, t := range tops {
		for _, conns := range []int{1, 16} {
			what := fmt.Sprintf("%d connection", conns)
			if conns > 1 {
				what += "s"
			}
			rows = append(rows,
				row{t, what + ", direct", t.echo.addr, conns},
				row{t, what + ", bare relay", t.relay.addr, conns},
				row{t, what + ", through the ambassador", t.proxy.addr, conns})
		}
	}
	results := make([]ambResult, len(rows))
	// Warm up every path (connection setup, goroutine stacks, page faults).
	for _, r := range rows {
		if _, err := ambLoad(r.addr, r.conns, max(requests/10, 100), r.top.pids()); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	for range rounds {
		for i, r := range rows {
			res, err := ambLoad(r.addr, r.conns, requests/rounds, r.top.pids())
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			results[i].add(res)
		}
	}

	fmt.Printf("\nambassador: %d B request → %d B response over loopback, %d requests per row in %d rounds, GOMAXPROCS %d, TCP_NODELAY %s\n",
		ambMsg, ambMsg, requests/rounds*rounds, rounds, runtime.GOMAXPROCS(0), ambNoDelay(tops[0].proxy.addr))
	fmt.Printf("  %-44s %9s %9s %9s %10s %9s\n", "", "p50", "p90", "p99", "req/s", "CPU/req")
	var top *ambTopology
	for i, r := range rows {
		if r.top != top {
			top = r.top
			fmt.Printf("  %s:\n", top.name)
		}
		res := results[i]
		fmt.Printf("    %-42s %9s %9s %9s %10.0f %9s\n", r.name, ambMicros(pct(res.lat, 50)), ambMicros(pct(res.lat, 90)),
			ambMicros(pct(res.lat, 99)), res.rate(), ambMicros(res.cpu/time.Duration(res.requests)))
	}
	fmt.Printf("  (CPU/req: user+system CPU of the client, the backend and the relay or proxy together, per request.\n" +
		"   Any user-space relay doubles the hops of a round trip — two more reads, writes and wakeups — so compare the\n" +
		"   ambassador with the bare relay for its own cost, and with direct for the cost of relaying at all.)\n")
	for i := 0; i < len(rows); i += 3 {
		d, relay, amb := results[i], results[i+1], results[i+2]
		if i%6 == 0 {
			fmt.Printf("  %s:\n", rows[i].top.name)
		}
		fmt.Printf("    %-15s proxied/direct p50 %.3f (target ≤ 1.10), p99 %.3f, throughput %.3f; added p50 %s; ambassador/bare relay p50 %.3f\n",
			strings.TrimSuffix(rows[i].name, ", direct"), ratio(amb.lat, d.lat, 50), ratio(amb.lat, d.lat, 99), amb.rate()/d.rate(),
			ambMicros(pct(amb.lat, 50)-pct(d.lat, 50)), ratio(amb.lat, relay.lat, 50))
	}
	return nil
}

// ambServe starts a server of role in this process.
func ambServe(role, target string) (*ambServer, error) {
	switch role {
	case "echo":
		ln, err := ambEcho()
		if err != nil {
			return nil, err
		}
		return &ambServer{addr: ln.Addr().String(), close: ln.Close}, nil
	case "relay":
		ln, err := ambRelay(target)
		if err != nil {
			return nil, err
		}
		return &ambServer{addr: ln.Addr().String(), close: ln.Close}, nil
	case "proxy":
		return ambProxy(target)
	}
	return nil, fmt.Errorf("unknown role %q", role)
}

// ambProxy serves an ambassador with target as the only backend. Closing
// it checks that no connection failed.
func ambProxy(target string) (*ambServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p, err := ambassador.New(ambassador.Config{
		Spec: api.AmbassadorSpec{Listen: ln.Addr().String(), Service: "echo", Balance: api.BalanceRoundRobin},
		Log:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	p.SetBackends("echo", []ambassador.Backend{{ID: "echo/0", Addr: target, Ready: true}})
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	return &ambServer{addr: ln.Addr().String(), close: func() error {
		p.Close()
		if err := <-served; err != nil {
			return err
		}
		if st := p.Stats(); st.Dropped != 0 || len(st.Backends) != 1 || st.Backends[0].Failures != 0 {
			return fmt.Errorf("proxy stats %+v: want no drop and no failure", st)
		}
		return nil
	}}, nil
}

// ambSpawn starts a server of role in a child process: this binary again,
// with ambRoleEnv set. The child prints its address, and ends when its
// stdin closes, so it cannot outlive the benchmark.
func ambSpawn(role, target string) (*ambServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), ambRoleEnv+"="+role, ambTargetEnv+"="+target)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() error {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s process: %w", role, err)
		}
		return nil
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = stop()
		return nil, fmt.Errorf("%s process: no address: %w", role, err)
	}
	return &ambServer{addr: strings.TrimSpace(line), pid: cmd.Process.Pid, close: stop}, nil
}

// ambChild is the main of a child process: serve role, print the address,
// and end when stdin closes.
func ambChild(role, target string) error {
	s, err := ambServe(role, target)
	if err != nil {
		return err
	}
	fmt.Println(s.addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return s.close()
}

// ambEcho serves a backend that answers every ambMsg bytes it reads
// with ambMsg bytes.
func ambEcho() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ambEchoOn(ln)
	return ln, nil
}

// ambEchoOn serves the echo backend on ln until it is closed.
func ambEchoOn(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, ambMsg)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// ambRelay serves the least a user-space TCP relay can do: accept, dial
// target, copy both ways with read(2)/write(2) on one goroutine per
// direction. It is the floor the ambassador is measured against: what the
// ambassador costs beyond it is its own; what the relay costs beyond
// direct is the price of any relay in user space.
func ambRelay(target string) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	type readerOnly struct{ io.Reader }
	type writerOnly struct{ io.Writer }
	half := func(dst, src net.Conn) {
		_, _ = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, make([]byte, 16<<10))
		dst.Close()
		src.Close()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go half(b, c)
			go half(c, b)
		}
	}()
	return ln, nil
}

// ambLoad opens conns persistent connections to addr and sends requests
// in all, spread over them, each waiting for its response; it returns
// every request's latency, the wall time, and the CPU time of this
// process and of pids meanwhile.
func ambLoad(addr string, conns, requests int, pids []int) (ambResult, error) {
	return ambLoadDial(func() (net.Conn, error) { return net.Dial("tcp", addr) }, conns, requests, pids)
}

// ambLoadDial is ambLoad with the connections made by dial.
func ambLoadDial(dial func() (net.Conn, error), conns, requests int, pids []int) (ambResult, error) {
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := dial()
		if err != nil {
			return ambResult{}, err
		}
		defer c.Close()
		cs[i] = c
	}
	// One round trip each before the clock starts: through the proxy,
	// the backend connection is made on accept.
	req := make([]byte, ambMsg)
	for i := range req {
		req[i] = byte(i)
	}
	for _, c := range cs {
		if err := ambRoundTrip(c, req, make([]byte, ambMsg)); err != nil {
			return ambResult{}, err
		}
	}
	lats := make([][]time.Duration, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	cpu0 := ambCPU(pids)
	start := time.Now()
	for i, c := range cs {
		n := requests / conns
		if i < requests%conns {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := make([]byte, ambMsg)
			lat := make([]time.Duration, 0, n)
			for range n {
				t0 := time.Now()
				if err := ambRoundTrip(c, req, resp); err != nil {
					errs[i] = err
					return
				}
				lat = append(lat, time.Since(t0))
			}
			lats[i] = lat
		}()
	}
	wg.Wait()
	r := ambResult{elapsed: time.Since(start), cpu: ambCPU(pids) - cpu0}
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
		r.requests += len(l)
	}
	return r, nil
}

func ambRoundTrip(c net.Conn, req, resp []byte) error {
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, resp); err != nil {
		return err
	}
	if resp[ambMsg-1] != req[ambMsg-1] {
		return fmt.Errorf("wrong response")
	}
	return nil
}

// ambCPU is the CPU time used so far by this process (getrusage) and by
// pids (the run time of each of their threads in /proc/PID/task/*/schedstat,
// in nanoseconds: the 10 ms ticks of /proc/PID/stat are too coarse here).
func ambCPU(pids []int) time.Duration {
	var total time.Duration
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, pid := range pids {
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if fields := strings.Fields(string(data)); len(fields) > 0 {
				ns, _ := strconv.ParseInt(fields[0], 10, 64)
				total += time.Duration(ns)
			}
		}
	}
	return total
}

// ambNoDelay reports TCP_NODELAY on a connection to addr, which the net
// package sets on every TCP connection (clients, backend and the proxy's
// own): Nagle's algorithm plays no part in these numbers.
func ambNoDelay(addr string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "unknown"
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return "unknown"
	}
	v := -1
	_ = rc.Control(func(fd uintptr) { v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY) })
	switch v {
	case 0:
		return "off"
	case -1:
		return "unknown"
	}
	return "on"
}

func ambMicros(d time.Duration) string {
	return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
}

// The agent's ambassador end to end: a group "amb-client" whose
// [[ambassador]] on its 127.0.0.1:7000 goes to the group "amb-echo" on the
// node bridge, run by the bench's agentd in the client group's network
// namespace. The bench is the client (inside amb-client's namespace) and
// the echo backend (inside amb-echo's); it measures the same 1 KiB round
// trip straight to amb-echo's bridge address, through the ambassador
// (mode = "proxy", on 127.0.0.1:7000), and through a second ambassador of
// amb-client to the same service in mode = "nat" (on 127.0.0.1:7001: the
// DNAT rules agentd writes in amb-client's namespace, no process in
// between; no shard keys, no retries).

// agentAmbRows are the rows of the end-to-end measurement.
type agentAmbRows struct {
	conns               []int
	direct, proxed, nat []ambResult
}

// measureAgentAmbassador runs the end-to-end measurement through agentd.
func (b *bench) measureAgentAmbassador(ctx context.Context, requests, rounds int) (_ *agentAmbRows, retErr error) {
	const port = 7000
	group := func(name, extra string) api.ApplyFile {
		return api.ApplyFile{Name: name + ".toml", Content: fmt.Sprintf(`name = %q
grace_period = "100ms"
%s
[[container]]
name = "sleep"
image = "berth.local/busybox:latest"
command = ["sleep", "86400"]
`, name, extra)}
	}
	defer func() {
		for _, g := range []string{"amb-client", "amb-echo"} {
			if err := b.api.Delete(ctx, g, true); err != nil && retErr == nil {
				retErr = err
			}
		}
	}()
	if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{
		group("amb-echo", ""),
		group("amb-client", fmt.Sprintf("[[ambassador]]\nlisten = \"127.0.0.1:%d\"\nservice = \"amb-echo\"\n"+
			"[[ambassador]]\nlisten = \"127.0.0.1:%d\"\nservice = \"amb-echo\"\nport = %d\nmode = \"nat\"\n", port, port+1, port)),
	}}); err != nil {
		return nil, err
	}
	// Both running (they start in either order).
	var echo, client *api.GroupStatus
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if echo, err = b.api.Get(ctx, "amb-echo"); err != nil {
			return nil, err
		}
		if client, err = b.api.Get(ctx, "amb-client"); err != nil {
			return nil, err
		}
		if echo.State == api.GroupRunning && client.State == api.GroupRunning {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("amb-echo %s, amb-client %s after 30s; want both Running", echo.State, client.State)
		}
	}
	if echo.Network == nil || echo.Network.Address == "" {
		return nil, fmt.Errorf("amb-echo has no bridge address: %+v", echo.Network)
	}
	var ln net.Listener
	if err := inNetns(echo.NetNS, func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	}); err != nil {
		return nil, fmt.Errorf("echo in amb-echo's namespace: %w", err)
	}
	defer ln.Close()
	ambEchoOn(ln)
	dialIn := func(addr string) func() (net.Conn, error) {
		return func() (net.Conn, error) {
			var c net.Conn
			err := inNetns(client.NetNS, func() error {
				var err error
				c, err = net.DialTimeout("tcp", addr, 2*time.Second)
				return err
			})
			return c, err
		}
	}
	direct := dialIn(net.JoinHostPort(echo.Network.Address, strconv.Itoa(port)))
	proxied := dialIn(fmt.Sprintf("127.0.0.1:%d", port))
	nat := dialIn(fmt.Sprintf("127.0.0.1:%d", port+1))
	// The ambassadors have their endpoint once amb-echo is ready: wait
	// for a round trip through each.
	for _, amb := range []struct {
		what string
		dial func() (net.Conn, error)
	}{{"the ambassador", proxied}, {"the nat ambassador", nat}} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := ambLoadDial(amb.dial, 1, 1, nil)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("no round trip through %s within 10s: %w", amb.what, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	pids := []int{b.agent.Process.Pid}
	r := &agentAmbRows{conns: []int{1, 16}}
	r.direct, r.proxed, r.nat = make([]ambResult, len(r.conns)), make([]ambResult, len(r.conns)), make([]ambResult, len(r.conns))
	for _, conns := range r.conns { // warm up
		for _, d := range []func() (net.Conn, error){direct, proxied, nat} {
			if _, err := ambLoadDial(d, conns, max(requests/10, 100), pids); err != nil {
				return nil, err
			}
		}
	}
	for range rounds {
		for i, conns := range r.conns {
			for _, row := range []struct {
				what string
				dial func() (net.Conn, error)
				into []ambResult
			}{{"direct", direct, r.direct}, {"through the ambassador", proxied, r.proxed}, {"through the nat ambassador", nat, r.nat}} {
				res, err := ambLoadDial(row.dial, conns, requests/rounds, pids)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", row.what, err)
				}
				row.into[i].add(res)
			}
		}
	}
	return r, nil
}

func (r *agentAmbRows) print() {
	fmt.Printf("\nambassador in agentd, end to end: %d B → %d B, the client in group amb-client's network namespace, the echo backend in amb-echo's (node bridge)\n", ambMsg, ambMsg)
	fmt.Printf("  %-44s %9s %9s %9s %10s %9s\n", "", "p50", "p90", "p99", "req/s", "CPU/req")
	for i, conns := range r.conns {
		for _, row := range []struct {
			name string
			res  ambResult
		}{{fmt.Sprintf("%d conn, direct to amb-echo's address", conns), r.direct[i]}, {fmt.Sprintf("%d conn, 127.0.0.1 → agentd's ambassador", conns), r.proxed[i]},
			{fmt.Sprintf("%d conn, 127.0.0.1 → agentd's nat ambassador", conns), r.nat[i]}} {
			res := row.res
			fmt.Printf("    %-42s %9s %9s %9s %10.0f %9s\n", row.name, ambMicros(pct(res.lat, 50)), ambMicros(pct(res.lat, 90)),
				ambMicros(pct(res.lat, 99)), res.rate(), ambMicros(res.cpu/time.Duration(res.requests)))
		}
		fmt.Printf("    %d conn: proxied/direct p50 %.3f (target ≤ 1.10), p99 %.3f, throughput %.3f; added p50 %s\n", conns,
			ratio(r.proxed[i].lat, r.direct[i].lat, 50), ratio(r.proxed[i].lat, r.direct[i].lat, 99),
			r.proxed[i].rate()/r.direct[i].rate(), ambMicros(pct(r.proxed[i].lat, 50)-pct(r.direct[i].lat, 50)))
		fmt.Printf("    %d conn: nat/direct p50 %.3f (target ≤ 1.10), p99 %.3f, throughput %.3f; added p50 %s\n", conns,
			ratio(r.nat[i].lat, r.direct[i].lat, 50), ratio(r.nat[i].lat, r.direct[i].lat, 99),
			r.nat[i].rate()/r.direct[i].rate(), ambMicros(pct(r.nat[i].lat, 50)-pct(r.direct[i].lat, 50)))
	}
	fmt.Printf("  (CPU/req: the bench process, client and backend, plus agentd.)\n")
}
