package agent

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// The worker routes of the queue API (queues.go): lease, ack, nack and
// extend, shared by pull workers (downward socket), programs (admin
// socket) and the container-mode worker (queue_worker.go).

func (a *Agent) handleItemLease(w http.ResponseWriter, r *http.Request, q raftstore.Queue, caller queueCaller) {
	var req api.LeaseRequest
	if err := decodeBody(w, r, 1<<16, "lease from "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case req.Max < 0 || req.Max > raftstore.MaxItemBatch:
		writeError(w, fmt.Errorf("lease from %s: max %d: want 1 to %d: %w", q.Name, req.Max, raftstore.MaxItemBatch, api.ErrInvalid))
		return
	case req.Visibility != 0 && (req.Visibility < api.MinVisibility || req.Visibility > api.MaxVisibility):
		writeError(w, fmt.Errorf("lease from %s: visibility %s: want %s to %s: %w", q.Name, req.Visibility, api.MinVisibility, api.MaxVisibility, api.ErrInvalid))
		return
	case req.Wait < 0 || req.Wait.D() > maxItemLeaseWait:
		writeError(w, fmt.Errorf("lease from %s: wait %s: want 0 to %s: %w", q.Name, req.Wait, maxItemLeaseWait, api.ErrInvalid))
		return
	}
	worker := req.Worker
	if worker == "" {
		worker = caller.worker
	}
	items, err := a.leaseItems(r.Context(), q.Name, worker, req.Max, req.Visibility.D(), req.Wait.D())
	if err != nil {
		writeError(w, err)
		return
	}
	res := api.LeaseResponse{Items: []api.LeasedItem{}}
	for _, it := range items {
		res.Items = append(res.Items, it.Leased())
	}
	writeJSON(w, http.StatusOK, res)
}

