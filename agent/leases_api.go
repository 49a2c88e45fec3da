package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
)

// The lease routes of the downward API (api/coord.go lists them) and the
// agent's side of leaseManager: the groups it reads and restarts.

// leases returns the agent's lease manager, made at the first call.
func (a *Agent) leaseMgr() *leaseManager {
	a.leasesOnce.Do(func() {
		a.leases = newLeaseManager(a.cfg.NodeName, a.log.With("component", "leases"), a.cl.store, a.propose,
			agentLeaseGroups{a}, a.events)
	})
	return a.leases
}

// runLeases runs the lease manager until ctx ends.
func (a *Agent) runLeases(ctx context.Context) error { return a.leaseMgr().Run(ctx) }

// leaseRoutes registers the lease routes on c's downward socket.
func (a *Agent) leaseRoutes(route routeFunc, c caller) {
	route("GET "+api.PathLeases, a.handleLeases(c))
	route("GET "+api.PathLeases+"/{name}", a.handleLease(c))
	route("POST "+api.PathLeases+"/{name}/campaign", a.handleCampaign(c))
	route("DELETE "+api.PathLeases+"/{name}", a.handleResign(c))
	route("GET /{$}", a.handleElector(c))
}

// leaseCallerOf says who c is for leases, and its spec.
func (a *Agent) leaseCallerOf(c caller) (leaseCaller, *api.GroupSpec, error) {
	id, err := a.identify(c)
	if err != nil {
		return leaseCaller{}, nil, err
	}
	a.mu.Lock()
	var spec *api.GroupSpec
	if g, ok := a.groups[c.name]; ok {
		spec = g.Spec
	}
	a.mu.Unlock()
	return leaseCaller{local: c.name, group: id.Group, allocation: id.Allocation,
		holder: defaultHolder(c.name, id.Allocation, a.cfg.NodeName)}, spec, nil
}

// leaseRequest is what every lease route starts with: the caller (with
// its sub-holder, from ?holder= or the body), the lease's spec and key.
func (a *Agent) leaseRequest(c caller, r *http.Request, sub string) (leaseCaller, api.LeaseSpec, string, error) {
	name := r.PathValue("name")
	if err := checkLeaseName(name); err != nil {
		return leaseCaller{}, api.LeaseSpec{}, "", err
	}
	a.leaseMgr().waitRecovered(r.Context())
	lc, spec, err := a.leaseCallerOf(c)
	if err != nil {
		return leaseCaller{}, api.LeaseSpec{}, "", err
	}
	if sub == "" {
		sub = r.URL.Query().Get("holder")
	}
	if lc, err = lc.withSubHolder(sub); err != nil {
		return leaseCaller{}, api.LeaseSpec{}, "", err
	}
	ls := leaseSpec(spec, name)
	return lc, ls, lc.leaseKey(ls), nil
}

// handleLeases serves GET /v1/leases: the leases of the caller's group
// (its own and the shared ones it declares) that someone holds.
func (a *Agent) handleLeases(c caller) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		lc, spec, err := a.leaseCallerOf(c)
		if err != nil {
			writeError(w, err)
			return
		}
		a.leaseMgr().waitRecovered(r.Context())
		if lc, err = lc.withSubHolder(r.URL.Query().Get("holder")); err != nil {
			writeError(w, err)
			return
		}
		shared := map[string]bool{}
		if spec != nil {
			for _, l := range spec.Leases {
				if l.Shared {
					shared[l.Name] = true
				}
			}
		}
		m := a.leaseMgr()
		out := []api.Lease{}
		for _, l := range a.cl.store.Leases() {
			if (l.Shared() && shared[l.Name()]) || (!l.Shared() && strings.HasPrefix(l.Key, lc.group+"/")) {
				out = append(out, m.view(l.Key, l.Name(), l.Shared(), lc.holder))
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleLease serves GET /v1/leases/{name}[?wait=DUR&token=N]: who holds
// the lease. With wait it answers when the token differs from N (a new
// holder, or none: token 0), when a caller that holds token N stops
// holding it, or when wait has passed.
func (a *Agent) handleLease(c caller) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		lc, ls, key, err := a.leaseRequest(c, r, "")
		if err != nil {
			writeError(w, err)
			return
		}
		m := a.leaseMgr()
		q := r.URL.Query()
		if q.Get("wait") == "" {
			writeJSON(w, http.StatusOK, m.view(key, ls.Name, ls.Shared, lc.holder))
			return
		}
		wait, err := parseWait(q.Get("wait"), maxLeaseWait)
		if err != nil {
			writeError(w, err)
			return
		}
		var token uint64
		if s := q.Get("token"); s != "" {
			if token, err = strconv.ParseUint(s, 10, 64); err != nil {
				writeError(w, fmt.Errorf("token %q is not a number (pass the token of the last answer; 0 when nobody held the lease): %w", s, api.ErrInvalid))
				return
			}
		}
		// The caller held token N if the state names it with N: then it
		// is told as soon as it stops holding it.
		cur, ok := a.cl.store.Lease(key)
		held := ok && token != 0 && cur.Holder == lc.holder && cur.Token == token
		writeJSON(w, http.StatusOK, m.waitChange(r.Context(), key, ls.Name, ls.Shared, lc.holder, token, held, wait))
	}
}

