package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The coordination routes (coord.go). The lease and worker methods are
// for a client of a group's downward socket (NewClient on
// /run/berth/agent.sock inside the group); the queue methods also work on
// the admin socket.

// Leases lists the leases of the caller's group.
func (c *Client) Leases(ctx context.Context) ([]Lease, error) {
	var out []Lease
	if err := c.call(ctx, http.MethodGet, PathLeases, nil, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Lease returns who holds lease name. With wait > 0 it long-polls: the
// agent answers when the holder or the token differs from token, or when
// wait has passed.
func (c *Client) Lease(ctx context.Context, name string, wait time.Duration, token uint64) (*Lease, error) {
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}, "token": {strconv.FormatUint(token, 10)}}
	}
	var out Lease
	if err := c.call(ctx, http.MethodGet, leasePath(name, ""), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Campaign asks for lease name and returns it once granted (Held set);
// an ErrConflict error naming the holder when req.Timeout passes first.
func (c *Client) Campaign(ctx context.Context, name string, req CampaignRequest) (*Lease, error) {
	var out Lease
	if err := c.call(ctx, http.MethodPost, leasePath(name, "/campaign"), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Resign releases lease name if the caller holds it.
func (c *Client) Resign(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, leasePath(name, ""), nil, nil, nil)
}

// Queues lists the queues of the cluster.
func (c *Client) Queues(ctx context.Context) ([]QueueInfo, error) {
	var out []QueueInfo
	if err := c.call(ctx, http.MethodGet, PathQueues, nil, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Queue returns one queue and its progress.
func (c *Client) Queue(ctx context.Context, name string) (*QueueInfo, error) {
	var out QueueInfo
	if err := c.call(ctx, http.MethodGet, queuePath(name, ""), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Push adds items to queue name, all or none.
func (c *Client) Push(ctx context.Context, name string, items [][]byte) (*PushResponse, error) {
	var out PushResponse
	if err := c.call(ctx, http.MethodPost, queuePath(name, "/items"), nil, PushRequest{Items: items}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ItemFilter selects the items QueueItems lists: those in State (any when
// empty) with an ID above After, at most Limit (the agent's default when
// 0).
type ItemFilter struct {
	State ItemState
	After uint64
	Limit int
}

// QueueItems lists items of queue name, by ID.
func (c *Client) QueueItems(ctx context.Context, name string, f ItemFilter) ([]QueueItem, error) {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.After > 0 {
		q.Set("after", strconv.FormatUint(f.After, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []QueueItem
	if err := c.call(ctx, http.MethodGet, queuePath(name, "/items"), q, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// QueueItem returns one item with its data and result.
func (c *Client) QueueItem(ctx context.Context, name string, id uint64) (*QueueItem, error) {
	var out QueueItem
	if err := c.call(ctx, http.MethodGet, queuePath(name, "/items/"+strconv.FormatUint(id, 10)), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Retry puts dead letters of queue name back into it; no ids means every
// dead letter.
func (c *Client) Retry(ctx context.Context, name string, ids ...uint64) (*RetryResponse, error) {
	var out RetryResponse
	if err := c.call(ctx, http.MethodPost, queuePath(name, "/retry"), nil, RetryRequest{IDs: ids}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LeaseItems leases items of queue name for a pull worker.
func (c *Client) LeaseItems(ctx context.Context, name string, req LeaseRequest) (*LeaseResponse, error) {
	var out LeaseResponse
	if err := c.call(ctx, http.MethodPost, queuePath(name, "/lease"), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Ack completes leased items of queue name.
func (c *Client) Ack(ctx context.Context, name string, acks ...Ack) (*AckResponse, error) {
	var out AckResponse
	if err := c.call(ctx, http.MethodPost, queuePath(name, "/ack"), nil, AckRequest{Acks: acks}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Nack gives leased items of queue name back as failed.
func (c *Client) Nack(ctx context.Context, name string, nacks ...Nack) (*NackResponse, error) {
	var out NackResponse
	if err := c.call(ctx, http.MethodPost, queuePath(name, "/nack"), nil, NackRequest{Nacks: nacks}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Extend keeps leased items of queue name with the caller for longer.
func (c *Client) Extend(ctx context.Context, name string, req ExtendRequest) (*ExtendResponse, error) {
	var out ExtendResponse
	if err := c.call(ctx, http.MethodPost, queuePath(name, "/extend"), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func leasePath(name, suffix string) string {
	return PathLeases + "/" + url.PathEscape(name) + suffix
}

func queuePath(name, suffix string) string {
	return PathQueues + "/" + url.PathEscape(name) + suffix
}