// leaseItems leases up to max items of queue to worker on this node,
// waiting up to wait for one to be ready.
func (a *Agent) leaseItems(ctx context.Context, queue, worker string, max int, vis, wait time.Duration) ([]raftstore.QueueItem, error) {
	deadline := time.Now().Add(wait)
	var watch <-chan uint64
	if wait > 0 {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		watch = a.cl.store.Watch(wctx)
	}
	for {
		if _, ok := a.cl.store.Queue(queue); !ok {
			return nil, queueNotFound(queue)
		}
		if a.leaseWorthTrying(queue) {
			idx, err := a.propose(ctx, raftstore.CmdLeaseItem, raftstore.LeaseItem{
				Queue: queue, Worker: worker, Node: a.cfg.NodeName, Now: time.Now(), Max: max, Visibility: vis})
			if err != nil {
				return nil, a.queueWriteError(queue, err)
			}
			if items := a.cl.store.LeasedItems(queue, idx); len(items) > 0 {
				return items, nil
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		t := time.NewTimer(min(left, leasePoke))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-watch:
		case <-t.C:
		}
		t.Stop()
	}
}

// leaseWorthTrying says whether a lease command may hand out an item:
// one is ready and the parallelism leaves room, or, at most every
// leasePoke, leases may have expired or backoffs ended (which only a lease
// command finds out).
func (a *Agent) leaseWorthTrying(queue string) bool {
	st, ok := a.cl.store.QueueStats(queue)
	q, qok := a.cl.store.Queue(queue)
	if !ok || !qok {
		return true // the command says what is wrong
	}
	capped := q.Spec.EffectiveParallelism() > 0 && st.Leased >= q.Spec.EffectiveParallelism()
	if st.Queued-st.Delayed > 0 && !capped {
		return true
	}
	if st.Delayed == 0 && st.Leased == 0 {
		return false
	}
	qs := a.queueState()
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if time.Since(qs.lastPoke[queue]) < leasePoke {
		return false
	}
	qs.lastPoke[queue] = time.Now()
	return true
}

func (a *Agent) handleAck(w http.ResponseWriter, r *http.Request, q raftstore.Queue, caller queueCaller) {
	var req api.AckRequest
	if err := decodeBody(w, r, maxWorkerBody, "ack in "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	acks := make([]raftstore.ItemAck, len(req.Acks))
	for i, ak := range req.Acks {
		acks[i] = raftstore.ItemAck{ID: ak.ID, Token: ak.Token, Result: ak.Result, Node: a.cfg.NodeName, Worker: caller.worker}
		if it, ok := a.cl.store.Item(q.Name, ak.ID); ok && it.LeaseToken == ak.Token {
			acks[i].Attempt = it.Attempts
		}
	}
	res, err := a.ackItems(r.Context(), q, acks)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// ackItems completes items and says, for each, whether this ack recorded
// the completion.
func (a *Agent) ackItems(ctx context.Context, q raftstore.Queue, acks []raftstore.ItemAck) (api.AckResponse, error) {
	if len(acks) == 0 || len(acks) > raftstore.MaxItemBatch {
		return api.AckResponse{}, fmt.Errorf("ack in %s: %d acks: want 1 to %d: %w", q.Name, len(acks), raftstore.MaxItemBatch, api.ErrInvalid)
	}
	limit := q.Spec.EffectiveMaxItemSize()
	for _, ak := range acks {
		if err := a.checkToken(q.Name, ak.ID, ak.Token); err != nil {
			return api.AckResponse{}, err
		}
		if api.ByteSize(len(ak.Result)) > limit {
			return api.AckResponse{}, fmt.Errorf("ack in %s: the result of item %d is %s, more than the queue's max_item_size of %s: keep large results elsewhere and return a reference: %w",
				q.Name, ak.ID, sizeString(len(ak.Result)), sizeString(int(limit)), api.ErrInvalid)
		}
	}
	idx, _, err := a.queueState().ack.submit(ctx, q.Name, acks)
	if err != nil {
		return api.AckResponse{}, a.queueWriteError(q.Name, err)
	}
	res := api.AckResponse{Results: make([]api.AckResult, len(acks))}
	for i, ak := range acks {
		res.Results[i] = api.AckResult{ID: ak.ID, Outcome: api.AckDuplicate}
		if it, ok := a.cl.store.Item(q.Name, ak.ID); ok && it.DoneIndex == idx && it.DoneToken == ak.Token {
			res.Results[i].Outcome = api.AckDone
		}
	}
	// Within one request, only the first ack of an item records it.
	seen := map[uint64]bool{}
	for i := range res.Results {
		if seen[res.Results[i].ID] {
			res.Results[i].Outcome = api.AckDuplicate
		}
		seen[res.Results[i].ID] = true
	}
	return res, nil
}

// checkToken refuses an ack, nack or extension of an item that does not
// exist, or with a token that was never one of its leases.
func (a *Agent) checkToken(queue string, id, token uint64) error {
	if id == 0 || token == 0 {
		return fmt.Errorf("queue %s: item %d, token %d: both must be set (they come with the lease): %w", queue, id, token, api.ErrInvalid)
	}
	it, ok := a.cl.store.Item(queue, id)
	if !ok {
		return itemNotFound(queue, id)
	}
	if token > it.LeaseToken || token < it.EnqueueIndex {
		return fmt.Errorf("queue %s: item %d was never leased with token %d (its last lease is %d): %w", queue, id, token, it.LeaseToken, api.ErrConflict)
	}
	return nil
}

func (a *Agent) handleNack(w http.ResponseWriter, r *http.Request, q raftstore.Queue, _ queueCaller) {
	var req api.NackRequest
	if err := decodeBody(w, r, maxWorkerBody, "nack in "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	nacks := make([]raftstore.ItemNack, len(req.Nacks))
	for i, n := range req.Nacks {
		nacks[i] = raftstore.ItemNack{ID: n.ID, Token: n.Token, Error: n.Error, Fatal: n.Fatal}
	}
	res, err := a.nackItems(r.Context(), q, nacks)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// nackItems fails leased items and says where each went.
func (a *Agent) nackItems(ctx context.Context, q raftstore.Queue, nacks []raftstore.ItemNack) (api.NackResponse, error) {
	if len(nacks) == 0 || len(nacks) > raftstore.MaxItemBatch {
		return api.NackResponse{}, fmt.Errorf("nack in %s: %d nacks: want 1 to %d: %w", q.Name, len(nacks), raftstore.MaxItemBatch, api.ErrInvalid)
	}
	for _, n := range nacks {
		if err := a.checkToken(q.Name, n.ID, n.Token); err != nil {
			return api.NackResponse{}, err
		}
	}
	idx, _, err := a.queueState().nack.submit(ctx, q.Name, nacks)
	if err != nil {
		return api.NackResponse{}, a.queueWriteError(q.Name, err)
	}
	res := api.NackResponse{Results: make([]api.NackResult, len(nacks))}
	for i, n := range nacks {
		it, _ := a.cl.store.Item(q.Name, n.ID)
		res.Results[i] = api.NackResult{ID: n.ID, State: it.State, NotBefore: it.NotBefore, Stale: it.Index != idx}
	}
	return res, nil
}

func (a *Agent) handleExtend(w http.ResponseWriter, r *http.Request, q raftstore.Queue, _ queueCaller) {
	var req api.ExtendRequest
	if err := decodeBody(w, r, maxWorkerBody, "extend in "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Visibility != 0 && (req.Visibility < api.MinVisibility || req.Visibility > api.MaxVisibility) {
		writeError(w, fmt.Errorf("extend in %s: visibility %s: want %s to %s: %w", q.Name, req.Visibility, api.MinVisibility, api.MaxVisibility, api.ErrInvalid))
		return
	}
	items := make([]raftstore.ItemToken, len(req.Items))
	for i, it := range req.Items {
		items[i] = raftstore.ItemToken{ID: it.ID, Token: it.Token}
	}
	res, err := a.extendItems(r.Context(), q, items, req.Visibility.D())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// extendItems keeps leased items with their worker for vis more (the
// queue's visibility timeout when 0).
func (a *Agent) extendItems(ctx context.Context, q raftstore.Queue, items []raftstore.ItemToken, vis time.Duration) (api.ExtendResponse, error) {
	if len(items) == 0 || len(items) > raftstore.MaxItemBatch {
		return api.ExtendResponse{}, fmt.Errorf("extend in %s: %d items: want 1 to %d: %w", q.Name, len(items), raftstore.MaxItemBatch, api.ErrInvalid)
	}
	for _, it := range items {
		if err := a.checkToken(q.Name, it.ID, it.Token); err != nil {
			return api.ExtendResponse{}, err
		}
	}
	idx, _, err := a.queueState().extend.submit(ctx, q.Name+" "+vis.String(), items)
	if err != nil {
		return api.ExtendResponse{}, a.queueWriteError(q.Name, err)
	}
	res := api.ExtendResponse{Results: make([]api.ExtendResult, len(items))}
	for i, t := range items {
		res.Results[i] = api.ExtendResult{ID: t.ID, Stale: true}
		if it, ok := a.cl.store.Item(q.Name, t.ID); ok && it.State == api.ItemLeased && it.LeaseToken == t.Token && it.Index == idx {
			res.Results[i] = api.ExtendResult{ID: t.ID, Expiry: it.LeaseExpiry}
		}
	}
	return res, nil
}