// handleCampaign serves POST /v1/leases/{name}/campaign: it answers the
// lease (held = true) once granted, or 409 naming the holder when the
// timeout (body or ?timeout=, default 30s) passes first.
func (a *Agent) handleCampaign(c caller) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.CampaignRequest
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
		if err == nil && len(strings.TrimSpace(string(body))) > 0 {
			dec := json.NewDecoder(strings.NewReader(string(body)))
			dec.DisallowUnknownFields()
			err = dec.Decode(&req)
		}
		if err != nil {
			writeError(w, fmt.Errorf(`campaign: bad request body: %v (want {"timeout": "10s", "holder": "..."}, both optional): %w`, err, api.ErrInvalid))
			return
		}
		timeout := req.Timeout.D()
		if s := r.URL.Query().Get("timeout"); s != "" {
			if timeout, err = parseWait(s, maxCampaignTimeout); err != nil {
				writeError(w, err)
				return
			}
		}
		if timeout <= 0 {
			timeout = defaultCampaignTimeout
		}
		if timeout > maxCampaignTimeout {
			writeError(w, fmt.Errorf("campaign timeout %s is longer than the maximum of %s: campaign again instead: %w", timeout, maxCampaignTimeout, api.ErrInvalid))
			return
		}
		lc, ls, key, err := a.leaseRequest(c, r, req.Holder)
		if err != nil {
			writeError(w, err)
			return
		}
		m := a.leaseMgr()
		if _, err := m.campaign(r.Context(), lc, ls, timeout); err != nil {
			if r.Context().Err() != nil {
				return // the caller went away
			}
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, m.view(key, ls.Name, ls.Shared, lc.holder))
	}
}

// handleResign serves DELETE /v1/leases/{name}: the holder gives the
// lease up; 409 when the caller does not hold it.
func (a *Agent) handleResign(c caller) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		lc, ls, key, err := a.leaseRequest(c, r, "")
		if err != nil {
			writeError(w, err)
			return
		}
		m := a.leaseMgr()
		held, err := m.resign(r.Context(), lc, key)
		if err != nil {
			writeError(w, err)
			return
		}
		if !held {
			cur := m.view(key, ls.Name, ls.Shared, lc.holder)
			who := "nobody holds it"
			if cur.Holder != "" {
				who = fmt.Sprintf("it is held by %s on node %s (token %d)", cur.Holder, cur.Node, cur.Token)
			}
			writeError(w, fmt.Errorf("lease %s: %s does not hold it (%s): only the holder may resign: %w", key, lc.holder, who, api.ErrConflict))
			return
		}
		writeJSON(w, http.StatusOK, m.view(key, ls.Name, ls.Shared, lc.holder))
	}
}

// handleElector serves GET / like the contrib leader-elector sidecar of
// the paper: {"name": "<holder>"}. As with the sidecar, asking makes the
// caller a candidate: the agent campaigns for it (as its default holder,
// the allocation ID, which is its containers' hostname) for as long as the
// group runs. The election is ?election=NAME, else the group's first
// [[lease]], else "leader". The name is empty until someone is elected.
func (a *Agent) handleElector(c caller) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		lc, spec, err := a.leaseCallerOf(c)
		if err != nil {
			writeError(w, err)
			return
		}
		name := r.URL.Query().Get("election")
		if name == "" {
			name = "leader"
			if spec != nil && len(spec.Leases) > 0 {
				name = spec.Leases[0].Name
			}
		}
		if err := checkLeaseName(name); err != nil {
			writeError(w, err)
			return
		}
		ls := leaseSpec(spec, name)
		m := a.leaseMgr()
		m.waitRecovered(r.Context())
		m.elect(lc, ls)
		v := m.view(lc.leaseKey(ls), ls.Name, ls.Shared, lc.holder)
		writeJSON(w, http.StatusOK, api.ElectorAnswer{Name: v.Holder})
	}
}

