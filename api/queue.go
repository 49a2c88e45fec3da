package api

import (
	"fmt"
	"time"
)

// QueueSpec is a group's [queue]: a work queue whose items are stored in
// Raft and handed to workers, at least once each, with completion
// recorded once.
//
//	[queue]
//	mode = "container"        # or "pull"
//	parallelism = 4           # items in progress at once, cluster-wide
//	max_attempts = 3
//	backoff = "1s"            # first retry delay, doubling up to max_backoff
//	visibility_timeout = "30s"
//	max_item_size = "256KiB"
//
// In container mode the group's containers are the worker template: the
// agent runs them once per item, with the item at /berth/work/item and
// the files left under /berth/work/out kept as the result; exit 0 means
// done. In pull mode the group's containers run as usual and lease, ack
// and nack items over the downward API.
type QueueSpec struct {
	// Name is the queue's name, unique in the cluster; default the
	// group's name.
	Name string `toml:"name" json:"name,omitempty"`
	// Mode is "container" or "pull"; required.
	Mode QueueMode `toml:"mode" json:"mode"`
	// Parallelism caps the items leased at once across the cluster.
	// Default 1 in container mode (one item container at a time, like a
	// Kubernetes Job); in pull mode the default, 0, sets no cap: the
	// workers and how many items each asks for are the cap.
	Parallelism int `toml:"parallelism" json:"parallelism,omitempty"`
	// MaxAttempts is how many times an item is handed out before it
	// becomes a dead letter. Default 3.
	MaxAttempts int `toml:"max_attempts" json:"max_attempts,omitempty"`
	// Backoff is the delay before the first retry of a failed item; each
	// further retry doubles it, up to MaxBackoff. Default 1s.
	Backoff Duration `toml:"backoff" json:"backoff,omitempty"`
	// MaxBackoff caps the retry delay. Default 1m.
	MaxBackoff Duration `toml:"max_backoff" json:"max_backoff,omitempty"`
	// VisibilityTimeout is how long a leased item stays with its worker
	// without an ack, nack or extension before it is handed out again.
	// Default 30s. In container mode the agent extends it while the item's
	// container runs.
	VisibilityTimeout Duration `toml:"visibility_timeout" json:"visibility_timeout,omitempty"`
	// MaxItemSize bounds one item, and one item's result. Default
	// 256KiB, at most MaxQueueItemSize.
	MaxItemSize ByteSize `toml:"max_item_size" json:"max_item_size,omitempty"`
}

// QueueMode is how a queue's items are worked on.
type QueueMode string

const (
	// QueueContainer runs the group's containers once per item.
	QueueContainer QueueMode = "container"
	// QueuePull lets long-running workers lease items over the downward
	// API.
	QueuePull QueueMode = "pull"
)

// Queue defaults and limits.
const (
	DefaultQueueParallelism = 1
	DefaultMaxAttempts      = 3
	DefaultQueueBackoff     = Duration(time.Second)
	DefaultQueueMaxBackoff  = Duration(time.Minute)
	DefaultVisibility       = Duration(30 * time.Second)
	DefaultMaxItemSize      = ByteSize(256 << 10)

	// MaxQueueParallelism bounds parallelism.
	MaxQueueParallelism = 10000
	// MaxQueueAttempts bounds max_attempts.
	MaxQueueAttempts = 100
	// MinVisibility and MaxVisibility bound visibility_timeout (and a
	// worker's own visibility when it leases).
	MinVisibility = Duration(time.Second)
	MaxVisibility = Duration(12 * time.Hour)
	// MaxQueueItemSize bounds max_item_size: items live in the Raft log
	// and in every agent's memory.
	MaxQueueItemSize = ByteSize(1 << 20)
)

// EffectiveName is Name, or group when it is empty.
func (q *QueueSpec) EffectiveName(group string) string { return orDefault(q.Name, group) }

// EffectiveParallelism is Parallelism with its default for the mode; 0
// means no cap.
func (q *QueueSpec) EffectiveParallelism() int {
	if q.Parallelism == 0 && q.Mode != QueuePull {
		return DefaultQueueParallelism
	}
	return q.Parallelism
}

// EffectiveMaxAttempts is MaxAttempts with its default.
func (q *QueueSpec) EffectiveMaxAttempts() int { return orDefault(q.MaxAttempts, DefaultMaxAttempts) }

// EffectiveBackoff is Backoff with its default.
func (q *QueueSpec) EffectiveBackoff() Duration { return orDefault(q.Backoff, DefaultQueueBackoff) }

// EffectiveMaxBackoff is MaxBackoff with its default.
func (q *QueueSpec) EffectiveMaxBackoff() Duration {
	return orDefault(q.MaxBackoff, DefaultQueueMaxBackoff)
}

