package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// DefaultSocket is where agentd listens unless configured otherwise.
const DefaultSocket = "/run/berth/agent.sock"

// maxErrorBody bounds how much of an error response the client reads.
const maxErrorBody = 1 << 20

// Client talks to agentd's admin API (routes.go) over its unix socket.
//
// Every method returns an error that errors.Is one of the error classes
// (ErrInvalid, ErrNotFound, …) when agentd answered with one; invalid input
// with positions comes back as an ErrorList. When agentd cannot be reached
// the error wraps ErrUnavailable.
//
// A Client is safe for concurrent use. It sets no timeout of its own: bound
// calls with the context (streams run until it is cancelled).
type Client struct {
	socket string
	// base is the URL prefix of every request: http://agentd over the
	// unix socket, https://host:port for a remote agent.
	base string
	http *http.Client
}

// NewClient returns a client for the agent listening on socketPath
// (DefaultSocket when empty).
func NewClient(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	dialer := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:       4,
		DisableCompression: true,
	}
	return &Client{socket: socketPath, base: "http://agentd", http: &http.Client{Transport: tr}}
}

// NewHTTPClient returns a client for an agent at baseURL (such as
// https://10.0.0.1:7948) reached through hc, which carries the TLS
// configuration.
func NewHTTPClient(baseURL string, hc *http.Client) *Client {
	return &Client{socket: baseURL, base: strings.TrimSuffix(baseURL, "/"), http: hc}
}

// Socket returns the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// LogOptions select the log lines Logs returns.
type LogOptions struct {
	// Container limits the lines to one container; empty means all.
	Container string
	// Follow keeps the stream open for new lines until ctx is done.
	Follow bool
	// Tail is how many of the last lines to send; -1 means all. The zero
	// value sends no old lines.
	Tail int
	// Since is an RFC 3339 time or a duration ("10m") before now.
	Since string
}

// EventOptions select the events Events returns.
type EventOptions struct {
	// Group limits the events to one group; empty means all.
	Group string
	// Follow keeps the stream open for new events until ctx is done.
	Follow bool
}

