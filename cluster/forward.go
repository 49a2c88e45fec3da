package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// PathRaftApply is the inter-agent route through which a follower hands a
// write to the leader: POST a raftstore.Command as JSON; the answer is
// {"index": N}, or an api.ErrorBody with "index" added when the FSM
// rejected the committed command. Only nodes may call it (PeerNode).
const PathRaftApply = "/v1/internal/raft/apply"

// maxCommandBytes bounds the body of a forwarded command.
const maxCommandBytes = 16 << 20

// maxAnswerBytes bounds how much of the leader's answer is read.
const maxAnswerBytes = 1 << 20

// pushTimeout bounds one Barrier of pushCommit.
const pushTimeout = 5 * time.Second

// Retry backoff while no leader is known or reachable: a Raft election on
// a LAN takes about one election timeout (0.5–1 s by default).
const (
	retryMin = 20 * time.Millisecond
	retryMax = 250 * time.Millisecond
)

// ProposeStore is what the Proposer needs of the local Raft member;
// *raftstore.Store satisfies it.
type ProposeStore interface {
	// Apply replicates cmd when this member leads, and returns a
	// *raftstore.NotLeaderError otherwise.
	Apply(ctx context.Context, cmd raftstore.Command) (uint64, error)
	// WaitIndex waits until this member applied idx.
	WaitIndex(ctx context.Context, idx uint64) error
	// Leader is the leader's ID and Raft address, empty while unknown.
	Leader() (id, addr string)
}

var _ ProposeStore = (*raftstore.Store)(nil)

// Proposer makes Raft writes from any agent: on the leader it applies
// them, on a follower it forwards them over the inter-agent API to the
// leader's Handler, and while there is no leader it retries until one is
// elected or the caller's ctx ends. Every agent uses it for every write
// and serves its Handler at PathRaftApply on the TLS listener.
//
// A Proposer is safe for concurrent use.
type Proposer struct {
	store     ProposeStore
	tls       *TLS
	leaderAPI func(leaderID string) (string, error)
	log       *slog.Logger

	mu      sync.Mutex
	clients map[string]*http.Client // by leader ID; each checks the leader's name
	pushing bool                    // a pushCommit barrier is under way
	again   bool                    // and another one is wanted after it
}

// commitPusher is a ProposeStore that can also append a barrier; Handler
// uses it to tell followers of a commit at once (pushCommit).
type commitPusher interface {
	Barrier(ctx context.Context) error
}

// NewProposer returns a Proposer over store. t is this agent's TLS
// identity, used to call the leader; nil (the embedded single-node
// default, no TLS configured) means writes are only ever applied locally.
// leaderAPI maps the leader's Raft ID (its node name) to the host:port of
// its inter-agent API, typically from memberlist metadata (Meta.APIAddr).
// log may be nil.
func NewProposer(store ProposeStore, t *TLS, leaderAPI func(leaderID string) (string, error), log *slog.Logger) *Proposer {
	if log == nil {
		log = slog.Default()
	}
	return &Proposer{store: store, tls: t, leaderAPI: leaderAPI, log: log, clients: map[string]*http.Client{}}
}

// Apply replicates cmd through the leader and returns its index once this
// agent applied it, so that the caller reads its own write. A command the
// FSM rejects returns the FSM's error, with its class (api.ErrNotFound,
// api.ErrInvalid, …) also when it came back from the leader, together with
// the index it was committed at.
//
// While no leader is known, or the known one cannot be reached (a dial
// fails: nothing was sent), Apply retries with a short backoff until ctx
// ends, then returns an api.ErrUnavailable error saying there is no Raft
// leader: bound ctx. When a forwarded request fails after it was sent,
// the outcome is unknown and Apply returns an api.ErrUnavailable error
// without retrying. A zero cmd.Time is set to this agent's clock before
// the command is sent.
func (p *Proposer) Apply(ctx context.Context, cmd raftstore.Command) (uint64, error) {
	if cmd.Time.IsZero() {
		cmd.Time = time.Now().UTC()
	}
	start := time.Now()
	delay := retryMin
	var why error // why the last attempt is being retried
	for {
		idx, err := p.store.Apply(ctx, cmd)
		var nle *raftstore.NotLeaderError
		if !errors.As(err, &nle) {
			return idx, err
		}
		switch {
		case nle.LeaderID == "":
			why = err
		case p.tls == nil:
			return 0, fmt.Errorf("%w (no TLS configured, so writes cannot be forwarded to the leader)", err)
		default:
			idx, retry, err := p.forward(ctx, nle.LeaderID, cmd)
			if !retry {
				return idx, err
			}
			why = err
		}
		p.log.Debug("raft write waits for a leader", "command", cmd.Type.String(), "reason", why, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("propose %s: no Raft leader after %s (%v): %w (%w)",
				cmd.Type, time.Since(start).Round(time.Millisecond), why, api.ErrUnavailable, context.Cause(ctx))
		}
		delay = min(2*delay, retryMax)
	}
}