// elect campaigns for c in the background until its group is gone: the
// candidacy of the leader-elector endpoint. One per lease and holder.
func (m *leaseManager) elect(c leaseCaller, ls api.LeaseSpec) {
	id := c.leaseKey(ls) + " " + c.holder
	m.mu.Lock()
	if m.electors[id] {
		m.mu.Unlock()
		return
	}
	m.electors[id] = true
	m.mu.Unlock()
	go func() {
		defer func() {
			m.mu.Lock()
			delete(m.electors, id)
			m.mu.Unlock()
		}()
		<-m.started
		for m.ctx.Err() == nil {
			if _, state := m.groups.holder(c.local); state == holderGone {
				return
			}
			start := time.Now()
			l, err := m.campaign(m.ctx, c, ls, time.Minute)
			if err != nil {
				if time.Since(start) < time.Second {
					select { // an immediate refusal: do not spin
					case <-m.ctx.Done():
					case <-time.After(time.Second):
					}
				}
				continue
			}
			m.mu.Lock()
			h := m.holds[l.Key]
			m.mu.Unlock()
			if h == nil || h.token != l.Token {
				continue
			}
			select {
			case <-h.done:
			case <-m.ctx.Done():
			}
		}
	}()
}

// parseWait reads a duration query parameter, "30s" or "1m".
func parseWait(s string, most time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration (e.g. 30s): %w", s, api.ErrInvalid)
	case d < 0:
		return 0, fmt.Errorf("duration %s is negative: %w", s, api.ErrInvalid)
	case d > most:
		return 0, fmt.Errorf("duration %s is longer than the maximum of %s: %w", s, most, api.ErrInvalid)
	}
	return d, nil
}

// agentLeaseGroups is leaseGroups over the agent's groups.
type agentLeaseGroups struct{ a *Agent }

func (g agentLeaseGroups) holder(name string) (*api.GroupSpec, holderState) {
	a := g.a
	a.mu.Lock()
	e, ok := a.groups[name]
	var spec *api.GroupSpec
	stopped := false
	if ok {
		spec, stopped = e.Spec, e.Stopped
	}
	a.mu.Unlock()
	if !ok || stopped {
		return spec, holderGone
	}
	st, ok := a.sup.Status(name)
	if !ok {
		return spec, holderUnknown
	}
	switch st.State {
	case api.GroupRunning:
		if st.Ready {
			return spec, holderReady
		}
		return spec, holderNotReady
	case api.GroupStarting, api.GroupBackOff:
		return spec, holderNotReady
	case "", api.GroupPending:
		return spec, holderUnknown
	}
	return spec, holderGone // stopping, stopped, failed, evicted, deleting
}

// stopped reports whether no container of the group runs.
func (g agentLeaseGroups) stopped(name string) bool {
	st, ok := g.a.sup.Status(name)
	return !ok || st.Running() == 0
}

// restart stops the group and starts it again (on_lose = "restart"), with
// its full stop sequence, keeping its admission: only its containers go.
// The stop is handed to the supervisor without being recorded as a stop
// request, so that an agent that dies meanwhile starts the group again.
// stopped is called once the group's containers are gone (or after the
// grace period and more), before they start again.
func (g agentLeaseGroups) restart(ctx context.Context, name, why string, stopped func()) {
	a := g.a
	stopped = sync.OnceFunc(stopped)
	defer stopped() // at the latest
	running := func(s api.GroupState) bool {
		return s == api.GroupRunning || s == api.GroupStarting || s == api.GroupBackOff
	}
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		a.mu.Lock()
		e, ok := a.groups[name]
		if !ok || e.Stopped {
			a.mu.Unlock()
			return
		}
		e.Stopped = true
		a.pushLocked(name)
		e.Stopped = false
		grace := e.Spec.GracePeriod.D()
		a.mu.Unlock()
		if attempt == 0 {
			a.events.Publish(api.Event{Time: time.Now(), Type: api.EventWarning, Group: name, Reason: "LeaseRestart", Message: why})
		}
		// The runner starts stopping at once, unless something pushed the
		// group's state again before it saw the stop: then try again.
		began := waitState(ctx, a, name, 2*time.Second, func(st api.GroupStatus) bool { return !running(st.State) })
		if began {
			waitState(ctx, a, name, grace+30*time.Second, func(st api.GroupStatus) bool { return st.Running() == 0 })
			stopped()
		}
		a.mu.Lock()
		if e2, ok := a.groups[name]; ok && e2 == e && !e.Stopped {
			a.sup.Retry(name)
			a.pushLocked(name)
		}
		a.mu.Unlock()
		if began {
			return
		}
	}
}

// waitState waits until the group's state satisfies ok, timeout passes or
// ctx ends, and reports whether it did.
func waitState(ctx context.Context, a *Agent, name string, timeout time.Duration, ok func(api.GroupStatus) bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		st, found := a.sup.Status(name)
		if !found || ok(st) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}
