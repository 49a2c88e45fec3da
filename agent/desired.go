package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// SourceAPI is the source of groups applied through the API (agentctl
// apply); other groups name the file in groups_dir that defines them.
const SourceAPI = "api"

// groupEntry is one group of this node's desired state.
type groupEntry struct {
	Spec       *api.GroupSpec
	Source     string
	Hash       string
	Generation int64
	Stopped    bool
	// SpecError is the last error of the group's file, when it was changed
	// into something invalid; the group keeps its last valid spec.
	SpecError string
	// hold is the dependency wait last handed to the supervisor.
	hold string
	// portHold is why the allocation waits for a published port, as last
	// handed to the supervisor (ports.go).
	portHold string
	// adm is the group's admission on this node.
	adm admission
	// draining: the node drain reached this group's priority level.
	draining bool
	// env is added to the containers' environment (an allocation's
	// place in the cluster).
	env []string
}

// persisted is what the agent keeps across restarts besides applied
// files: generations (which only grow) and stop requests.
type persisted struct {
	Groups  map[string]persistedGroup `json:"groups"`
	Drained bool                      `json:"drained,omitempty"`
}

type persistedGroup struct {
	Generation int64  `json:"generation"`
	Hash       string `json:"hash"`
	Stopped    bool   `json:"stopped,omitempty"`
}

// specHash identifies a spec; equal specs hash equal.
func specHash(s *api.GroupSpec) string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// legacyStatePath is where early builds kept the bookkeeping now in state.db.
func (a *Agent) legacyStatePath() string { return filepath.Join(a.cfg.StateDir, "agent-state.json") }

func (a *Agent) appliedDir() string { return filepath.Join(a.cfg.StateDir, "applied") }
func (a *Agent) logDir() string     { return filepath.Join(a.cfg.StateDir, "logs") }
func (a *Agent) appliedPath(n string) string {
	return filepath.Join(a.appliedDir(), n+".toml")
}

func (a *Agent) loadPersisted() (persisted, error) {
	p := persisted{Groups: map[string]persistedGroup{}}
	if a.local == nil {
		return p, nil
	}
	data, ok := a.local.loadDesired()
	if !ok {
		// Import what an earlier build kept in a JSON file, once.
		legacy, err := os.ReadFile(a.legacyStatePath())
		if errors.Is(err, os.ErrNotExist) {
			return p, nil
		}
		if err != nil {
			return p, err
		}
		data = legacy
		defer os.Remove(a.legacyStatePath())
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("agent state: %w", err)
	}
	if p.Groups == nil {
		p.Groups = map[string]persistedGroup{}
	}
	return p, nil
}

// savePersistedLocked writes generations and stop flags. a.mu held.
func (a *Agent) savePersistedLocked() error {
	p := persisted{Groups: map[string]persistedGroup{}, Drained: a.drained}
	for n, g := range a.groups {
		p.Groups[n] = persistedGroup{Generation: g.Generation, Hash: g.Hash, Stopped: g.Stopped}
	}
	if a.local == nil {
		return nil // unit tests run without a state database
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return a.local.saveDesired(data)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// loadApplied reads the groups applied through the API in earlier runs.
func (a *Agent) loadApplied() (map[string]*api.GroupSpec, error) {
	out := map[string]*api.GroupSpec{}
	paths, _ := filepath.Glob(filepath.Join(a.appliedDir(), "*.toml"))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		spec, err := api.Decode(p, data)
		if err != nil {
			return nil, fmt.Errorf("applied group %s: %w", p, err)
		}
		out[spec.Name] = spec
	}
	return out, nil
}

// checkNodeRules checks what depends on this agent's config, not on the
// file alone: host volume prefixes and priority class names.
func (a *Agent) checkNodeRules(spec *api.GroupSpec) error {
	if err := supervisor.CheckHostVolumes(spec, a.cfg.Volumes.HostPathPrefixes); err != nil {
		return err
	}
	if err := checkQueueRules(spec); err != nil {
		return err
	}
	_, err := a.priority(spec)
	return err
}

// priority resolves a group's priority to a number.
func (a *Agent) priority(spec *api.GroupSpec) (int64, error) {
	if spec.Priority.Class == "" {
		return spec.Priority.Value, nil
	}
	v, ok := a.cfg.PriorityClasses[spec.Priority.Class]
	if !ok {
		names := make([]string, 0, len(a.cfg.PriorityClasses))
		for n := range a.cfg.PriorityClasses {
			names = append(names, n)
		}
		sort.Strings(names)
		return 0, fmt.Errorf("group %q: unknown priority class %q (known: %s; define more under [priority_classes] in agent.toml): %w",
			spec.Name, spec.Priority.Class, strings.Join(names, ", "), api.ErrInvalid)
	}
	return v, nil
}

// pushLocked hands a group's desired state to the supervisor. a.mu held.
func (a *Agent) pushLocked(name string) {
	g, ok := a.groups[name]
	if !ok {
		a.sup.Remove(name)
		return
	}
	prio, _ := a.priority(g.Spec)
	g.hold = a.holdLocked(g)
	g.portHold = a.portHoldLocked(name, g)
	run, hold, holdReason := !g.Stopped, g.hold, ""
	var stop *supervisor.StopCause
	switch {
	case g.Stopped:
	case a.drained && (!a.draining || g.draining):
		drain := drainCause
		run, stop = false, &drain
	case g.adm.evicting != nil:
		run, stop = false, g.adm.evicting
	case g.adm.evicted != nil && !g.adm.admitted:
		run, stop = false, g.adm.evicted
	case hold != "":
	case g.portHold != "":
		hold, holdReason = g.portHold, "PortConflict"
	case !g.adm.admitted:
		hold, holdReason = g.adm.pending, g.adm.pendingReason
		if hold == "" {
			hold, holdReason = "waiting for admission", "Pending"
		}
	}
	a.sup.Set(supervisor.Group{
		Hold:       hold,
		HoldReason: holdReason,
		Stop:       stop,
		Spec:       g.Spec,
		Generation: g.Generation,
		SpecHash:   g.Hash,
		Run:        run,
		Env:        append([]string{"BERTH_NODE=" + a.cfg.NodeName, "BERTH_AGENT_SOCKET=" + api.DownwardSocket}, g.env...),
		Source:     g.Source,
		Priority:   prio,
	})
}

// upsertLocked records spec as the group's desired spec from source,
// bumping the generation when the spec changed. It returns the action.
func (a *Agent) upsertLocked(spec *api.GroupSpec, source string) (string, int64) {
	h := specHash(spec)
	g, ok := a.groups[spec.Name]
	switch {
	case !ok:
		prev := a.prev[spec.Name]
		gen := prev.Generation
		if prev.Hash != h {
			gen++
		}
		a.groups[spec.Name] = &groupEntry{Spec: spec, Source: source, Hash: h, Generation: gen, Stopped: prev.Stopped}
		a.prev[spec.Name] = persistedGroup{Generation: gen, Hash: h}
		return api.ActionCreated, gen
	case g.Hash == h:
		g.Source, g.SpecError = source, ""
		return api.ActionUnchanged, g.Generation
	default:
		g.Spec, g.Hash, g.Source, g.SpecError = spec, h, source, ""
		g.Generation++
		// A new spec may ask for more: it is admitted again.
		if g.adm.admitted {
			g.adm = admission{askedAt: time.Now()}
		}
		a.prev[spec.Name] = persistedGroup{Generation: g.Generation, Hash: h}
		return api.ActionUpdated, g.Generation
	}
}
