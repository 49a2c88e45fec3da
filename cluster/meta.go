package cluster

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/memberlist"

	"github.com/berth-project/berth/api"
)

// Meta is what a member tells the others about itself, carried in its
// memberlist node metadata: it reaches every member with the member's
// alive message and changes with UpdateMeta.
type Meta struct {
	Name     string
	APIAddr  string
	RaftAddr string
	Capacity api.Resources
	Labels   map[string]string
	// Version is the agent's build version.
	Version string
	// Server says the agent is a Raft voter candidate.
	Server bool
}

// metaVersion is the first byte of encoded metadata. A member refuses
// metadata of another version (logged, and the member is listed with an
// empty Meta): a new version must keep decoding the old one.
const metaVersion byte = 1

// metaWire is Meta in version 1: JSON with one-letter keys, so that the
// labels get most of memberlist's 512 bytes.
type metaWire struct {
	Name     string            `json:"n"`
	APIAddr  string            `json:"a,omitempty"`
	RaftAddr string            `json:"r,omitempty"`
	CPU      int64             `json:"c,omitempty"` // millicores
	Memory   int64             `json:"m,omitempty"` // bytes
	Pids     int64             `json:"p,omitempty"`
	Labels   map[string]string `json:"l,omitempty"`
	Version  string            `json:"v,omitempty"`
	Server   bool              `json:"s,omitempty"`
	// Leaving is set by Leave just before the member leaves; see
	// eventDelegate.NotifyLeave.
	Leaving bool `json:"x,omitempty"`
}

// leavingFlag is what Leaving adds to the encoding; Encode keeps room for
// it so that a member can always announce that it leaves.
const leavingFlag = `,"x":true`

// Encode returns m as memberlist node metadata. It fails, wrapping
// api.ErrInvalid, when the result is over memberlist.MetaMaxSize (less the
// few bytes that Leave needs).
func (m Meta) Encode() ([]byte, error) { return m.encode(false) }

func (m Meta) encode(leaving bool) ([]byte, error) {
	b, err := json.Marshal(metaWire{
		Name: m.Name, APIAddr: m.APIAddr, RaftAddr: m.RaftAddr,
		CPU: int64(m.Capacity.CPU), Memory: int64(m.Capacity.Memory), Pids: m.Capacity.Pids,
		Labels: m.Labels, Version: m.Version, Server: m.Server, Leaving: leaving,
	})
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	out := append([]byte{metaVersion}, b...)
	size := len(out)
	if !leaving {
		size += len(leavingFlag)
	}
	if size > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata of %q is %d bytes, over memberlist's limit of %d: use fewer or shorter labels: %w",
			m.Name, size, memberlist.MetaMaxSize, api.ErrInvalid)
	}
	return out, nil
}

// DecodeMeta parses metadata that Encode wrote.
func DecodeMeta(b []byte) (Meta, error) {
	m, _, err := decodeMeta(b)
	return m, err
}

// decodeMeta also says whether the member announced that it leaves.
func decodeMeta(b []byte) (m Meta, leaving bool, err error) {
	if len(b) == 0 {
		return Meta{}, false, fmt.Errorf("node metadata is empty: %w", api.ErrInvalid)
	}
	if b[0] != metaVersion {
		return Meta{}, false, fmt.Errorf("node metadata version %d, this agent reads %d: %w", b[0], metaVersion, api.ErrInvalid)
	}
	var w metaWire
	if err := json.Unmarshal(b[1:], &w); err != nil {
		return Meta{}, false, fmt.Errorf("decode node metadata: %v: %w", err, api.ErrInvalid)
	}
	return Meta{
		Name: w.Name, APIAddr: w.APIAddr, RaftAddr: w.RaftAddr,
		Capacity: api.Resources{CPU: api.MilliCPU(w.CPU), Memory: api.ByteSize(w.Memory), Pids: w.Pids},
		Labels:   w.Labels, Version: w.Version, Server: w.Server,
	}, w.Leaving, nil
}
