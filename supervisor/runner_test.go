package supervisor

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-project/berth/api"
)

func TestSetStartsEveryContainer(t *testing.T) {
	h := newHarness(t)
	h.start()
	g := testGroup("web", 1, "app", "sidecar")
	g.Spec.ShareIPC = true
	g.Spec.Labels = map[string]string{"team": "edge"}
	g.Spec.Volumes = []api.VolumeSpec{{Name: "data", Type: api.VolumeEmpty}}
	g.Spec.Containers[0].Mounts = []api.MountSpec{{Volume: "data", Path: "/data"}}
	g.Env = []string{"BERTH_NODE=n1"}
	h.sup.Set(g)
	st := h.waitRunning("web", 2)

	if st.NetNS != "/run/berth/netns/web" || st.Generation != 1 || st.StartedAt.IsZero() {
		t.Errorf("status netns %q generation %d started %v", st.NetNS, st.Generation, st.StartedAt)
	}
	for i, name := range []string{"app", "sidecar"} {
		c := st.Containers[i]
		pid, ok := h.rt.running(ContainerID("web", name))
		if c.Name != name || c.ID != "web."+name || c.State != api.ContainerRunning || !ok || c.PID != pid || c.Image != "img/"+name {
			t.Errorf("container %d: %+v; want %s running with pid %d", i, c, name, pid)
		}
	}
	creates := h.rt.callsOf("CreateContainer", "")
	if len(creates) != 2 {
		t.Fatalf("CreateContainer called %d times; want 2", len(creates))
	}
	for _, cr := range creates {
		cfg := cr.Cfg
		name := cfg.Spec.Name
		want := map[string]string{LabelGroup: "web", LabelContainer: name, LabelGeneration: "1", LabelSpecHash: "hash-1",
			LabelStopSignal: "SIGTERM", LabelGrace: "100ms", LabelUserPrefix + "team": "edge"}
		if !maps.Equal(cfg.Labels, want) {
			t.Errorf("%s labels %v; want %v", name, cfg.Labels, want)
		}
		if cfg.ShimGroup != "web" || cfg.Hostname != "web" || cfg.Group != "web" {
			t.Errorf("%s: shim group %q hostname %q group %q; want web", name, cfg.ShimGroup, cfg.Hostname, cfg.Group)
		}
		for _, ns := range []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/run/berth/netns/web"},
			{Type: specs.IPCNamespace, Path: "/run/berth/ipcns/web"}} {
			if !slices.Contains(cfg.Namespaces, ns) {
				t.Errorf("%s does not join %v: %v", name, ns, cfg.Namespaces)
			}
		}
		if !slices.Contains(cfg.Env, "BERTH_GROUP=web") || !slices.Contains(cfg.Env, "BERTH_NODE=n1") {
			t.Errorf("%s env %v", name, cfg.Env)
		}
		hasData := slices.ContainsFunc(cfg.Mounts, func(m specs.Mount) bool {
			return m.Destination == "/data" && m.Source == "/var/lib/berth/web/volumes/data"
		})
		if hasData != (name == "app") {
			t.Errorf("%s mounts %v", name, cfg.Mounts)
		}
	}
	for _, id := range []string{"web.app", "web.sidecar"} {
		ensure, img := h.rt.index(0, "Ensure", "web"), h.rt.index(0, "EnsureImage", "img/"+id[4:])
		create, start := h.rt.index(0, "CreateContainer", id), h.rt.index(0, "StartTask", id)
		if ensure < 0 || ensure > img || img > create || create > start {
			t.Errorf("%s: want Ensure < EnsureImage < CreateContainer < StartTask; calls %v", id, h.rt.callsOf("", ""))
		}
	}
	if n := len(h.eventsOf("Started")); n != 3 { // two containers, one group
		t.Errorf("%d Started events; want 3", n)
	}
}

func TestSharePIDJoinsFirstContainer(t *testing.T) {
	h := newHarness(t)
	h.start()
	g := testGroup("web", 1, "init", "app")
	g.Spec.SharePID = true
	h.sup.Set(g)
	h.waitRunning("web", 2)
	if h.rt.index(0, "StartTask", "web.init") > h.rt.index(0, "StartTask", "web.app") {
		t.Errorf("app started before init: %v", h.rt.callsOf("StartTask", ""))
	}
	initPID, _ := h.rt.running("web.init")
	want := specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", initPID)}
	cfg := h.rt.callsOf("CreateContainer", "web.app")[0].Cfg
	if !slices.Contains(cfg.Namespaces, want) {
		t.Errorf("app joins %v; want the PID namespace of init (%v)", cfg.Namespaces, want)
	}
}