// EffectiveVisibility is VisibilityTimeout with its default.
func (q *QueueSpec) EffectiveVisibility() Duration {
	return orDefault(q.VisibilityTimeout, DefaultVisibility)
}

// EffectiveMaxItemSize is MaxItemSize with its default.
func (q *QueueSpec) EffectiveMaxItemSize() ByteSize {
	return orDefault(q.MaxItemSize, DefaultMaxItemSize)
}

// RetryDelay is the delay before the next attempt of an item that failed
// its attempt-th attempt (1 for the first): Backoff·2^(attempt-1), at
// most MaxBackoff.
func (q *QueueSpec) RetryDelay(attempt int) time.Duration {
	d, hi := q.EffectiveBackoff().D(), q.EffectiveMaxBackoff().D()
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// setDefaults fills every default but Parallelism, whose zero means "no
// cap" in pull mode.
func (q *QueueSpec) setDefaults(group string) {
	q.Name = q.EffectiveName(group)
	if q.Mode == QueueContainer {
		q.Parallelism = q.EffectiveParallelism()
	}
	q.MaxAttempts = q.EffectiveMaxAttempts()
	q.Backoff = q.EffectiveBackoff()
	q.MaxBackoff = q.EffectiveMaxBackoff()
	q.VisibilityTimeout = q.EffectiveVisibility()
	q.MaxItemSize = q.EffectiveMaxItemSize()
}

// setCoordDefaults fills the defaults of [[lease]] and [queue]
// (SetDefaults calls it).
func (g *GroupSpec) setCoordDefaults() {
	for i := range g.Leases {
		g.Leases[i].setDefaults()
	}
	if g.Queue != nil {
		g.Queue.setDefaults(g.Name)
	}
}

var queueModes = []string{string(QueueContainer), string(QueuePull)}

// queue checks [queue]: a name, a mode, and numbers within their limits.
func (v *validator) queue(g *GroupSpec) {
	q := g.Queue
	if q == nil {
		return
	}
	if q.Name != "" {
		if msg := nameProblem(q.Name, "queue"); msg != "" {
			v.add("queue.name", "%s", msg)
		}
	}
	switch q.Mode {
	case QueueContainer, QueuePull:
	case "":
		v.add("queue", "the queue needs a mode: add mode = \"container\" (the group's containers run once per item) or mode = \"pull\" (the group's workers lease items over the downward API)")
	default:
		msg := fmt.Sprintf("%q is not a queue mode: use \"container\" (the group's containers run once per item) or \"pull\" (the group's workers lease items over the downward API)", q.Mode)
		if s := closest(string(q.Mode), queueModes); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		v.add("queue.mode", "%s", msg)
	}
	switch {
	case q.Parallelism < 0:
		v.add("queue.parallelism", "parallelism must not be negative: leave it out for the default")
	case q.Parallelism > MaxQueueParallelism:
		v.add("queue.parallelism", "parallelism %d is more than the maximum of %d", q.Parallelism, MaxQueueParallelism)
	}
	switch {
	case q.MaxAttempts < 0:
		v.add("queue.max_attempts", "max_attempts must be at least 1: leave it out for the default %d", DefaultMaxAttempts)
	case q.MaxAttempts > MaxQueueAttempts:
		v.add("queue.max_attempts", "max_attempts %d is more than the maximum of %d", q.MaxAttempts, MaxQueueAttempts)
	}
	if q.Backoff >= 0 && q.MaxBackoff >= 0 {
		if b, hi := q.EffectiveBackoff(), q.EffectiveMaxBackoff(); hi < b {
			v.add(v.written("queue.max_backoff", "queue.backoff"),
				"max_backoff %s is shorter than backoff %s: the delay starts at backoff and doubles up to max_backoff; raise max_backoff or lower backoff", hi, b)
		}
	}
	if t := q.VisibilityTimeout; t != 0 && (t < MinVisibility || t > MaxVisibility) {
		v.add("queue.visibility_timeout", "visibility_timeout %s is out of range: use %s to %s; the default is %s",
			t, MinVisibility, time.Duration(MaxVisibility), DefaultVisibility)
	}
	switch s := q.MaxItemSize; {
	case s < 0:
		v.add("queue.max_item_size", "max_item_size must not be negative")
	case s > MaxQueueItemSize:
		v.add("queue.max_item_size", "max_item_size %s is more than the maximum of %s: items live in the Raft log; store large inputs elsewhere and queue references to them", s, MaxQueueItemSize)
	}
}

// Validate checks a queue definition that did not come from a group file
// (raftstore checks every CmdPutQueue with it); group is the group that
// defines it. It returns nil or an ErrorList.
func (q *QueueSpec) Validate(group string) error {
	v := &validator{}
	g := GroupSpec{Name: group, Queue: q}
	v.queue(&g)
	if len(v.errs) == 0 {
		return nil
	}
	return finish(v.errs, nil, "", group, nil)
}
