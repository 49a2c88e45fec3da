package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/berth-project/berth/api"
)

// fileGroup is what one file of groups_dir holds now.
type fileGroup struct {
	path string
	spec *api.GroupSpec // nil when the file is invalid
	name string         // group name, even when invalid, if it could be read
	err  error
}

// scanGroupsDir decodes every *.toml in dir, in name order. Hidden files
// and editor temporaries are ignored.
func scanGroupsDir(dir string) ([]fileGroup, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []fileGroup
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".toml") || strings.HasPrefix(n, ".") {
			continue
		}
		p := filepath.Join(dir, n)
		data, err := os.ReadFile(p)
		if err != nil {
			out = append(out, fileGroup{path: p, err: err})
			continue
		}
		spec, err := api.Decode(p, data)
		fg := fileGroup{path: p, spec: spec, err: err}
		if spec != nil {
			fg.name = spec.Name
		} else {
			fg.name = api.PeekName(data)
		}
		if err != nil {
			fg.spec = nil
		}
		out = append(out, fg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// syncFiles makes the desired state match groups_dir: new files add
// groups, changed files replace them, removed files remove them. A file
// that fails validation leaves its running group untouched and records
// the error on it.
func (a *Agent) syncFiles() error {
	start := time.Now()
	defer func() { a.metrics.ObserveReconcile(time.Since(start)) }()
	files, err := scanGroupsDir(a.cfg.GroupsDir)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]string{} // group → file
	changed := map[string]bool{}
	for _, f := range files {
		if f.err == nil {
			f.err = a.checkNodeRules(f.spec)
		}
		if f.err == nil && f.spec.Clustered() {
			f.err = fmt.Errorf("%s: group %q has [placement], which makes it a cluster group: groups_dir holds this node's local groups; apply cluster groups with agentctl apply -f %s: %w", f.path, f.name, f.path, api.ErrInvalid)
		}
		if f.err == nil {
			f.err = a.checkFilePortsLocked(f.spec, f.path)
		}
		if f.err == nil {
			if other, dup := seen[f.name]; dup {
				f.err = fmt.Errorf("%s: group %q is already defined in %s; rename one of them: %w", f.path, f.name, other, api.ErrInvalid)
			} else if g, ok := a.groups[f.name]; ok && g.Source == SourceAPI {
				f.err = fmt.Errorf("%s: group %q was applied through the API; delete it there first (agentctl delete %s): %w", f.path, f.name, f.name, api.ErrConflict)
			}
		}
		if f.name != "" {
			if _, dup := seen[f.name]; !dup {
				seen[f.name] = f.path
			}
		}
		if f.err != nil {
			msg := f.err.Error()
			if g, ok := a.groups[f.name]; ok && f.name != "" && g.Source == f.path {
				if g.SpecError != msg {
					g.SpecError = msg
					a.events.Publish(api.Event{Time: time.Now(), Type: api.EventWarning, Group: f.name, Reason: "SpecInvalid",
						Message: "file change ignored, group keeps running its last valid spec: " + msg})
				}
			} else if a.fileErrs[f.path] != msg {
				a.events.Publish(api.Event{Time: time.Now(), Type: api.EventWarning, Group: f.name, Reason: "SpecInvalid", Message: msg})
			}
			a.fileErrs[f.path] = msg
			a.log.Warn("invalid group file", "file", f.path, "err", msg)
			continue
		}
		delete(a.fileErrs, f.path)
		action, _ := a.upsertLocked(f.spec, f.path)
		if action != api.ActionUnchanged {
			changed[f.name] = true
			a.log.Info("group file "+action, "group", f.name, "file", f.path)
		}
	}
	for p := range a.fileErrs {
		if _, err := os.Stat(p); err != nil {
			delete(a.fileErrs, p)
		}
	}
	// Groups whose file is gone.
	for name, g := range a.groups {
		if g.Source == SourceAPI || g.Source == api.SourceCluster || g.Source == sourceQueue {
			continue
		}
		if _, ok := seen[name]; !ok {
			delete(a.groups, name)
			changed[name] = true
			a.log.Info("group file removed", "group", name, "file", g.Source)
		} else if seen[name] != g.Source {
			g.Source = seen[name]
		}
	}
	if len(changed) > 0 {
		if err := a.savePersistedLocked(); err != nil {
			a.log.Error("save agent state", "err", err)
		}
	}
	for name := range changed {
		a.pushLocked(name)
	}
	if len(changed) > 0 {
		a.admitLocked()
	}
	return nil
}

// watchFiles re-syncs groups_dir on every change, debounced so an editor's
// write-rename-chmod sequence is one sync.
func (a *Agent) watchFiles(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.GroupsDir, 0o755); err != nil {
		return fmt.Errorf("groups dir: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(a.cfg.GroupsDir); err != nil {
		return fmt.Errorf("watch %s: %w", a.cfg.GroupsDir, err)
	}
	if err := a.syncFiles(); err != nil {
		a.log.Error("scan groups dir", "err", err)
	}
	const debounce = 100 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if strings.HasSuffix(ev.Name, ".toml") {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			a.log.Warn("watch groups dir", "err", err)
			timer.Reset(debounce)
		case <-timer.C:
			if err := a.syncFiles(); err != nil {
				a.log.Error("scan groups dir", "err", err)
			}
		}
	}
}