// stopGroup asks for the group to stop and waits until it has.
func (h *harness) stopGroup(g Group) api.GroupStatus {
	h.t.Helper()
	g.Run = false
	h.sup.Set(g)
	return h.waitState(g.Spec.Name, api.GroupStopped, "StopRequested")
}

func TestStopSignalComesFromSpecThenImage(t *testing.T) {
	for _, tc := range []struct {
		name        string
		spec, image string
		want        syscall.Signal
	}{
		{"spec over image", "SIGINT", "SIGQUIT", syscall.SIGINT},
		{"image config", "", "SIGQUIT", syscall.SIGQUIT},
		{"default", "", "", syscall.SIGTERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.rt.setImageStopSignal("img/app", tc.image)
			h.start()
			g := testGroup("web", 1, "app")
			g.Spec.Containers[0].StopSignal = api.Signal(tc.spec)
			h.sup.Set(g)
			h.waitRunning("web", 1)
			if l := h.rt.callsOf("CreateContainer", "web.app")[0].Cfg.Labels[LabelStopSignal]; l != unixSignalName(tc.want) {
				t.Errorf("label %s = %q; want %s", LabelStopSignal, l, unixSignalName(tc.want))
			}
			h.stopGroup(g)
			kills := h.rt.callsOf("Kill", "web.app")
			if len(kills) != 1 || kills[0].Sig != tc.want || kills[0].All {
				t.Errorf("kills %v; want one %s to the init process", kills, unixSignalName(tc.want))
			}
		})
	}
}

func TestStopEscalatesToKillAtGrace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modes  map[string]stopMode
		killed []string // containers that must get SIGKILL
	}{
		{"both exit on the signal", map[string]stopMode{"a": {delay: 20 * time.Millisecond}, "b": {}}, nil},
		{"both ignore it", map[string]stopMode{"a": {ignore: true}, "b": {ignore: true}}, []string{"a", "b"}},
		{"one ignores it", map[string]stopMode{"a": {delay: 30 * time.Millisecond, code: 143}, "b": {ignore: true}}, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.start()
			g := testGroup("web", 1, "a", "b")
			grace := g.Spec.GracePeriod.D()
			for n, m := range tc.modes {
				h.rt.setStopMode("web."+n, m)
			}
			h.sup.Set(g)
			h.waitRunning("web", 2)
			t0 := time.Now()
			st := h.stopGroup(g)

			for _, n := range []string{"a", "b"} {
				id := "web." + n
				kills := h.rt.callsOf("Kill", id)
				wantKill := slices.Contains(tc.killed, n)
				if len(kills) == 0 || kills[0].Sig != syscall.SIGTERM {
					t.Fatalf("%s: kills %v; want SIGTERM first", n, kills)
				}
				switch {
				case wantKill && (len(kills) != 2 || kills[1].Sig != syscall.SIGKILL || !kills[1].All):
					t.Errorf("%s: kills %v; want SIGTERM then SIGKILL to all processes", n, kills)
				case wantKill && kills[1].At.Sub(t0) < grace:
					t.Errorf("%s: SIGKILL %s after the stop request; want no earlier than the grace period %s", n, kills[1].At.Sub(t0), grace)
				case !wantKill && len(kills) != 1:
					t.Errorf("%s: kills %v; want SIGTERM only", n, kills)
				}
				lastKill := h.rt.index(0, "Kill", id)
				for i := h.rt.index(lastKill+1, "Kill", id); i >= 0; i = h.rt.index(i+1, "Kill", id) {
					lastKill = i
				}
				if h.rt.index(lastKill, "DeleteTask", id) < 0 {
					t.Errorf("%s: task not deleted after the stop sequence", n)
				}
				if _, ok := h.rt.running(id); ok {
					t.Errorf("%s still running", n)
				}
			}
			if n := len(h.eventsOf("Killing")); n != 2 {
				t.Errorf("%d Killing events; want 2", n)
			}
			if n := len(h.eventsOf("KilledAtGrace")); n != len(tc.killed) {
				t.Errorf("%d KilledAtGrace events; want %d", n, len(tc.killed))
			}
			for _, c := range st.Containers {
				if c.State != api.ContainerExited || c.ExitCode == nil {
					t.Errorf("container %+v; want Exited with a code", c)
				}
			}
		})
	}
}

func TestStartFailureRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name, op, id string
		reason       string
	}{
		{"second StartTask fails", "StartTask", "web.b", "StartFailed"},
		{"second CreateContainer fails", "CreateContainer", "web.b", "StartFailed"},
		{"image unavailable", "EnsureImage", "img/b", "ImageUnavailable"},
		{"sandbox fails", "Ensure", "web", "StartFailed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.cfg.Backoff = Backoff{Initial: time.Hour, Max: time.Hour, Factor: 2, ResetAfter: time.Hour}
			h.rt.fail(tc.op, tc.id, errBoom)
			h.start()
			h.sup.Set(testGroup("web", 1, "a", "b"))
			st := h.waitState("web", api.GroupBackOff, tc.reason)
			if !strings.Contains(st.Message, "boom") {
				t.Errorf("message %q does not say what failed", st.Message)
			}
			if ids := h.rt.ids(); len(ids) != 0 {
				t.Errorf("containers left after rollback: %v", ids)
			}
			destroy := h.rt.index(0, "Destroy", "web")
			if destroy < 0 {
				t.Errorf("sandbox not destroyed: %v", h.rt.callsOf("", ""))
			}
			for _, cr := range h.rt.callsOf("CreateContainer", "") {
				if tc.op == "CreateContainer" && cr.ID == tc.id {
					continue // failed: nothing to delete
				}
				if del := h.rt.index(0, "DeleteContainer", cr.ID); del < 0 || del > destroy {
					t.Errorf("%s created but not deleted before the sandbox: %v", cr.ID, h.rt.callsOf("", ""))
				}
			}
			if h.rt.count("StartTask", "web.a") > 0 && h.rt.index(0, "Kill", "web.a") < 0 {
				t.Errorf("web.a started in the failed attempt but never killed")
			}
			if tc.op == "EnsureImage" && h.rt.count("CreateContainer", "") > 0 {
				t.Errorf("containers created although an image is missing")
			}

			h.rt.heal()
			mark := h.rt.mark()
			h.sup.Retry("web")
			h.waitRunning("web", 2)
			for _, id := range []string{"web.a", "web.b"} {
				if h.rt.index(mark, "StartTask", id) < 0 {
					t.Errorf("%s not started on retry", id)
				}
			}
		})
	}
}

func TestInvalidSpecFailsWithoutRetry(t *testing.T) {
	h := newHarness(t)
	h.start()
	g := testGroup("web", 1, "a", "b")
	g.Spec.Containers[1].Mounts = []api.MountSpec{{Volume: "nope", Path: "/x"}}
	h.sup.Set(g)
	st := h.waitState("web", api.GroupFailed, "InvalidSpec")
	if ids := h.rt.ids(); len(ids) != 0 || h.rt.count("Destroy", "web") != 1 || !strings.Contains(st.Message, `"nope"`) {
		t.Errorf("left %v, Destroy %d times, message %q", ids, h.rt.count("Destroy", "web"), st.Message)
	}
	consistently(t, 50*time.Millisecond, "no retry of an invalid spec", func() bool { return h.rt.count("Ensure", "web") == 1 })
}

func TestSpecChangeReplacesGroup(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.sup.Set(testGroup("web", 1, "a", "b"))
	h.waitRunning("web", 2)
	g2 := testGroup("web", 2, "a", "c")
	g2.Spec.Containers[0].Image = "img/a:v2"
	mark := h.rt.mark()
	h.sup.Set(g2)
	eventually(t, "generation 2 running", func() bool {
		st, _ := h.sup.Status("web")
		_, cUp := h.rt.running("web.c")
		return st.State == api.GroupRunning && st.Running() == 2 && cUp && len(st.Containers) == 2
	})
	for _, id := range []string{"web.a", "web.b"} {
		kill := h.rt.index(mark, "Kill", id)
		delTask, del := h.rt.index(mark, "DeleteTask", id), h.rt.index(mark, "DeleteContainer", id)
		if kill < 0 || h.rt.callsOf("Kill", id)[0].Sig != syscall.SIGTERM || delTask < kill || del < delTask {
			t.Errorf("%s: want SIGTERM, DeleteTask, DeleteContainer; calls %v", id, h.rt.since(mark))
		}
	}
	if h.rt.count("CreateContainer", "web.b") != 1 || slices.Contains(h.rt.ids(), "web.b") {
		t.Errorf("web.b, gone from the spec, was created again or not deleted")
	}
	for _, id := range []string{"web.a", "web.c"} {
		i := h.rt.index(mark, "CreateContainer", id)
		if i < h.rt.index(mark, "DeleteContainer", "web.b") {
			t.Errorf("%s created before the old group was deleted", id)
			continue
		}
		cfg := h.rt.since(i)[0].Cfg
		if cfg.Labels[LabelGeneration] != "2" || cfg.Labels[LabelSpecHash] != "hash-2" {
			t.Errorf("%s labels %v; want generation 2, hash-2", id, cfg.Labels)
		}
	}
	if img := h.rt.callsOf("CreateContainer", "web.a")[1].Cfg.Spec.Image; img != "img/a:v2" {
		t.Errorf("web.a image %q; want img/a:v2", img)
	}
	if len(h.eventsOf("Replacing")) == 0 {
		t.Errorf("no Replacing event")
	}
}

