package cluster

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/berth-project/berth/api"
)

// Config configures one agent's memberlist member. Start from
// DefaultConfig and call Validate (New does).
type Config struct {
	// NodeName is the member's name, unique in the cluster. Default: the
	// host name.
	NodeName string
	// BindAddr and BindPort are where memberlist listens (UDP and TCP on
	// the same port). BindPort 0 picks a free port (tests).
	BindAddr string
	BindPort int
	// AdvertiseAddr is the address other members reach this one at
	// (host or host:port); empty advertises the bound address.
	AdvertiseAddr string
	// Join lists members (host:port) to join through. Empty: this agent
	// is a one-node cluster until another member joins it.
	Join []string
	// JoinRetry says how Run retries a failed join: the first retry after
	// Interval, doubling up to Max, until a join succeeds or ctx ends.
	JoinRetry JoinRetry
	// EncryptKey is the gossip key: base64 of 32 random bytes (AES-256),
	// as GenerateKey returns. It encrypts and authenticates every gossip
	// packet and stream.
	EncryptKey string
	// Keyring holds further raw keys (16, 24 or 32 bytes) that are
	// accepted for decryption but not used to encrypt: the old key during
	// a key rotation.
	Keyring [][]byte
	// LeaveTimeout bounds the graceful leave that Run does on ctx end.
	LeaveTimeout time.Duration
	// LeaveOnStop, when set, is asked at ctx end whether Run leaves the
	// cluster (the others record the node left and move its work at once)
	// or only stops gossiping (an agent restart: the node's groups keep
	// running, and a member back within the suspicion time refutes it).
	// Nil: always leave.
	LeaveOnStop func() bool
	// EventBuffer is the capacity of the Events channel.
	EventBuffer int

	// Failure detection; see DefaultConfig for the numbers.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
}

// JoinRetry is the backoff of Run's join loop.
type JoinRetry struct {
	Interval time.Duration
	Max      time.Duration
}

// Failure detection tuned for a LAN (memberlist's DefaultLANConfig probes
// every 1 s, times out after 500 ms and suspects for 4 probe intervals,
// which declares a dead node after ≈ 5–6 s).
//
// A member probes one other member every ProbeInterval (400 ms); a probe
// waits ProbeTimeout (200 ms, ≥ 100× a LAN round trip) for a direct ack,
// then asks up to 3 others to probe indirectly until the end of the
// interval. A failed probe marks the member suspect; the suspicion lasts at
// least SuspicionMult × ProbeInterval × max(1, log10 N) = 4 × 400 ms =
// 1.6 s for N < 10. With 3 members it lasts exactly that; with 4 or more
// memberlist starts it 6× longer (9.6 s) and shrinks it to 1.6 s as
// SuspicionMult-2 = 2 other members confirm the suspicion, which they do
// on their own next probe of the dead member. Expected detection time:
//
//	until some member probes the dead one  0 – 0.4 s
//	the failed probe                       0.4 s
//	suspicion                              1.6 s (+ confirmations, N ≥ 4)
//	                                       ≈ 2.0 – 2.5 s for N = 3, ≈ 2.5–3.5 s for N ≥ 4
//
// Measured on loopback under the race detector: 2.2 s with 3 members
// (TestCrashedMemberIsFailed logs it), 2.6–3.0 s with 4, 2.2–2.6 s with 5. Lifeguard stays on
// (AwarenessMaxMultiplier 8): a member that is itself slow (CPU starved,
// GC) stretches its own probe timeouts instead of accusing healthy
// members, which keeps these short timeouts free of false positives; a
// falsely suspected member refutes the suspicion before it expires.
const (
	defaultProbeInterval = 400 * time.Millisecond
	defaultProbeTimeout  = 200 * time.Millisecond
	defaultSuspicionMult = 4
)

// DefaultConfig returns a configuration for a one-node cluster on the
// default port 7946 of all addresses, without encryption.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:      host,
		BindAddr:      "0.0.0.0",
		BindPort:      7946,
		JoinRetry:     JoinRetry{Interval: time.Second, Max: 30 * time.Second},
		LeaveTimeout:  2 * time.Second,
		EventBuffer:   256,
		ProbeInterval: defaultProbeInterval,
		ProbeTimeout:  defaultProbeTimeout,
		SuspicionMult: defaultSuspicionMult,
	}
}

// Validate reports the first problem of c; every error wraps
// api.ErrInvalid.
func (c Config) Validate() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("cluster config: "+format+": %w", append(args, api.ErrInvalid)...)
	}
	switch {
	case c.NodeName == "":
		return invalid("node name is empty")
	case c.BindPort < 0 || c.BindPort > 65535:
		return invalid("bind port %d is out of range 0-65535", c.BindPort)
	case c.JoinRetry.Interval <= 0 || c.JoinRetry.Max < c.JoinRetry.Interval:
		return invalid("join retry needs 0 < interval (%s) <= max (%s)", c.JoinRetry.Interval, c.JoinRetry.Max)
	case c.LeaveTimeout <= 0:
		return invalid("leave timeout must be positive")
	case c.EventBuffer <= 0:
		return invalid("event buffer must be positive")
	case c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval:
		return invalid("need 0 < probe timeout (%s) < probe interval (%s)", c.ProbeTimeout, c.ProbeInterval)
	case c.SuspicionMult < 1:
		return invalid("suspicion multiplier must be at least 1")
	}
	if c.EncryptKey != "" {
		if _, err := decodeKey(c.EncryptKey); err != nil {
			return invalid("%v", err)
		}
	}
	for i, k := range c.Keyring {
		if err := memberlist.ValidateKey(k); err != nil {
			return invalid("keyring key %d: %v", i, err)
		}
	}
	if len(c.Join) > 0 && c.EncryptKey == "" {
		return invalid("gossip encryption is required whenever more than one node is configured: " +
			"set the encrypt key (generate one with `agentctl keygen`)")
	}
	if c.EncryptKey == "" && len(c.Keyring) > 0 {
		return invalid("keyring keys need a primary encrypt key")
	}
	return nil
}

// keyring returns the memberlist keyring of c, nil without encryption.
func (c Config) keyring() (*memberlist.Keyring, error) {
	if c.EncryptKey == "" {
		return nil, nil
	}
	primary, err := decodeKey(c.EncryptKey)
	if err != nil {
		return nil, err
	}
	return memberlist.NewKeyring(c.Keyring, primary)
}

// keySize is the size of the gossip key: AES-256.
const keySize = 32

// GenerateKey returns a new random gossip key for Config.EncryptKey.
func GenerateKey() (string, error) {
	k := make([]byte, keySize)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("generate gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

func decodeKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("encrypt key is not base64: generate one with `agentctl keygen`")
	}
	if len(k) != keySize {
		return nil, fmt.Errorf("encrypt key is %d bytes, want %d (AES-256): generate one with `agentctl keygen`", len(k), keySize)
	}
	return k, nil
}
