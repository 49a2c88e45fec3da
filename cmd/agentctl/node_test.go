package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestNodeTable(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "node")
	wantCode(t, r, exitOK)
	want := `Name:  node-1

RESOURCE  ALLOCATABLE  ALLOCATED  FREE
cpu       4            2500m      1500m
memory    8GiB         1.2GiB     6.8GiB
pids      4096         100        3996

Memory available:  300MiB
Pressure:          memory
Groups:            2 admitted, 1 pending, 3 evicted
`
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
	if got := f.requestLog(); len(got) != 1 || got[0] != "GET /v1/node" {
		t.Errorf("requests = %q", got)
	}
}

// TestNodeTableWithoutPressureWhenFull shows no Pressure line when no
// threshold is crossed, and a node whose requests are all allocated.
func TestNodeTableWithoutPressureWhenFull(t *testing.T) {
	f := newFakeAgent(t)
	f.node.Pressure = ""
	f.node.Allocated = f.node.Allocatable
	f.node.Free = api.Resources{}
	r := f.run("", "node")
	wantCode(t, r, exitOK)
	for _, want := range []string{
		"cpu       4            4          0\n",
		"memory    8GiB         8GiB       0B\n",
		"pids      4096         4096       0\n",
		"Memory available:  300MiB\nGroups:            2 admitted, 1 pending, 3 evicted\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("node output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "Pressure") {
		t.Errorf("Pressure shown without pressure:\n%s", r.stdout)
	}
}

func TestNodeJSONIsTheNodeStatus(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "node", "-o", "json")
	wantCode(t, r, exitOK)
	if want := marshalIndent(t, f.node); r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
	var back api.NodeStatus
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || back != f.node {
		t.Errorf("does not decode back (%v): %+v", err, back)
	}
}

func TestNodeTakesNoArguments(t *testing.T) {
	f := newFakeAgent(t)
	r := f.run("", "node", "node-1")
	wantCode(t, r, exitUsage)
	if len(f.requestLog()) != 0 {
		t.Errorf("usage error still sent %q", f.requestLog())
	}
}

func TestShortBytes(t *testing.T) {
	for in, want := range map[api.ByteSize]string{
		0: "0B", 512: "512B", 1024: "1KiB", 1536: "1.5KiB", 256 << 20: "256MiB",
		100_000_000: "95.4MiB", 3 << 40: "3TiB", -(64 << 20): "-64MiB",
	} {
		if got := shortBytes(in); got != want {
			t.Errorf("shortBytes(%d) = %q, want %q", int64(in), got, want)
		}
	}
}
