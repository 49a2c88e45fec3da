package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// listen opens the admin API's unix socket (mode 0660) and returns the
// server to run on it.
func (a *Agent) listen() (*http.Server, net.Listener, error) {
	if err := os.MkdirAll(dirOf(a.cfg.Socket), 0o755); err != nil {
		return nil, nil, err
	}
	if c, err := net.Dial("unix", a.cfg.Socket); err == nil {
		c.Close()
		return nil, nil, fmt.Errorf("another agentd serves %s: %w", a.cfg.Socket, api.ErrAlreadyExists)
	}
	_ = os.Remove(a.cfg.Socket)
	ln, err := net.Listen("unix", a.cfg.Socket)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(a.cfg.Socket, 0o660); err != nil {
		ln.Close()
		return nil, nil, err
	}
	if a.cfg.SocketGroup != "" {
		g, err := user.LookupGroup(a.cfg.SocketGroup)
		if err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("socket_group: %w", err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(a.cfg.Socket, -1, gid); err != nil {
			ln.Close()
			return nil, nil, err
		}
	}
	return &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}, ln, nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

// Handler returns the admin API (see api/routes.go).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	// route registers a handler with its request-duration metric.
	route := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, a.metrics.Instrument(pattern, h))
	}
	route("GET "+api.PathVersion, a.handleVersion)
	route("POST "+api.PathApply, a.handleApply)
	route("GET "+api.PathGroups, a.handleList)
	route("GET "+api.PathGroups+"/{name}", a.handleGet)
	route("DELETE "+api.PathGroups+"/{name}", a.handleDelete)
	route("POST "+api.PathGroups+"/{name}/stop", a.handleStop)
	route("POST "+api.PathGroups+"/{name}/start", a.handleStart)
	route("GET "+api.PathGroups+"/{name}/logs", a.handleLogs)
	route("GET "+api.PathEvents, a.handleEvents)
	route("GET "+api.PathNode, a.handleNode)
	route("GET "+api.PathTop, a.handleTop)
	route("GET "+api.PathEndpoints+"/{service}", a.handleEndpoints)
	route("POST "+api.PathNode+"/drain", a.handleDrain)
	route("POST "+api.PathNode+"/undrain", a.handleUndrain)
	route("GET "+api.PathImages, a.handleImages)
	route("POST "+api.PathImages+"/import", a.handleImport)
	route("POST "+api.PathImages+"/pull", a.handlePull)
	a.clusterRoutes(route)
	a.queueAdminRoutes(route)
	mux.Handle("GET /metrics", a.metrics.Handler())
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError converts an error to its HTTP status: the only place where
// error classes become status codes.
func writeError(w http.ResponseWriter, err error) {
	class, code := api.Class(err)
	body := api.ErrorBody{Error: err.Error(), Class: class}
	var list api.ErrorList
	if errors.As(err, &list) {
		body.Details = list.Details()
	}
	writeJSON(w, code, body)
}