// forward sends cmd to the leader's Handler and waits for the index it
// answers. retry is set when nothing was applied and trying again may
// succeed: the leader's address is not known yet, the dial failed, or
// leadership moved.
func (p *Proposer) forward(ctx context.Context, leaderID string, cmd raftstore.Command) (idx uint64, retry bool, err error) {
	addr, err := p.leaderAPI(leaderID)
	if err != nil {
		return 0, true, fmt.Errorf("leader %s: no API address: %w", leaderID, err)
	}
	if addr == "" {
		return 0, true, fmt.Errorf("leader %s: no API address known yet", leaderID)
	}
	where := fmt.Sprintf("leader %s at %s", leaderID, addr)
	body, err := json.Marshal(cmd)
	if err != nil {
		return 0, false, fmt.Errorf("forward %s to %s: encoding: %w", cmd.Type, where, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+PathRaftApply, bytes.NewReader(body))
	if err != nil {
		return 0, false, fmt.Errorf("forward %s to %s: %v: %w", cmd.Type, where, err, api.ErrInvalid)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client(leaderID).Do(req)
	if err != nil {
		var op *net.OpError
		switch {
		case ctx.Err() != nil:
			return 0, false, fmt.Errorf("forward %s to %s: %w (it may still be applied)", cmd.Type, where, context.Cause(ctx))
		case errors.As(err, &op) && op.Op == "dial":
			return 0, true, fmt.Errorf("forward %s to %s: %w", cmd.Type, where, op)
		case isTLSRefusal(err):
			return 0, false, fmt.Errorf("forward %s to %s: TLS: %v: %w", cmd.Type, where, unwrapURL(err), api.ErrUnavailable)
		}
		return 0, false, fmt.Errorf("forward %s to %s: %v: the outcome is unknown: %w", cmd.Type, where, unwrapURL(err), api.ErrUnavailable)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil && ctx.Err() != nil {
		return 0, false, fmt.Errorf("forward %s to %s: %w (it may still be applied)", cmd.Type, where, context.Cause(ctx))
	}
	var ans applyAnswer
	jerr := json.Unmarshal(data, &ans)
	if resp.StatusCode/100 == 2 {
		if err != nil || jerr != nil || ans.Index == 0 {
			return 0, false, fmt.Errorf("forward %s to %s: unreadable answer %q: the outcome is unknown: %w", cmd.Type, where, truncate(data), api.ErrUnavailable)
		}
		if err := p.store.WaitIndex(ctx, ans.Index); err != nil {
			return ans.Index, false, fmt.Errorf("forward %s: committed by %s at index %d, not applied here yet: %w", cmd.Type, where, ans.Index, err)
		}
		p.log.Debug("raft write forwarded", "command", cmd.Type.String(), "leader", leaderID, "index", ans.Index)
		return ans.Index, false, nil
	}
	ferr := &forwardError{msg: fmt.Sprintf("%s: %s", where, ans.Error), class: api.ClassError(ans.Class)}
	if jerr != nil || ans.Error == "" {
		// Not the Handler's answer (a proxy, an agent without the route).
		ferr = &forwardError{
			msg:   fmt.Sprintf("forward %s to %s: answered %s: %s", cmd.Type, where, resp.Status, truncate(data)),
			class: classOfStatus(resp.StatusCode),
		}
		ans.Index = 0
	}
	if ferr.class == api.ErrNotLeader {
		return 0, true, ferr
	}
	if ans.Index > 0 {
		// Rejected by the FSM, yet committed: like a local Apply, return
		// once this member is at that index too.
		if err := p.store.WaitIndex(ctx, ans.Index); err != nil {
			return ans.Index, false, errors.Join(ferr, err)
		}
	}
	return ans.Index, false, ferr
}

// client returns the HTTP client that talks to leader id, checking that
// the server's certificate is that node's.
func (p *Proposer) client(id string) *http.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.clients[id]
	if !ok {
		c = api.RemoteHTTPClient(p.tls.ClientFor(id))
		p.clients[id] = c
	}
	return c
}

// Handler serves PathRaftApply: it applies a command a follower forwarded
// on this agent's Raft member, which should be the leader. It answers
// 403 to anything but a node of the cluster (agentctl, plain connections),
// and a not_leader error (421) when leadership moved meanwhile, so that the
// follower retries with the new leader. It never forwards further.
//
// After a successful apply it pushes the commit to the followers when the
// store has a Barrier (as *raftstore.Store does): raft tells followers of
// a commit only with the next AppendEntries, which without new entries
// comes after CommitTimeout to twice that (50–100 ms by default), and the
// follower waits for it before its Apply returns. The barrier is such an
// entry; one is under way at a time, however many writes arrive.
func (p *Proposer) Handler() http.Handler { return http.HandlerFunc(p.serveApply) }

// applyAnswer is the body of PathRaftApply's answers.
type applyAnswer struct {
	Index uint64 `json:"index,omitempty"`
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
}

func (p *Proposer) serveApply(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeAnswer(w, http.StatusMethodNotAllowed, applyAnswer{
			Error: fmt.Sprintf("raft apply: method %s not allowed: use POST", r.Method), Class: "invalid"})
		return
	}
	peer, err := PeerNode(r.TLS)
	if err != nil {
		// No error class fits; api.Class would make it an internal error.
		writeAnswer(w, http.StatusForbidden, applyAnswer{
			Error: fmt.Sprintf("raft apply: only cluster nodes may propose writes here: %v", err), Class: "forbidden"})
		return
	}
	var cmd raftstore.Command
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBytes)).Decode(&cmd); err != nil {
		writeError(w, 0, fmt.Errorf("raft apply from %s: bad command: %v: %w", peer, err, api.ErrInvalid))
		return
	}
	idx, err := p.store.Apply(r.Context(), cmd)
	if err != nil {
		p.log.Debug("forwarded raft write failed", "from", peer, "command", cmd.Type.String(), "index", idx, "error", err)
		writeError(w, idx, err)
		return
	}
	writeAnswer(w, http.StatusOK, applyAnswer{Index: idx})
	p.pushCommit()
}

