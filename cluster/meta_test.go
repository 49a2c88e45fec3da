package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"

	"github.com/berth-project/berth/api"
)

// realisticMeta is what a production agent carries: a long DNS name,
// IPv6 addresses, a big machine and a handful of scheduling labels.
func realisticMeta() Meta {
	return Meta{
		Name:     "worker-eu-west-1c-0042.prod.example.internal",
		APIAddr:  "[2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:7443",
		RaftAddr: "[2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:7444",
		Capacity: api.Resources{CPU: 128000, Memory: 1 << 40, Pids: 4194304},
		Labels: map[string]string{
			"zone": "eu-west-1c", "region": "eu-west-1", "rack": "r17-u42",
			"disk": "nvme", "gpu": "none", "arch": "amd64", "pool": "general-purpose",
			"team": "platform",
		},
		Version: "v1.12.3-rc.1+g3f2a9c1d",
		Server:  true,
	}
}

func TestMetaRoundTrips(t *testing.T) {
	for name, m := range map[string]Meta{
		"realistic": realisticMeta(),
		"minimal":   {Name: "n1"},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
		})
	}
}

func TestRealisticMetaFits(t *testing.T) {
	b, err := realisticMeta().Encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("realistic metadata: %d of %d bytes", len(b), memberlist.MetaMaxSize)
	if len(b) > memberlist.MetaMaxSize {
		t.Fatalf("realistic metadata takes %d of %d bytes", len(b), memberlist.MetaMaxSize)
	}
}

func TestMetaOverTheLimitIsRefused(t *testing.T) {
	m := realisticMeta()
	for i := range 20 {
		m.Labels[fmt.Sprintf("label-%02d", i)] = strings.Repeat("x", 16)
	}
	_, err := m.Encode()
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "over memberlist's limit of 512") {
		t.Fatalf("Encode of oversized metadata: got %v, want an api.ErrInvalid naming the limit", err)
	}
	// The same limit guards New and UpdateMeta.
	cfg := testConfig("big", "", nil)
	m.Name = "big"
	if _, err := New(cfg, m, discardLogger()); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("New with oversized metadata: got %v, want api.ErrInvalid", err)
	}
}

func TestMetaOfAnotherVersionIsRefused(t *testing.T) {
	b, err := Meta{Name: "n1"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b[0] = metaVersion + 1
	if _, err := DecodeMeta(b); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("got %v, want api.ErrInvalid", err)
	}
	if _, err := DecodeMeta(nil); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("empty: got %v, want api.ErrInvalid", err)
	}
}