func (a *Agent) handleVersion(w http.ResponseWriter, r *http.Request) {
	v := api.VersionInfo{Version: Version, GoVersion: runtime.Version(), Node: a.cfg.NodeName}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if cv, err := a.client.Version(ctx); err == nil {
		v.Containerd, v.ContainerdOK = cv.Version, true
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *Agent) handleApply(w http.ResponseWriter, r *http.Request) {
	var req api.ApplyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&req); err != nil {
		writeError(w, fmt.Errorf("apply: bad request body: %v: %w", err, api.ErrInvalid))
		return
	}
	res, err := a.Apply(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *Agent) handleList(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	names := make([]string, 0, len(a.groups))
	for n := range a.groups {
		names = append(names, n)
	}
	a.mu.Unlock()
	seen := map[string]bool{}
	out := []api.GroupStatus{}
	for _, st := range a.sup.List() {
		if full, ok := a.status(st.Name, false); ok {
			out = append(out, full)
			seen[st.Name] = true
		}
	}
	for _, n := range names {
		if !seen[n] {
			if st, ok := a.status(n, false); ok {
				out = append(out, st)
			}
		}
	}
	sortStatuses(out)
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	st, ok := a.status(name, true)
	if !ok {
		writeError(w, notFound(name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	usage := a.sup.ContainerUsage(ctx, name)
	for i := range st.Containers {
		if u, ok := usage[st.Containers[i].Name]; ok {
			cu := containerUsage(name, st.Containers[i].Name, u, supervisor.Usage{}, 0)
			st.Containers[i].Usage = &cu
		}
	}
	writeJSON(w, http.StatusOK, st)
}

func notFound(name string) error {
	return fmt.Errorf("group %q not found (agentctl get lists groups): %w", name, api.ErrNotFound)
}

func wantWait(r *http.Request) bool {
	v := r.URL.Query().Get("wait")
	return v == "1" || v == "true"
}

func (a *Agent) handleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	done, err := a.Delete(name)
	if err != nil {
		writeError(w, err)
		return
	}
	if wantWait(r) {
		select {
		case <-done:
		case <-r.Context().Done():
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"group": name, "action": "deleted"})
}

func (a *Agent) handleStop(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := a.SetStopped(name, true); err != nil {
		writeError(w, err)
		return
	}
	if wantWait(r) {
		if err := a.waitState(r.Context(), name, func(st api.GroupStatus) bool {
			return st.Running() == 0 && st.State != api.GroupStopping
		}); err != nil {
			writeError(w, err)
			return
		}
	}
	st, _ := a.status(name, false)
	writeJSON(w, http.StatusOK, st)
}

func (a *Agent) handleStart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := a.SetStopped(name, false); err != nil {
		writeError(w, err)
		return
	}
	st, _ := a.status(name, false)
	writeJSON(w, http.StatusOK, st)
}

// waitState polls a group's status until cond holds, the group is gone,
// or ctx ends.
func (a *Agent) waitState(ctx context.Context, name string, cond func(api.GroupStatus) bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st, ok := a.sup.Status(name)
		if !ok || cond(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (a *Agent) handleLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	q := r.URL.Query()
	a.mu.Lock()
	g, ok := a.groups[name]
	var containers []string
	if ok {
		for _, c := range g.Spec.Containers {
			containers = append(containers, c.Name)
		}
	}
	a.mu.Unlock()
	if !ok {
		writeError(w, notFound(name))
		return
	}
	if c := q.Get("container"); c != "" {
		if _, found := g.Spec.Container(c); !found {
			writeError(w, fmt.Errorf("group %q has no container %q: %w", name, c, api.ErrNotFound))
			return
		}
		containers = []string{c}
	}
	lq := supervisor.LogQuery{Tail: -1, Follow: q.Get("follow") == "1" || q.Get("follow") == "true"}
	if t := q.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil {
			writeError(w, fmt.Errorf("tail %q: want a number: %w", t, api.ErrInvalid))
			return
		}
		lq.Tail = n
	}
	if s := q.Get("since"); s != "" {
		since, err := parseSince(s, time.Now())
		if err != nil {
			writeError(w, err)
			return
		}
		lq.Since = since
	}
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	_ = supervisor.ReadLogs(r.Context(), a.logDir(), name, containers, lq, func(e api.LogEntry) error {
		if err := enc.Encode(e); err != nil {
			return err
		}
		if lq.Follow && flusher != nil {
			flusher.Flush()
		}
		return nil
	})
}

// parseSince accepts an RFC 3339 time or a duration back from now ("10m").
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("since %q: want a duration like 10m or an RFC 3339 time: %w", s, api.ErrInvalid)
}

func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	group := r.URL.Query().Get("group")
	follow := r.URL.Query().Get("follow")
	if follow != "1" && follow != "true" {
		writeJSON(w, http.StatusOK, append([]api.Event{}, a.events.History(group)...))
		return
	}
	hist, ch, cancel := a.events.Subscribe(group)
	defer cancel()
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	for _, ev := range hist {
		_ = enc.Encode(ev)
	}
	if flusher != nil {
		flusher.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if group != "" && ev.Group != group {
				continue
			}
			if enc.Encode(ev) != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

func (a *Agent) handleNode(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	ns := a.nodeStatusLocked()
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, ns)
}

func (a *Agent) handleDrain(w http.ResponseWriter, r *http.Request) {
	if err := a.Drain(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	a.handleNode(w, r)
}

func (a *Agent) handleUndrain(w http.ResponseWriter, r *http.Request) {
	if err := a.Undrain(); err != nil {
		writeError(w, err)
		return
	}
	a.handleNode(w, r)
}

// handleTop samples every running container twice, 250ms apart, for CPU
// rates.
func (a *Agent) handleTop(w http.ResponseWriter, r *http.Request) {
	const window = 250 * time.Millisecond
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	groups := a.sup.List()
	first := map[string]map[string]supervisor.Usage{}
	for _, g := range groups {
		first[g.Name] = a.sup.ContainerUsage(ctx, g.Name)
	}
	select {
	case <-time.After(window):
	case <-ctx.Done():
		writeError(w, ctx.Err())
		return
	}
	out := []api.ContainerUsage{}
	for _, g := range groups {
		for c, u := range a.sup.ContainerUsage(ctx, g.Name) {
			out = append(out, containerUsage(g.Name, c, u, first[g.Name][c], window))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Container < out[j].Container
	})
	writeJSON(w, http.StatusOK, out)
}

// containerUsage converts a sample, with the CPU rate against an earlier
// one when window is set.
func containerUsage(group, container string, u, before supervisor.Usage, window time.Duration) api.ContainerUsage {
	cu := api.ContainerUsage{Group: group, Container: container, CPUSeconds: float64(u.CPUNanos) / 1e9,
		Memory: api.ByteSize(u.MemoryBytes), MemoryLimit: api.ByteSize(u.MemoryLimit), Pids: int64(u.Pids)}
	if window > 0 && u.CPUNanos >= before.CPUNanos && before.CPUNanos > 0 {
		elapsed := u.At.Sub(before.At)
		if elapsed <= 0 {
			elapsed = window
		}
		cu.CPU = float64(u.CPUNanos-before.CPUNanos) / float64(elapsed.Nanoseconds())
	}
	return cu
}

func (a *Agent) handleImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := a.images.List(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, imgs)
}

func (a *Agent) handleImport(w http.ResponseWriter, r *http.Request) {
	imgs, err := a.images.Import(r.Context(), r.URL.Query().Get("name"), r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	for _, i := range imgs {
		a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Reason: "ImageImported", Message: i.Name + " " + i.Digest})
	}
	a.retryImageWaiters()
	writeJSON(w, http.StatusOK, imgs)
}

func (a *Agent) handlePull(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		writeError(w, fmt.Errorf("pull: ref is required: %w", api.ErrInvalid))
		return
	}
	img, err := a.images.Pull(r.Context(), ref)
	if err != nil {
		writeError(w, err)
		return
	}
	a.retryImageWaiters()
	writeJSON(w, http.StatusOK, a.images.Info(r.Context(), img))
}
