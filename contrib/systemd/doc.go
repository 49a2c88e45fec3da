// Package systemd holds agentd's systemd unit, berth-agent.service, and
// the test that lints it: required directives and their values, known
// sections, keys given twice only where systemd appends, and — where
// systemd-analyze is installed — `systemd-analyze verify`.
//
// It owns the unit file only. The unit's counterpart in agentd, the
// sd_notify readiness, status and watchdog pings, is agent's notifier
// (agent/systemd.go); `make install` installs the unit.
//
// There is no Go API: run `go test ./contrib/systemd/` after editing the
// unit.
package systemd