func TestStopThenStartAgain(t *testing.T) {
	h := newHarness(t)
	h.start()
	g := testGroup("web", 1, "a", "b")
	h.sup.Set(g)
	before := h.waitRunning("web", 2)
	st := h.stopGroup(g)
	for _, c := range st.Containers {
		if c.State != api.ContainerExited {
			t.Errorf("after stop: %+v", c)
		}
	}
	h.sup.Set(g)
	after := h.waitRunning("web", 2)
	for i, c := range after.Containers {
		if c.PID == before.Containers[i].PID {
			t.Errorf("%s: same PID %d after start", c.Name, c.PID)
		}
		if n := h.rt.count("StartTask", c.ID); n != 2 {
			t.Errorf("%s started %d times; want 2", c.Name, n)
		}
		if n := h.rt.count("CreateContainer", c.ID); n != 1 {
			t.Errorf("%s created %d times; want 1 (stop keeps containers)", c.Name, n)
		}
	}
}

func TestStartAfterStopAppliesNewSpec(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.sup.Set(testGroup("web", 1, "a"))
	h.waitRunning("web", 1)
	g2 := testGroup("web", 2, "a")
	g2.Spec.Containers[0].Image = "img/a:v2"
	h.stopGroup(g2) // stopped and changed at once (agentctl stop, then apply)
	h.sup.Set(g2)
	h.waitRunning("web", 1)
	creates := h.rt.callsOf("CreateContainer", "web.a")
	last := creates[len(creates)-1].Cfg
	if last.Spec.Image != "img/a:v2" || last.Labels[LabelGeneration] != "2" {
		t.Errorf("running web.a has image %s generation %s; want img/a:v2, 2", last.Spec.Image, last.Labels[LabelGeneration])
	}
}

func TestRemoveDeletesEverything(t *testing.T) {
	h := newHarness(t)
	h.cfg.LogDir = t.TempDir()
	logs := filepath.Join(h.cfg.LogDir, "web")
	if err := os.MkdirAll(logs, 0o750); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.sup.Set(testGroup("web", 1, "a", "b"))
	h.waitRunning("web", 2)
	waitClosed(t, h.sup.Remove("web"))
	if ids := h.rt.ids(); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
	for _, id := range []string{"web.a", "web.b"} {
		if h.rt.count("Kill", id) != 1 || h.rt.index(h.rt.index(0, "Kill", id), "DeleteContainer", id) < 0 {
			t.Errorf("%s: want stop signal then DeleteContainer: %v", id, h.rt.callsOf("", id))
		}
	}
	if h.rt.index(h.rt.index(0, "DeleteContainer", "web.b"), "Destroy", "web") < 0 {
		t.Errorf("sandbox not destroyed after the containers")
	}
	if _, err := os.Stat(logs); !os.IsNotExist(err) {
		t.Errorf("logs not removed: %v", err)
	}
	eventually(t, "group forgotten", func() bool { _, ok := h.sup.Status("web"); return !ok })
}

func waitClosed(t *testing.T, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatal("removal did not finish")
	}
}

// recoveredLabels are the labels an earlier agent put on a container.
func recoveredLabels(group, name, sig, grace string) map[string]string {
	return map[string]string{LabelGroup: group, LabelContainer: name, LabelGeneration: "1",
		LabelSpecHash: "hash-1", LabelStopSignal: sig, LabelGrace: grace}
}