// pushCommit appends a barrier in the background so that raft sends the
// followers the new commit index now. Calls while one runs are coalesced
// into one more barrier after it (the running one may predate the write).
func (p *Proposer) pushCommit() {
	b, ok := p.store.(commitPusher)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pushing {
		p.again = true
		return
	}
	p.pushing = true
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
			if err := b.Barrier(ctx); err != nil {
				p.log.Debug("pushing a commit to the followers", "error", err)
			}
			cancel()
			p.mu.Lock()
			if !p.again {
				p.pushing = false
				p.mu.Unlock()
				return
			}
			p.again = false
			p.mu.Unlock()
		}
	}()
}

// writeError answers err with its class's status, and the index when the
// command was committed and then rejected by the FSM.
func writeError(w http.ResponseWriter, idx uint64, err error) {
	class, code := api.Class(err)
	writeAnswer(w, code, applyAnswer{Index: idx, Error: err.Error(), Class: class})
}

func writeAnswer(w http.ResponseWriter, code int, a applyAnswer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}

// forwardError is an error the leader answered, with its class.
type forwardError struct {
	msg   string
	class error // nil: internal
}

func (e *forwardError) Error() string { return e.msg }
func (e *forwardError) Unwrap() error { return e.class }

// classOfStatus guesses the class of an answer without a body, as the
// api client does.
func classOfStatus(status int) error {
	switch status {
	case http.StatusBadRequest:
		return api.ErrInvalid
	case http.StatusNotFound:
		return api.ErrNotFound
	case http.StatusConflict:
		return api.ErrConflict
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return api.ErrUnavailable
	case http.StatusMisdirectedRequest:
		return api.ErrNotLeader
	}
	return nil
}

// isTLSRefusal reports whether err is a failed TLS handshake: the server's
// certificate was refused here, or ours there (TLS 1.3 reports that as an
// alert on the first read).
func isTLSRefusal(err error) bool {
	var cv *tls.CertificateVerificationError
	var op *net.OpError
	return errors.As(err, &cv) || (errors.As(err, &op) && op.Op == "remote error")
}

func unwrapURL(err error) error {
	var u *url.Error
	if errors.As(err, &u) {
		return u.Err
	}
	return err
}

func truncate(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
