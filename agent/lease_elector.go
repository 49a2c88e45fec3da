package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// The contrib leader-elector sidecar of the paper answered on
// http://localhost:4040/ inside the pod. A [[lease]] with elector_port
// gives an app written against it the same answer at the same place: the
// agent listens on 127.0.0.1:elector_port inside the group's network
// namespace (no container is added) and serves the downward API's
// leader-elector route (handleElector) for that lease. Listeners come and
// go with the sandbox, like the ambassadors'.

// electorPorts is the SandboxObserver that keeps each group's
// leader-elector listeners.
type electorPorts struct {
	a   *Agent
	log *slog.Logger

	mu     sync.Mutex
	groups map[string]map[int]*electorListener // group → port → listener
}

// electorListener serves one lease's elector answer on one port.
type electorListener struct {
	lease string
	srv   *http.Server
}

var _ supervisor.SandboxObserver = (*electorPorts)(nil)

// electors returns the agent's elector listeners, made at the first call.
func (a *Agent) electors() *electorPorts {
	if a.electorPorts == nil {
		a.electorPorts = &electorPorts{a: a, log: a.log.With("component", "lease-elector"), groups: map[string]map[int]*electorListener{}}
	}
	return a.electorPorts
}

// SandboxReady opens the listeners spec asks for and closes those it no
// longer has (a spec change).
func (e *electorPorts) SandboxReady(spec *api.GroupSpec, sb *supervisor.Sandbox) {
	want := map[int]string{}
	if spec.EffectiveNetwork() != api.NetworkHost {
		for _, l := range spec.Leases {
			if l.ElectorPort != 0 {
				want[l.ElectorPort] = l.Name
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	have := e.groups[sb.Group]
	for port, l := range have {
		if want[port] != l.lease {
			_ = l.srv.Close()
			delete(have, port)
		}
	}
	for port, lease := range want {
		if _, ok := have[port]; ok {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := supervisor.ListenInNetns(sb.NetNSPath, "tcp", addr)
		if err != nil {
			e.event(sb.Group, api.EventWarning, "ElectorFailed",
				fmt.Sprintf("lease %s: cannot listen on %s in the group's network namespace: %v", lease, addr, err))
			continue
		}
		srv := &http.Server{Handler: e.handler(sb.Group, lease), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.event(sb.Group, api.EventWarning, "ElectorFailed", fmt.Sprintf("lease %s: %s: %v", lease, addr, err))
			}
		}()
		if have == nil {
			have = map[int]*electorListener{}
			e.groups[sb.Group] = have
		}
		have[port] = &electorListener{lease: lease, srv: srv}
		e.event(sb.Group, api.EventNormal, "ElectorListening",
			fmt.Sprintf("lease %s: the leader-elector answer on http://%s/ in the group's network namespace", lease, addr))
	}
}

// handler answers GET / for lease, as the group's downward socket does
// for /?election=lease.
func (e *electorPorts) handler(group, lease string) http.Handler {
	elector := e.a.handleElector(caller{name: group})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/" {
			writeError(w, fmt.Errorf("%s %s: the leader-elector port answers GET / only: %w", r.Method, r.URL.Path, api.ErrNotFound))
			return
		}
		q := r.URL.Query()
		q.Set("election", lease)
		r.URL.RawQuery = q.Encode()
		elector(w, r)
	})
}

// SandboxGone closes the group's listeners.
func (e *electorPorts) SandboxGone(group string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.groups[group] {
		_ = l.srv.Close()
	}
	delete(e.groups, group)
}

// Run closes every listener when ctx ends: the agent stops. Running
// groups get theirs again when the agent is back.
func (e *electorPorts) Run(ctx context.Context) error {
	<-ctx.Done()
	e.mu.Lock()
	defer e.mu.Unlock()
	for g, ls := range e.groups {
		for _, l := range ls {
			_ = l.srv.Close()
		}
		delete(e.groups, g)
	}
	return nil
}

func (e *electorPorts) event(group, typ, reason, msg string) {
	if typ == api.EventWarning {
		e.log.Warn(msg, "group", group)
	}
	e.a.events.Publish(api.Event{Time: time.Now(), Type: typ, Group: group, Reason: reason, Message: msg})
}