// Version returns the agent's version information.
func (c *Client) Version(ctx context.Context) (*VersionInfo, error) {
	var v VersionInfo
	if err := c.call(ctx, http.MethodGet, PathVersion, nil, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Node returns the node's capacity and what the admitted groups use of it.
func (c *Client) Node(ctx context.Context) (*NodeStatus, error) {
	var n NodeStatus
	if err := c.call(ctx, http.MethodGet, PathNode, nil, nil, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// Apply applies the files in req all together: either every group is
// applied or, when any file is invalid, none is and the error is an
// ErrorList.
func (c *Client) Apply(ctx context.Context, req ApplyRequest) ([]ApplyResult, error) {
	var res []ApplyResult
	if err := c.call(ctx, http.MethodPost, PathApply, nil, req, &res); err != nil {
		return nil, err
	}
	return res, nil
}

// List returns every group, without Spec and Events.
func (c *Client) List(ctx context.Context) ([]GroupStatus, error) {
	var res []GroupStatus
	if err := c.call(ctx, http.MethodGet, PathGroups, nil, nil, &res); err != nil {
		return nil, err
	}
	return res, nil
}

// Get returns one group with its Spec and recent Events.
func (c *Client) Get(ctx context.Context, name string) (*GroupStatus, error) {
	var g GroupStatus
	if err := c.call(ctx, http.MethodGet, groupPath(name, ""), nil, nil, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// Delete stops a group and removes it; with wait it returns once the group
// is gone.
func (c *Client) Delete(ctx context.Context, name string, wait bool) error {
	return c.call(ctx, http.MethodDelete, groupPath(name, ""), waitQuery(wait), nil, nil)
}

// Stop stops a group and keeps its definition; with wait it returns once
// the group is stopped.
func (c *Client) Stop(ctx context.Context, name string, wait bool) error {
	return c.call(ctx, http.MethodPost, groupPath(name, "/stop"), waitQuery(wait), nil, nil)
}

// Start starts a stopped group.
func (c *Client) Start(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodPost, groupPath(name, "/start"), nil, nil, nil)
}

// Logs calls fn for each log line of a group, in order, until the stream
// ends, ctx is done or fn returns an error (which Logs returns). fn runs on
// the caller's goroutine.
func (c *Client) Logs(ctx context.Context, group string, opts LogOptions, fn func(LogEntry) error) error {
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	if opts.Follow {
		q.Set("follow", "1")
	}
	if opts.Tail >= 0 {
		q.Set("tail", strconv.Itoa(opts.Tail))
	}
	if opts.Since != "" {
		q.Set("since", opts.Since)
	}
	resp, err := c.do(ctx, http.MethodGet, groupPath(group, "/logs"), q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeStream(ctx, c, resp.Body, fn)
}

// Events calls fn for each event, oldest first, until the stream ends, ctx
// is done or fn returns an error (which Events returns).
func (c *Client) Events(ctx context.Context, opts EventOptions, fn func(Event) error) error {
	q := url.Values{}
	if opts.Group != "" {
		q.Set("group", opts.Group)
	}
	if opts.Follow {
		q.Set("follow", "1")
	}
	resp, err := c.do(ctx, http.MethodGet, PathEvents, q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeStream(ctx, c, resp.Body, fn)
}

// Top returns the resource use of every running container.
func (c *Client) Top(ctx context.Context) ([]ContainerUsage, error) {
	var out []ContainerUsage
	if err := c.call(ctx, http.MethodGet, PathTop, nil, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Drain stops every group of the node, lowest priority first, and returns
// when they have stopped; the node stays drained until Undrain.
func (c *Client) Drain(ctx context.Context) (*NodeStatus, error) {
	var ns NodeStatus
	if err := c.call(ctx, http.MethodPost, PathNode+"/drain", nil, nil, &ns); err != nil {
		return nil, err
	}
	return &ns, nil
}

// Undrain lets the node's groups run again.
func (c *Client) Undrain(ctx context.Context) (*NodeStatus, error) {
	var ns NodeStatus
	if err := c.call(ctx, http.MethodPost, PathNode+"/undrain", nil, nil, &ns); err != nil {
		return nil, err
	}
	return &ns, nil
}

// Images lists the images in the agent's containerd namespace.
func (c *Client) Images(ctx context.Context) ([]ImageInfo, error) {
	var res []ImageInfo
	if err := c.call(ctx, http.MethodGet, PathImages, nil, nil, &res); err != nil {
		return nil, err
	}
	return res, nil
}

// ImportImage uploads an OCI or docker archive read from r, streaming it
// (r is not buffered and not closed). name, when set, names the image.
func (c *Client) ImportImage(ctx context.Context, name string, r io.Reader) ([]ImageInfo, error) {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	// NopCloser keeps the transport from closing the caller's reader and
	// hides any Len method, so the body is always sent chunked as read.
	resp, err := c.do(ctx, http.MethodPost, PathImages+"/import", q, io.NopCloser(r), "application/octet-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res []ImageInfo
	if err := decodeBody(resp, &res); err != nil {
		return nil, err
	}
	return res, nil
}

// PullImage pulls ref with the agent's registry credentials.
func (c *Client) PullImage(ctx context.Context, ref string) (*ImageInfo, error) {
	var img ImageInfo
	q := url.Values{"ref": {ref}}
	if err := c.call(ctx, http.MethodPost, PathImages+"/pull", q, nil, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

func groupPath(name, suffix string) string {
	return PathGroups + "/" + url.PathEscape(name) + suffix
}

func waitQuery(wait bool) url.Values {
	if !wait {
		return nil
	}
	return url.Values{"wait": {"1"}}
}

// call sends in (when not nil) as JSON and decodes the answer into out
// (when not nil).
func (c *Client) call(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, q, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	return decodeBody(resp, out)
}

// do sends a request and returns the response when it is a 2xx; any other
// answer becomes an error (see responseError).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json, "+ContentTypeNDJSON)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	return resp, nil
}

// transportError explains a failure to talk to agentd at all.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("request to agentd: %w", context.Cause(ctx))
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		cause := op.Err
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			return &unavailableError{
				msg: fmt.Sprintf("cannot reach agentd at %s: permission denied: run as root or as a member of the socket's group", c.socket),
				err: err,
			}
		}
		return &unavailableError{
			msg: fmt.Sprintf("cannot reach agentd at %s: is agentd running? (%v)", c.socket, cause),
			err: err,
		}
	}
	return &unavailableError{
		msg: fmt.Sprintf("lost connection to agentd at %s: %v", c.socket, unwrapURL(err)),
		err: err,
	}
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// unavailableError is a failure to reach agentd. It is an ErrUnavailable
// and also wraps the network error.
type unavailableError struct {
	msg string
	err error
}

func (e *unavailableError) Error() string   { return e.msg }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// statusError is a non-2xx answer that carries no field details.
type statusError struct {
	msg   string
	class error // nil when the class is unknown ("internal")
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.class }

// classedList is an ErrorList whose class is not ErrInvalid.
type classedList struct {
	list  ErrorList
	class error
}

func (e *classedList) Error() string   { return e.list.Error() }
func (e *classedList) Unwrap() []error { return []error{e.list, e.class} }

// responseError turns a non-2xx response into an error: an ErrorList when
// the body lists details, otherwise an error with the body's message that
// errors.Is its class.
func responseError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body ErrorBody
	if err := json.Unmarshal(data, &body); err != nil || (body.Error == "" && len(body.Details) == 0) {
		msg := bytes.TrimSpace(data)
		if len(msg) > 200 {
			msg = append(msg[:200:200], "…"...)
		}
		text := fmt.Sprintf("agentd answered %s", resp.Status)
		if len(msg) > 0 {
			text += ": " + string(msg)
		}
		return &statusError{msg: text, class: statusClass(resp.StatusCode)}
	}
	class := ClassError(body.Class)
	if class == nil && body.Class == "" {
		class = statusClass(resp.StatusCode)
	}
	if len(body.Details) > 0 {
		list := make(ErrorList, len(body.Details))
		for i := range body.Details {
			fe := body.Details[i]
			list[i] = &fe
		}
		if class == nil || class == ErrInvalid {
			return list
		}
		return &classedList{list: list, class: class}
	}
	msg := body.Error
	if msg == "" {
		msg = resp.Status
	}
	return &statusError{msg: msg, class: class}
}

// statusClass guesses the class of an answer that has no ErrorBody.
func statusClass(status int) error {
	switch status {
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return ErrUnavailable
	case http.StatusMisdirectedRequest:
		return ErrNotLeader
	}
	return nil
}

func decodeBody(resp *http.Response, out any) error {
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}

// decodeStream reads either a JSON array or newline-delimited JSON values
// from r and calls fn for each, in order.
func decodeStream[T any](ctx context.Context, c *Client, r io.Reader, fn func(T) error) error {
	br := bufio.NewReader(r)
	first, err := peekNonSpace(br)
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return c.streamError(ctx, err)
	}
	dec := json.NewDecoder(br)
	array := first == '['
	if array {
		if _, err := dec.Token(); err != nil {
			return c.streamError(ctx, err)
		}
	}
	for {
		if array && !dec.More() {
			return nil
		}
		var v T
		if err := dec.Decode(&v); err != nil {
			if err == io.EOF && !array {
				return nil
			}
			return c.streamError(ctx, err)
		}
		if err := fn(v); err != nil {
			return err
		}
	}
}

func peekNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return b, br.UnreadByte()
	}
}

// streamError explains why a stream ended early: ctx, a value agentd
// should not have sent, or the connection breaking (agentd exiting).
func (c *Client) streamError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syntax) || errors.As(err, &typ) {
		return fmt.Errorf("read stream from agentd: %w", err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("stream ended mid-value")
	}
	return &unavailableError{
		msg: fmt.Sprintf("lost connection to agentd at %s: %v", c.socket, err),
		err: err,
	}
}
