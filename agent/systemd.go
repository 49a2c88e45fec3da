package agent

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// statusEvery is how often notifier.Run refreshes the STATUS= line that
// `systemctl status berth-agent` shows.
const statusEvery = 5 * time.Second

// notifier speaks systemd's notification protocol (sd_notify(3)) for
// agentd, whose unit is Type=notify with WatchdogSec=
// (contrib/systemd/berth-agent.service): READY=1 once the agent serves,
// STATUS= lines for `systemctl status`, STOPPING=1 at shutdown, and the
// watchdog pings.
//
// Without NOTIFY_SOCKET (agentd not started by systemd, or by a unit that
// is not Type=notify) every method is a no-op and Run only waits for its
// context.
//
// The watchdog: when systemd asks for one (WATCHDOG_USEC, for this pid),
// Run sends WATCHDOG=1 every half of that interval, but only while the
// agent reports itself healthy. A stuck agent, whose main loops no longer
// make progress, therefore stops pinging, and WatchdogSec later systemd
// aborts it (SIGABRT: the Go runtime writes every goroutine's stack to the
// journal) and restarts it (Restart=always). With KillMode=process only
// agentd goes: the groups keep running and the new agent reattaches to
// them.
//
// The methods are safe for concurrent use. Sends are datagrams on a unix
// socket; a failed one is logged, never returned: systemd's view of the
// agent must not stop the agent.
type notifier struct {
	log *slog.Logger
	// enabled: NOTIFY_SOCKET is set.
	enabled bool
	// watchdog is WatchdogSec= for this process; 0 when off.
	watchdog time.Duration
	// statusEvery is how often Run refreshes STATUS=: the statusEvery
	// constant, shorter in tests.
	statusEvery time.Duration

	mu      sync.Mutex
	status  string // the last STATUS= sent
	failing bool   // the last send failed (logged once until one succeeds)
}

// newNotifier returns a notifier for the environment systemd gave this
// process: NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, read once here.
// It leaves them set (go-systemd's unsetEnvironment=false), so children
// such as a managed containerd inherit them; with NotifyAccess=main
// systemd ignores what those send.
func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{
		log:         log,
		enabled:     os.Getenv("NOTIFY_SOCKET") != "",
		statusEvery: statusEvery,
	}
	if !n.enabled {
		return n
	}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog: ignoring a bad WATCHDOG_USEC or WATCHDOG_PID; no watchdog pings", "err", err)
		wd = 0
	}
	n.watchdog = wd
	log.Debug("systemd notifications on", "socket", os.Getenv("NOTIFY_SOCKET"), "watchdog", wd)
	return n
}

// Ready tells systemd that agentd has started (READY=1): a Type=notify
// unit counts as active from here, and the watchdog starts counting.
func (n *notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Stopping tells systemd that agentd is shutting down (STOPPING=1).
func (n *notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

// Status sets the one-line status `systemctl status` shows (STATUS=s). It
// sends only when s differs from what was last sent. Newlines become
// spaces: each line of a notification is an assignment of its own.
func (n *notifier) Status(s string) {
	if !n.enabled {
		return
	}
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	n.mu.Lock()
	defer n.mu.Unlock()
	if s == n.status {
		return
	}
	if n.sendLocked("STATUS=" + s) {
		n.status = s
	}
}

// Run refreshes STATUS= from status every 5 s and, when systemd's watchdog
// is on, sends WATCHDOG=1 at half its interval whenever healthy returns
// true; both start at once. It returns nil when ctx ends. Without
// NOTIFY_SOCKET it calls neither function and only waits for ctx.
//
// status and healthy are called one at a time from Run's goroutine and
// must return promptly (read counters, hold a lock briefly). Either one
// hanging stops the pings just as healthy returning false does, so
// systemd restarts the stuck agent; Run returns only once the call has
// returned.
func (n *notifier) Run(ctx context.Context, status func() string, healthy func() bool) error {
	if !n.enabled {
		<-ctx.Done()
		return nil
	}
	wasHealthy := true
	ping := func() {
		ok := healthy()
		switch {
		case ok && !wasHealthy:
			n.log.Info("agent healthy again: systemd watchdog pings resume")
		case !ok && wasHealthy:
			n.log.Error("agent unhealthy: withholding the systemd watchdog ping; systemd restarts agentd if this lasts the unit's WatchdogSec",
				"watchdog", n.watchdog)
		}
		wasHealthy = ok
		if ok {
			n.send(daemon.SdNotifyWatchdog)
		}
	}

	var pings <-chan time.Time
	if n.watchdog > 0 {
		t := time.NewTicker(n.watchdog / 2)
		defer t.Stop()
		pings = t.C
		ping()
	}
	refresh := time.NewTicker(n.statusEvery)
	defer refresh.Stop()
	n.Status(status())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-pings:
			ping()
		case <-refresh.C:
			n.Status(status())
		}
	}
}

func (n *notifier) send(state string) {
	if !n.enabled {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked(state)
}

// sendLocked sends one notification and reports whether it went out.
// Failures are logged once until a send succeeds again.
func (n *notifier) sendLocked(state string) bool {
	sent, err := daemon.SdNotify(false, state)
	switch {
	case err != nil:
		if !n.failing {
			n.log.Warn("systemd notification failed", "socket", os.Getenv("NOTIFY_SOCKET"),
				"state", strings.SplitN(state, "=", 2)[0], "err", err)
		}
		n.failing = true
		return false
	case n.failing:
		n.log.Info("systemd notifications work again")
		n.failing = false
	}
	return sent
}
