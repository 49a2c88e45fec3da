//go:build linux

package supervisor

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cgroup1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd"
	apitypes "github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/contrib/imagebuild"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

// testBusyboxImage is the busybox image startTestContainerd imports.
const testBusyboxImage = "berth.local/busybox:test"

// testContainerd is a private containerd for one test, with busybox
// imported into namespaces of the test's own.
type testContainerd struct {
	daemon  *containerdproc.Process
	client  *containerd.Client
	archive []byte   // busybox as an OCI archive, for newNamespace
	nss     []string // every namespace created, for the final cleanup
	// rt is the adapter for ns, the first namespace.
	rt *containerdRuntime
	ns string
}

// startTestContainerd starts a private containerd in a temp dir and imports
// busybox into a fresh namespace, prefix-<random>, that tc.rt works in. It
// skips the test when this machine cannot run containers (fails it when
// CI=true). Everything — tasks, containers, snapshots, the daemon, cgroups,
// runc state, the temp dir — is removed when the test ends.
func startTestContainerd(t *testing.T, prefix string) *testContainerd {
	t.Helper()
	needContainerdForExec(t)
	dir, err := os.MkdirTemp("", prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	tc := &testContainerd{}
	// Runs last, once the daemon is gone. cleanupExecTest removes dir on
	// its first call; later calls find nothing left there.
	t.Cleanup(func() {
		nss := tc.nss
		if len(nss) == 0 { // failed before the first namespace: dir only
			nss = []string{prefix + "-none"}
		}
		for _, ns := range nss {
			cleanupExecTest(t, ns, dir)
		}
	})

	cfg := containerdproc.DefaultConfig(filepath.Join(dir, "cd"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tc.daemon, err = containerdproc.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tc.daemon.Stop(10 * time.Second); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})
	tc.client, err = containerd.New(cfg.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.client.Close() })

	img, err := imagebuild.Busybox(imagebuild.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := imagebuild.WriteOCIArchive(img, testBusyboxImage, &archive); err != nil {
		t.Fatal(err)
	}
	tc.archive = archive.Bytes()
	tc.ns = tc.newNamespace(t, prefix)
	tc.rt = &containerdRuntime{client: tc.client, cfg: ContainerdConfig{
		Namespace: tc.ns, Snapshotter: "overlayfs", Runtime: "io.containerd.runc.v2",
	}}
	return tc
}

// newNamespace imports busybox into a fresh namespace, prefix-<random>,
// and returns its name. Its tasks and containers are deleted when the test
// ends, before the daemon stops; its cgroups and runc state after.
func (tc *testContainerd) newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	ns := prefix + "-" + hex.EncodeToString(suffix)
	tc.nss = append(tc.nss, ns)
	t.Cleanup(func() { tc.deleteAll(t, ns) })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nctx := namespaces.WithNamespace(ctx, ns)
	imgs, err := tc.client.Import(nctx, bytes.NewReader(tc.archive))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != testBusyboxImage {
		t.Fatalf("import created %v, want only %s", imgs, testBusyboxImage)
	}
	if err := containerd.NewImage(tc.client, imgs[0]).Unpack(nctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	return ns
}

// deleteAll kills and deletes every task and container in ns.
func (tc *testContainerd) deleteAll(t *testing.T, ns string) {
	select {
	case <-tc.daemon.Done():
		return // the test stopped the daemon; cleanupExecTest reports leftovers
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, ns)
	cs, err := tc.client.Containers(ctx)
	if err != nil {
		t.Errorf("list containers in %s: %v", ns, err)
		return
	}
	for _, c := range cs {
		if task, err := c.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
				t.Errorf("delete task %s/%s: %v", ns, c.ID(), err)
			}
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container %s/%s: %v", ns, c.ID(), err)
		}
	}
}

