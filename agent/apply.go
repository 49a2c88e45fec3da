package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// Apply validates every file of req and, only if all are valid, makes
// them the desired state of their groups (persisted under the state dir,
// so they survive restarts). Nothing is applied when anything is wrong.
func (a *Agent) Apply(req api.ApplyRequest) ([]api.ApplyResult, error) {
	start := time.Now()
	defer func() { a.metrics.ObserveReconcile(time.Since(start)) }()
	if len(req.Files) == 0 {
		return nil, fmt.Errorf("apply: no files: %w", api.ErrInvalid)
	}
	var errs api.ErrorList
	specs := make([]*api.GroupSpec, 0, len(req.Files))
	first := map[string]string{}   // group → file that defines it
	content := map[string]string{} // group → file content
	for _, f := range req.Files {
		spec, err := api.Decode(f.Name, []byte(f.Content))
		if err != nil {
			var list api.ErrorList
			if errors.As(err, &list) {
				errs = append(errs, list...)
			} else {
				errs = append(errs, &api.FieldError{File: f.Name, Message: err.Error()})
			}
			continue
		}
		if err := a.checkNodeRules(spec); err != nil {
			errs = append(errs, &api.FieldError{File: f.Name, Group: spec.Name, Message: err.Error()})
			continue
		}
		if prev, dup := first[spec.Name]; dup {
			errs = append(errs, &api.FieldError{File: f.Name, Group: spec.Name,
				Message: fmt.Sprintf("group is also defined in %s; apply it once", prev)})
			continue
		}
		first[spec.Name] = f.Name
		content[spec.Name] = f.Content
		specs = append(specs, spec)
	}
	if len(errs) > 0 {
		return nil, errs
	}

	// Cluster groups go to Raft; a name is either local or cluster-wide.
	var clustered []*api.GroupSpec
	local := specs[:0:0]
	a.mu.Lock()
	for _, spec := range specs {
		isCluster := a.isClusterGroup(spec.Name)
		g, isLocal := a.groups[spec.Name]
		switch {
		case spec.Clustered() && isLocal:
			errs = append(errs, &api.FieldError{File: first[spec.Name], Group: spec.Name,
				Message: fmt.Sprintf("a local group of this node (%s) has this name; a cluster group needs a name of its own", g.Source)})
		case spec.Clustered():
			clustered = append(clustered, spec)
		case isCluster:
			errs = append(errs, &api.FieldError{File: first[spec.Name], Group: spec.Name, Field: "placement",
				Message: "a cluster group has this name; keep [placement] to update it, or delete it first (agentctl delete " + spec.Name + ")"})
		default:
			local = append(local, spec)
		}
	}
	a.mu.Unlock()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", errs, api.ErrConflict)
	}
	var res []api.ApplyResult
	if len(clustered) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := a.applyCluster(ctx, clustered, req.DryRun)
		if err != nil {
			return nil, err
		}
		res = r
	}
	specs = local

	a.mu.Lock()
	defer a.mu.Unlock()
	for _, spec := range specs {
		if g, ok := a.groups[spec.Name]; ok && g.Source != SourceAPI {
			errs = append(errs, &api.FieldError{File: first[spec.Name], Group: spec.Name,
				Message: fmt.Sprintf("group is defined by the file %s; edit that file instead", g.Source)})
		}
	}
	errs = append(errs, a.checkPortsLocked(specs, first, content)...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", errs, api.ErrConflict)
	}
	if req.DryRun {
		for _, spec := range specs {
			action, gen := api.ActionCreated, int64(1)
			if g, ok := a.groups[spec.Name]; ok {
				action, gen = api.ActionUpdated, g.Generation+1
				if g.Hash == specHash(spec) {
					action, gen = api.ActionUnchanged, g.Generation
				}
			}
			res = append(res, api.ApplyResult{Group: spec.Name, Action: action, Generation: gen})
		}
		return res, nil
	}
	// Persist every file before changing anything in memory, so a failed
	// write leaves the desired state as it was.
	for _, spec := range specs {
		if err := writeFileAtomic(a.appliedPath(spec.Name), []byte(content[spec.Name]), 0o600); err != nil {
			return nil, fmt.Errorf("persist group %q: %w", spec.Name, err)
		}
	}
	for _, spec := range specs {
		action, gen := a.upsertLocked(spec, SourceAPI)
		res = append(res, api.ApplyResult{Group: spec.Name, Action: action, Generation: gen})
		if action != api.ActionUnchanged {
			a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Group: spec.Name, Reason: "Applied",
				Message: fmt.Sprintf("%s, generation %d", action, gen)})
		}
	}
	if err := a.savePersistedLocked(); err != nil {
		a.log.Error("save agent state", "err", err)
	}
	for _, r := range res {
		if r.Action != api.ActionUnchanged {
			a.pushLocked(r.Group)
		}
	}
	a.admitLocked()
	return res, nil
}

