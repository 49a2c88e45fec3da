package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
	"github.com/berth-project/berth/supervisor"
)

// One item of a container-mode queue on this node (queue_worker.go): the
// group that runs it, its record, and how its end is read.

// Where an item's files are inside its containers.
const (
	workVolume = "berth-work"
	workMount  = "/berth/work"
)

// itemGroupName is the local group that runs item id of queue. containerd
// IDs are at most 76 characters, container names included: a long queue
// name is cut and made unique with a hash.
func itemGroupName(queue string, id uint64) string {
	if len(queue) > 24 {
		sum := sha256.Sum256([]byte(queue))
		queue = queue[:16] + "-" + hex.EncodeToString(sum[:])[:7]
	}
	return queue + "_" + strconv.FormatUint(id, 10)
}

// itemRun is one execution of an item on this node, as recorded.
type itemRun struct {
	Name    string         `json:"name"` // the local group
	Queue   string         `json:"queue"`
	Group   string         `json:"group"` // the cluster group
	ID      uint64         `json:"id"`
	Token   uint64         `json:"token"`
	Attempt int            `json:"attempt"`
	Dir     string         `json:"dir"`
	Spec    *api.GroupSpec `json:"spec"`
	Started time.Time      `json:"started"`
	Expiry  time.Time      `json:"expiry"`
	// Outcome is set once the containers are done.
	Outcome *itemOutcome `json:"outcome,omitempty"`
}

// itemOutcome is how an execution ended.
type itemOutcome struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	Result []byte `json:"result,omitempty"`
}

// itemResult is the Result a container-mode item is acked with: where its
// output files are.
type itemResult struct {
	Node string `json:"node"`
	Dir  string `json:"dir"`
	// Files are the output files (relative paths) and their sizes; More
	// counts those left out of the list.
	Files map[string]int64 `json:"files"`
	More  int              `json:"more,omitempty"`
	Bytes int64            `json:"bytes"`
}

// itemOutcomeOf says whether an item's group is done, and how: every
// main container exited (0: ok), or the group cannot run (failed to start,
// evicted, stopped by hand). failed names the containers that failed.
func itemOutcomeOf(st api.GroupStatus) (done, ok bool, msg string, failed []string) {
	mains, mainsDone := 0, true
	var codes []string
	for _, c := range st.Containers {
		exited := c.State == api.ContainerExited && c.ExitCode != nil
		switch c.Role {
		case api.RoleSidecar:
			continue
		case api.RoleInit:
			if !exited || *c.ExitCode == 0 {
				continue
			}
		default:
			mains++
			if !exited {
				mainsDone = false
				continue
			}
		}
		if code := *c.ExitCode; code != 0 {
			s := fmt.Sprintf("container %s exited with code %d", c.Name, code)
			if c.OOMKilled {
				s += " (killed for using more memory than its limit)"
			}
			codes = append(codes, s)
			failed = append(failed, c.Name)
		}
	}
	switch st.State {
	case api.GroupStopped:
		if st.Reason == "Completed" {
			return true, true, "", nil
		}
		return true, false, fmt.Sprintf("the item's group was stopped (%s): %s", st.Reason, st.Message), nil
	case api.GroupFailed:
		if len(codes) > 0 {
			return true, false, strings.Join(codes, "; "), failed
		}
		return true, false, fmt.Sprintf("%s: %s", st.Reason, st.Message), nil
	case api.GroupEvicted:
		return true, false, fmt.Sprintf("evicted (%s): %s", st.Reason, st.Message), nil
	case api.GroupBackOff:
		// With restart = "never" only a failed start backs off.
		return true, false, fmt.Sprintf("could not start (%s): %s", st.Reason, st.Message), nil
	case api.GroupRunning:
		if mains == 0 || !mainsDone {
			return false, false, "", nil
		}
		if len(codes) > 0 {
			return true, false, strings.Join(codes, "; "), failed
		}
		return true, true, "", nil
	}
	return false, false, "", nil
}

// result summarises run's output files.
func (w *queueWorker) result(run *itemRun) []byte {
	out := filepath.Join(run.Dir, "out")
	r := itemResult{Node: w.a.cfg.NodeName, Dir: out, Files: map[string]int64{}}
	_ = filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		r.Bytes += info.Size()
		if len(r.Files) < maxResultFiles {
			rel, _ := filepath.Rel(out, p)
			r.Files[rel] = info.Size()
		} else {
			r.More++
		}
		return nil
	})
	data, _ := json.Marshal(r)
	return data
}

// lastLogs returns the last log lines of the failed containers (of every
// container when none is named), for a nack.
func (w *queueWorker) lastLogs(run *itemRun, containers []string) string {
	if len(containers) == 0 {
		for _, c := range run.Spec.Containers {
			containers = append(containers, c.Name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var lines []string
	_ = supervisor.ReadLogs(ctx, w.a.logDir(), run.Name, containers, supervisor.LogQuery{Tail: maxLogLines}, func(e api.LogEntry) error {
		line := e.Line
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		lines = append(lines, e.Container+": "+line)
		return nil
	})
	if len(lines) == 0 {
		return ""
	}
	s := "; last log lines:\n" + strings.Join(lines, "\n")
	if len(s) > raftstore.MaxItemError-512 {
		s = "…" + s[len(s)-(raftstore.MaxItemError-512):]
	}
	return s
}

// itemSpec is the spec of the group that runs one item: the queue
// group's, once, with the item's files mounted.
func itemSpec(tmpl *api.GroupSpec, name, dir, queue string, id uint64) *api.GroupSpec {
	s := *tmpl
	s.Name = name
	s.Placement, s.Queue, s.Ports, s.Ambassadors, s.Leases, s.After = nil, nil, nil, nil, nil, nil
	s.Restart = api.RestartNever
	s.Labels = maps.Clone(tmpl.Labels)
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels["berth-queue"], s.Labels["berth-item"] = queue, strconv.FormatUint(id, 10)
	s.Volumes = append(slices.Clone(tmpl.Volumes), api.VolumeSpec{Name: workVolume, Type: api.VolumeHost, Path: dir})
	s.Containers = slices.Clone(tmpl.Containers)
	for i := range s.Containers {
		c := &s.Containers[i]
		c.Mounts = append(slices.Clone(c.Mounts), api.MountSpec{Volume: workVolume, Path: workMount})
	}
	return &s
}

// itemEnv is what an item's containers learn of it.
func itemEnv(run *itemRun) []string {
	return []string{"BERTH_GROUP=" + run.Group, "BERTH_QUEUE=" + run.Queue, "BERTH_ITEM=" + strconv.FormatUint(run.ID, 10),
		"BERTH_ATTEMPT=" + strconv.Itoa(run.Attempt), "BERTH_WORK_ITEM=" + workMount + "/item", "BERTH_WORK_OUT=" + workMount + "/out"}
}