// runTask creates container id in ns from busybox, running args with
// opts applied to its spec, and starts its task with output discarded. It
// returns the task's exit channel.
func (tc *testContainerd) runTask(t *testing.T, ctx context.Context, ns, id string, args []string, opts ...oci.SpecOpts) <-chan containerd.ExitStatus {
	t.Helper()
	nctx := namespaces.WithNamespace(ctx, ns)
	img, err := tc.client.GetImage(nctx, testBusyboxImage)
	if err != nil {
		t.Fatal(err)
	}
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(args...)}, opts...)
	c, err := tc.client.NewContainer(nctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(nctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exitC, err := task.Wait(nctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(nctx); err != nil {
		t.Fatal(err)
	}
	return exitC
}

// busyLoop burns about 0.2s of CPU in busybox sh, then sleeps.
var busyLoop = []string{"sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 600"}

// busyLoopCPU is half the CPU time the loop uses; starting a bare sleep
// container costs about 6ms.
const busyLoopCPU = 100 * time.Millisecond

func TestUsageReadsTaskCgroup(t *testing.T) {
	tc := startTestContainerd(t, "berth-usage")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const limit = 64 << 20
	start := time.Now()
	tc.runTask(t, ctx, tc.ns, "busy", busyLoop, oci.WithMemoryLimit(limit))

	t.Run("running container", func(t *testing.T) {
		// Await the loop's CPU time: it shows in the cgroup as it runs.
		var u Usage
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var err error
			if u, err = tc.rt.Usage(ctx, "busy"); err != nil {
				t.Fatal(err)
			}
			if u.CPUNanos >= uint64(busyLoopCPU) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CPUNanos = %d after 30s, want >= %d", u.CPUNanos, uint64(busyLoopCPU))
			}
		}
		if u.MemoryBytes == 0 || u.MemoryBytes > limit {
			t.Errorf("MemoryBytes = %d, want > 0 and <= the %d limit", u.MemoryBytes, limit)
		}
		if u.MemoryLimit != limit {
			t.Errorf("MemoryLimit = %d, want %d", u.MemoryLimit, limit)
		}
		if u.Pids < 1 {
			t.Errorf("Pids = %d, want >= 1", u.Pids)
		}
		if now := time.Now(); u.At.Before(start) || u.At.After(now) {
			t.Errorf("At = %v, want between %v and %v", u.At, start, now)
		}
	})
	t.Run("container without a task", func(t *testing.T) {
		nctx := namespaces.WithNamespace(ctx, tc.ns)
		img, err := tc.client.GetImage(nctx, testBusyboxImage)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tc.client.NewContainer(nctx, "idle", containerd.WithImage(img),
			containerd.WithNewSnapshot("idle", img), containerd.WithNewSpec(oci.WithImageConfig(img)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.rt.Usage(ctx, "idle"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("err = %v, want api.ErrNotFound", err)
		}
	})
	t.Run("missing container", func(t *testing.T) {
		if _, err := tc.rt.Usage(ctx, "no-such"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("err = %v, want api.ErrNotFound", err)
		}
	})
}

// TestUsageFromMetricsDecodesBothCgroupVersions covers the cgroup version
// this machine does not run as well as the one it does.
func TestUsageFromMetricsDecodesBothCgroupVersions(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	const v1Unlimited = math.MaxInt64 &^ 4095 // what the kernel reports
	tests := []struct {
		name    string
		payload any
		want    Usage
		wantErr string
	}{
		{
			name: "cgroup v1",
			payload: &cgroup1.Metrics{
				CPU:    &cgroup1.CPUStat{Usage: &cgroup1.CPUUsage{Total: 1500}},
				Memory: &cgroup1.MemoryStat{Usage: &cgroup1.MemoryEntry{Usage: 10 << 20, Limit: 64 << 20}, TotalInactiveFile: 3 << 20, InactiveFile: 1 << 20},
				Pids:   &cgroup1.PidsStat{Current: 3},
			},
			want: Usage{CPUNanos: 1500, MemoryBytes: 7 << 20, MemoryLimit: 64 << 20, Pids: 3, At: at},
		},
		{
			name: "cgroup v1 without a limit",
			payload: &cgroup1.Metrics{
				Memory: &cgroup1.MemoryStat{Usage: &cgroup1.MemoryEntry{Usage: 10 << 20, Limit: v1Unlimited}},
			},
			want: Usage{MemoryBytes: 10 << 20, At: at},
		},
		{
			name: "cgroup v2",
			payload: &cgroup2.Metrics{
				CPU:    &cgroup2.CPUStat{UsageUsec: 1500},
				Memory: &cgroup2.MemoryStat{Usage: 10 << 20, UsageLimit: 64 << 20, InactiveFile: 3 << 20},
				Pids:   &cgroup2.PidsStat{Current: 3},
			},
			want: Usage{CPUNanos: 1500000, MemoryBytes: 7 << 20, MemoryLimit: 64 << 20, Pids: 3, At: at},
		},
		{
			name: "cgroup v2 without a limit",
			payload: &cgroup2.Metrics{
				Memory: &cgroup2.MemoryStat{Usage: 10 << 20, UsageLimit: math.MaxUint64},
			},
			want: Usage{MemoryBytes: 10 << 20, At: at},
		},
		{
			name: "inactive file cache above usage floors at zero",
			payload: &cgroup2.Metrics{
				Memory: &cgroup2.MemoryStat{Usage: 1 << 20, InactiveFile: 2 << 20},
			},
			want: Usage{At: at},
		},
		{
			name:    "other payload",
			payload: &apitypes.Mount{Type: "bind"},
			wantErr: "not cgroup v1 or v2 metrics",
		},
		{
			name:    "no payload",
			wantErr: "no data",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &apitypes.Metric{Timestamp: timestamppb.New(at), ID: "c"}
			if tt.payload != nil {
				a, err := typeurl.MarshalAny(tt.payload)
				if err != nil {
					t.Fatal(err)
				}
				m.Data = &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}
			}
			got, err := usageFromMetric(m)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.At.Equal(tt.want.At) {
				t.Errorf("At = %v, want %v", got.At, tt.want.At)
			}
			got.At, tt.want.At = time.Time{}, time.Time{}
			if got != tt.want {
				t.Errorf("usage = %+v, want %+v", got, tt.want)
			}
		})
	}
}
