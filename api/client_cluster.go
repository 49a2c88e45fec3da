package api

import (
	"context"
	"net/http"
	"net/url"
)

// ClusterGroups lists the cluster groups with their allocations.
func (c *Client) ClusterGroups(ctx context.Context) ([]ClusterGroup, error) {
	var out []ClusterGroup
	if err := c.call(ctx, http.MethodGet, PathClusterGroups, nil, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// ClusterGroup returns one cluster group with its spec.
func (c *Client) ClusterGroup(ctx context.Context, name string) (*ClusterGroup, error) {
	var out ClusterGroup
	if err := c.call(ctx, http.MethodGet, PathClusterGroups+"/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Scale changes a cluster group's replica count, or one shard's.
func (c *Client) Scale(ctx context.Context, name string, req ScaleRequest) (*ClusterGroup, error) {
	var out ClusterGroup
	if err := c.call(ctx, http.MethodPost, PathClusterGroups+"/"+url.PathEscape(name)+"/scale", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Members lists the agents of the cluster.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	if err := c.call(ctx, http.MethodGet, PathClusterMembers, nil, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Raft returns the agent's view of Raft.
func (c *Client) Raft(ctx context.Context) (*RaftInfo, error) {
	var out RaftInfo
	if err := c.call(ctx, http.MethodGet, PathClusterRaft, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DrainNode asks the scheduler to move a node's allocations away (drain
// true) or to use the node again (false).
func (c *Client) DrainNode(ctx context.Context, node string, drain bool) (*Member, error) {
	op := "/drain"
	if !drain {
		op = "/undrain"
	}
	var out Member
	if err := c.call(ctx, http.MethodPost, PathClusterNodes+"/"+url.PathEscape(node)+op, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RaftSnapshot makes the agent take a Raft snapshot now.
func (c *Client) RaftSnapshot(ctx context.Context) (*RaftInfo, error) {
	var out RaftInfo
	if err := c.call(ctx, http.MethodPost, PathClusterRaft+"/snapshot", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