func TestRemoveRecoveredGroupUsesLabels(t *testing.T) {
	h := newHarness(t)
	h.rt.addContainer("old.a", recoveredLabels("old", "a", "SIGINT", "150ms"), 4000, false, 0)
	h.rt.addContainer("old.b", recoveredLabels("old", "b", "SIGUSR1", "150ms"), 4001, false, 0)
	h.rt.addContainer("old.c", recoveredLabels("old", "c", "SIGTERM", "150ms"), 0, false, 0)
	h.rt.setStopMode("old.a", stopMode{ignore: true})
	if names := h.start(); !slices.Equal(names, []string{"old"}) {
		t.Fatalf("Recover found %v; want [old]", names)
	}
	t0 := time.Now()
	waitClosed(t, h.sup.Remove("old"))
	ka, kb := h.rt.callsOf("Kill", "old.a"), h.rt.callsOf("Kill", "old.b")
	if len(ka) != 2 || ka[0].Sig != syscall.SIGINT || ka[1].Sig != syscall.SIGKILL {
		t.Errorf("old.a kills %v; want SIGINT then SIGKILL", ka)
	} else if d := ka[1].At.Sub(t0); d < 150*time.Millisecond {
		t.Errorf("SIGKILL after %s; want the 150ms grace period from the labels", d)
	}
	if len(kb) != 1 || kb[0].Sig != syscall.SIGUSR1 {
		t.Errorf("old.b kills %v; want SIGUSR1 only", kb)
	}
	if ids := h.rt.ids(); len(ids) != 0 || h.rt.count("Destroy", "old") != 1 {
		t.Errorf("left %v, Destroy calls %d", ids, h.rt.count("Destroy", "old"))
	}
}

func TestRecoverReattaches(t *testing.T) {
	h := newHarness(t)
	h.rt.addContainer("web.a", recoveredLabels("web", "a", "SIGTERM", "100ms"), 4000, false, 0)
	h.rt.addContainer("web.b", recoveredLabels("web", "b", "SIGTERM", "100ms"), 4001, false, 0)
	h.start()
	h.sup.Set(testGroup("web", 1, "a", "b"))
	st := h.waitState("web", api.GroupRunning, "Reattached")
	for i, pid := range []uint32{4000, 4001} {
		if c := st.Containers[i]; c.PID != pid || c.State != api.ContainerRunning {
			t.Errorf("container %+v; want running with pid %d", c, pid)
		}
	}
	for _, op := range []string{"EnsureImage", "CreateContainer", "StartTask", "Kill"} {
		if n := h.rt.count(op, ""); n != 0 {
			t.Errorf("%s called %d times on reattach", op, n)
		}
	}
	if h.rt.count("AttachTask", "web.a") != 1 || h.rt.count("AttachTask", "web.b") != 1 {
		t.Errorf("AttachTask calls: %v", h.rt.callsOf("AttachTask", ""))
	}
	h.rt.exit("web.a", 2)
	eventually(t, "web.a restarted", func() bool { _, up := h.rt.running("web.a"); return up && h.rt.count("StartTask", "web.a") == 1 })
	st = h.waitRunning("web", 2)
	if st.Containers[0].PID == 4000 || st.Containers[0].Restarts != 1 {
		t.Errorf("after exit: %+v; want a restarted", st.Containers[0])
	}
}

func TestRecoveredTaskThatExitedIsRestarted(t *testing.T) {
	h := newHarness(t)
	h.rt.addContainer("web.a", recoveredLabels("web", "a", "SIGTERM", "100ms"), 4000, true, 1)
	h.rt.addContainer("web.b", recoveredLabels("web", "b", "SIGTERM", "100ms"), 4001, false, 0)
	h.start()
	h.sup.Set(testGroup("web", 1, "a", "b"))
	st := h.waitRunning("web", 2)
	a := st.Containers[0]
	if a.Restarts != 1 || a.PID == 4000 || st.Containers[1].PID != 4001 {
		t.Errorf("containers %+v; want a restarted once, b untouched", st.Containers)
	}
	if del, start := h.rt.index(0, "DeleteTask", "web.a"), h.rt.index(0, "StartTask", "web.a"); del < 0 || del > start {
		t.Errorf("exited task not deleted before the restart: %v", h.rt.callsOf("", "web.a"))
	}
}