// Delete removes a group applied through the API. Groups defined by a file
// are removed by removing the file.
func (a *Agent) Delete(name string) (<-chan struct{}, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, ok := a.groups[name]
	if a.isClusterGroup(name) && !ok {
		a.mu.Unlock()
		defer a.mu.Lock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return a.deleteCluster(ctx, name)
	}
	if ok && g.Source == api.SourceCluster {
		group, _, _ := strings.Cut(name, ".")
		return nil, fmt.Errorf("%q is an allocation of the cluster group %q: delete or scale the cluster group (agentctl delete %s, agentctl scale %s --replicas N): %w",
			name, group, group, group, api.ErrConflict)
	}
	if !ok {
		if _, running := a.sup.Status(name); !running {
			return nil, notFound(name)
		}
		return a.sup.Remove(name), nil
	}
	if g.Source != SourceAPI {
		return nil, fmt.Errorf("group %q is defined by the file %s; remove that file to delete it: %w", name, g.Source, api.ErrConflict)
	}
	if err := os.Remove(a.appliedPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("delete group %q: %w", name, err)
	}
	released := a.removeLocked(name)
	if err := a.savePersistedLocked(); err != nil {
		a.log.Error("save agent state", "err", err)
	}
	return released, nil
}

// removeLocked forgets a group and stops it. Its room is released before
// the returned channel closes, so a group applied right after finds it
// free. a.mu held.
func (a *Agent) removeLocked(name string) <-chan struct{} {
	if g, ok := a.groups[name]; ok && (g.adm.admitted || g.adm.evicting != nil) {
		a.releasing[name] = g.Spec.Request()
	}
	delete(a.groups, name)
	done, released := a.sup.Remove(name), make(chan struct{})
	go func() {
		<-done
		a.mu.Lock()
		delete(a.releasing, name)
		a.admitLocked()
		a.mu.Unlock()
		close(released)
	}()
	return released
}

// SetStopped stops (true) or starts (false) a group, keeping its
// definition. The flag survives agent restarts.
func (a *Agent) SetStopped(name string, stopped bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, ok := a.groups[name]
	if !ok {
		return notFound(name)
	}
	if g.Stopped != stopped {
		g.Stopped = stopped
		if stopped {
			g.adm = admission{} // a stopped group gives its room back
		} else {
			g.adm = admission{askedAt: time.Now()}
		}
		if err := a.savePersistedLocked(); err != nil {
			return fmt.Errorf("save agent state: %w", err)
		}
	}
	if !stopped {
		a.sup.Retry(name)
	}
	a.pushLocked(name)
	a.admitLocked()
	return nil
}

// retryImageWaiters wakes groups waiting in BackOff, e.g. for an image
// that was just imported.
func (a *Agent) retryImageWaiters() {
	for _, st := range a.sup.List() {
		if st.State == api.GroupBackOff && st.Reason == "ImageUnavailable" {
			a.sup.Retry(st.Name)
		}
	}
}

func sortStatuses(s []api.GroupStatus) {
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
}