func TestRecoveredContainerWithoutTaskIsStarted(t *testing.T) {
	h := newHarness(t)
	h.rt.addContainer("web.a", recoveredLabels("web", "a", "SIGTERM", "100ms"), 4000, false, 0)
	h.rt.addContainer("web.b", recoveredLabels("web", "b", "SIGTERM", "100ms"), 0, false, 0)
	h.start()
	h.sup.Set(testGroup("web", 1, "a", "b"))
	st := h.waitRunning("web", 2)
	if st.Containers[0].PID != 4000 || h.rt.count("StartTask", "web.a") != 0 || h.rt.count("CreateContainer", "") != 0 {
		t.Errorf("a %+v, calls %v; want a reattached, b started in its existing container", st.Containers[0], h.rt.callsOf("", ""))
	}
	// The harness fails the test on any IllegalTransition event.
}

func TestRecoverThenNewSpecReplaces(t *testing.T) {
	h := newHarness(t)
	h.rt.addContainer("web.a", recoveredLabels("web", "a", "SIGINT", "100ms"), 4000, false, 0)
	h.start()
	h.sup.Set(testGroup("web", 2, "a"))
	eventually(t, "generation 2 created", func() bool { return h.rt.count("StartTask", "web.a") == 1 })
	h.waitRunning("web", 1)
	kills := h.rt.callsOf("Kill", "web.a")
	if len(kills) == 0 || kills[0].Sig != syscall.SIGINT {
		t.Errorf("kills %v; want the stop signal from the label", kills)
	}
	if l := h.rt.callsOf("CreateContainer", "web.a")[0].Cfg.Labels; l[LabelGeneration] != "2" {
		t.Errorf("labels %v; want generation 2", l)
	}
}

func TestTransitionTable(t *testing.T) {
	all := []api.GroupState{"", api.GroupPending, api.GroupStarting, api.GroupRunning, api.GroupBackOff,
		api.GroupStopping, api.GroupStopped, api.GroupFailed, api.GroupEvicted, api.GroupDeleting}
	for _, s := range all {
		to, ok := transitions[s]
		if !ok {
			t.Errorf("state %q has no entry in transitions", s)
		}
		for _, d := range to {
			if d == "" || !slices.Contains(all, d) {
				t.Errorf("%q → %q: unknown state", s, d)
			}
		}
		if !canTransition(s, s) {
			t.Errorf("staying in %q is refused", s)
		}
		if s != api.GroupDeleting && s != "" && !canTransition(s, api.GroupDeleting) {
			t.Errorf("%q cannot be deleted", s)
		}
		if s != "" && s != api.GroupDeleting && !canTransition(s, api.GroupStopping) {
			t.Errorf("%q cannot be stopped", s)
		}
	}
	for _, s := range all {
		if s != api.GroupDeleting && canTransition(api.GroupDeleting, s) {
			t.Errorf("Deleting → %q allowed; Deleting is terminal", s)
		}
	}
	for _, e := range [][2]api.GroupState{
		{"", api.GroupPending}, {api.GroupPending, api.GroupStarting}, {api.GroupStarting, api.GroupRunning},
		{api.GroupStarting, api.GroupBackOff}, {api.GroupRunning, api.GroupBackOff}, {api.GroupBackOff, api.GroupStarting},
		{api.GroupRunning, api.GroupStopped}, {api.GroupRunning, api.GroupFailed}, {api.GroupStopping, api.GroupStopped},
		{api.GroupStopping, api.GroupPending}, {api.GroupStopped, api.GroupStarting}, {api.GroupFailed, api.GroupPending},
		{api.GroupEvicted, api.GroupPending},
	} {
		if !canTransition(e[0], e[1]) {
			t.Errorf("%q → %q refused; the diagram allows it", e[0], e[1])
		}
	}
}

func TestEndOfSupervisionKillsNothing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stopping bool
	}{
		{"while running", false},
		{"during a stop sequence", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.start()
			g := testGroup("web", 1, "a", "b")
			g.Spec.GracePeriod = api.Duration(time.Hour)
			h.rt.setStopMode("web.a", stopMode{ignore: true})
			h.sup.Set(g)
			h.waitRunning("web", 2)
			if tc.stopping {
				g.Run = false
				h.sup.Set(g)
				eventually(t, "stop signal sent", func() bool { return h.rt.count("Kill", "web.a") == 1 })
			}
			mark := h.rt.mark()
			h.stop()
			for _, c := range h.rt.since(mark) {
				t.Errorf("after supervision ended: %v", c)
			}
			if _, ok := h.rt.running("web.a"); !ok {
				t.Errorf("web.a no longer running")
			}
		})
	}
}
