package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// request is what the fake agent saw of one request.
type request struct {
	Method      string
	Path        string // escaped
	Query       url.Values
	ContentType string
	Body        string
}

// serveUnix serves h on a unix socket in a temporary directory and returns
// a client for it.
func serveUnix(t *testing.T, h http.Handler) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return NewClient(sock)
}

// recordingAgent answers every request with status and body and records
// the last request.
func recordingAgent(t *testing.T, status int, body string) (*Client, *request) {
	t.Helper()
	var got request
	c := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = request{
			Method:      r.Method,
			Path:        r.URL.EscapedPath(),
			Query:       r.URL.Query(),
			ContentType: r.Header.Get("Content-Type"),
			Body:        string(b),
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	return c, &got
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Fatalf("bad JSON %q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func collectLogs(opts LogOptions) func(context.Context, *Client) (any, error) {
	return func(ctx context.Context, c *Client) (any, error) {
		var out []LogEntry
		err := c.Logs(ctx, "web", opts, func(e LogEntry) error { out = append(out, e); return nil })
		return out, err
	}
}

func TestClientSendsRequestsAsTheContractSays(t *testing.T) {
	const ndjsonLogs = `{"time":"2024-05-01T10:00:00Z","stream":"stdout","container":"app","line":"a"}
{"time":"2024-05-01T10:00:01Z","stream":"stderr","container":"app","line":"b"}
`
	tests := []struct {
		name     string
		call     func(ctx context.Context, c *Client) (any, error)
		status   int
		response string

		method, path string
		query        url.Values
		ctype        string
		body         string // JSON, or raw when ctype is not JSON
		want         string // the result as JSON; "" when there is none
	}{
		{
			name:     "Version",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Version(ctx) },
			response: `{"version":"1.2.3","go_version":"go1.26","node":"n1","containerd_ok":true}`,
			method:   "GET", path: "/v1/version",
			want: `{"version":"1.2.3","go_version":"go1.26","node":"n1","containerd_ok":true}`,
		},
		{
			name:     "Node",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Node(ctx) },
			response: `{"name":"n1","allocatable":{"cpu":"4","memory":8589934592,"pids":4096},"allocated":{"cpu":"1500m","memory":536870912,"pids":200},"free":{"cpu":"2500m","memory":8053063680,"pids":3896},"memory_available":6442450944,"pressure":"memory","admitted":3,"pending":1,"evicted":2}`,
			method:   "GET", path: "/v1/node",
			want: `{"name":"n1","allocatable":{"cpu":"4","memory":8589934592,"pids":4096},"allocated":{"cpu":"1500m","memory":536870912,"pids":200},"free":{"cpu":"2500m","memory":8053063680,"pids":3896},"memory_available":6442450944,"pressure":"memory","admitted":3,"pending":1,"evicted":2}`,
		},
		{
			name: "Apply",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Apply(ctx, ApplyRequest{Files: []ApplyFile{{Name: "web.toml", Content: "name = \"web\"\n"}}, DryRun: true})
			},
			response: `[{"group":"web","action":"created","generation":1}]`,
			method:   "POST", path: "/v1/apply", ctype: "application/json",
			body: `{"files":[{"name":"web.toml","content":"name = \"web\"\n"}],"dry_run":true}`,
			want: `[{"group":"web","action":"created","generation":1}]`,
		},
		{
			name:     "List",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.List(ctx) },
			response: `[{"name":"web","state":"Running","priority":5,"generation":2,"source":"api","restarts":0,"created_at":"2024-05-01T10:00:00Z","containers":[]}]`,
			method:   "GET", path: "/v1/groups",
			want: `[{"name":"web","state":"Running","priority":5,"generation":2,"source":"api","restarts":0,"ready":false,"created_at":"2024-05-01T10:00:00Z","containers":[]}]`,
		},
		{
			name:     "Get",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Get(ctx, "web") },
			response: `{"name":"web","state":"Stopped","priority":0,"generation":1,"source":"api","restarts":0,"created_at":"2024-05-01T10:00:00Z","containers":[],"events":[{"seq":1,"time":"2024-05-01T10:00:00Z","type":"Normal","reason":"Stopped","message":"m"}]}`,
			method:   "GET", path: "/v1/groups/web",
			want: `{"name":"web","state":"Stopped","priority":0,"generation":1,"source":"api","restarts":0,"ready":false,"created_at":"2024-05-01T10:00:00Z","containers":[],"events":[{"seq":1,"time":"2024-05-01T10:00:00Z","type":"Normal","reason":"Stopped","message":"m"}]}`,
		},
		{
			name:   "Delete waits",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Delete(ctx, "web", true) },
			method: "DELETE", path: "/v1/groups/web", query: url.Values{"wait": {"1"}},
		},
		{
			name:   "Delete without waiting",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Delete(ctx, "web", false) },
			status: http.StatusAccepted, method: "DELETE", path: "/v1/groups/web",
		},
		{
			name:   "Stop waits",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Stop(ctx, "web", true) },
			method: "POST", path: "/v1/groups/web/stop", query: url.Values{"wait": {"1"}},
		},
		{
			name:   "Stop without waiting",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Stop(ctx, "web", false) },
			method: "POST", path: "/v1/groups/web/stop",
		},
		{
			name:     "Start",
			call:     func(ctx context.Context, c *Client) (any, error) { return nil, c.Start(ctx, "web") },
			response: `{"name":"web"}`,
			method:   "POST", path: "/v1/groups/web/start",
		},
		{
			name:     "group names are escaped in paths",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Get(ctx, "a/b c") },
			response: `{"name":"a/b c"}`,
			method:   "GET", path: "/v1/groups/a%2Fb%20c",
			want: `{"name":"a/b c","state":"","priority":0,"generation":0,"source":"","restarts":0,"ready":false,"created_at":"0001-01-01T00:00:00Z","containers":null}`,
		},
		{
			name:     "Images",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Images(ctx) },
			response: `[{"name":"nginx:1","digest":"sha256:aa","size":10}]`,
			method:   "GET", path: "/v1/images",
			want: `[{"name":"nginx:1","digest":"sha256:aa","size":10}]`,
		},
		{
			name: "PullImage",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.PullImage(ctx, "docker.io/library/nginx:1.25")
			},
			response: `{"name":"docker.io/library/nginx:1.25","digest":"sha256:bb","size":20}`,
			method:   "POST", path: "/v1/images/pull", query: url.Values{"ref": {"docker.io/library/nginx:1.25"}},
			want: `{"name":"docker.io/library/nginx:1.25","digest":"sha256:bb","size":20}`,
		},
		{
			name: "ImportImage",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ImportImage(ctx, "local/app:1", strings.NewReader("archive bytes"))
			},
			response: `[{"name":"local/app:1","digest":"sha256:cc","size":13}]`,
			method:   "POST", path: "/v1/images/import", query: url.Values{"name": {"local/app:1"}},
			ctype: "application/octet-stream", body: "archive bytes",
			want: `[{"name":"local/app:1","digest":"sha256:cc","size":13}]`,
		},
		{
			name: "ImportImage without a name",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ImportImage(ctx, "", strings.NewReader("x"))
			},
			response: `[]`,
			method:   "POST", path: "/v1/images/import",
			ctype: "application/octet-stream", body: "x",
			want: `[]`,
		},
		{
			name:     "Logs with every option",
			call:     collectLogs(LogOptions{Container: "app", Follow: true, Tail: 10, Since: "10m"}),
			response: ndjsonLogs,
			method:   "GET", path: "/v1/groups/web/logs",
			query: url.Values{"container": {"app"}, "follow": {"1"}, "tail": {"10"}, "since": {"10m"}},
			want:  `[{"time":"2024-05-01T10:00:00Z","stream":"stdout","container":"app","line":"a"},{"time":"2024-05-01T10:00:01Z","stream":"stderr","container":"app","line":"b"}]`,
		},
		{
			name:     "Logs tail -1 asks for everything",
			call:     collectLogs(LogOptions{Tail: -1}),
			response: ndjsonLogs,
			method:   "GET", path: "/v1/groups/web/logs",
			want: `[{"time":"2024-05-01T10:00:00Z","stream":"stdout","container":"app","line":"a"},{"time":"2024-05-01T10:00:01Z","stream":"stderr","container":"app","line":"b"}]`,
		},
		{
			name: "Events",
			call: func(ctx context.Context, c *Client) (any, error) {
				var out []Event
				err := c.Events(ctx, EventOptions{Group: "web", Follow: true}, func(e Event) error { out = append(out, e); return nil })
				return out, err
			},
			response: `{"seq":1,"time":"2024-05-01T10:00:00Z","type":"Normal","group":"web","reason":"Started","message":"m"}` + "\n",
			method:   "GET", path: "/v1/events", query: url.Values{"group": {"web"}, "follow": {"1"}},
			want: `[{"seq":1,"time":"2024-05-01T10:00:00Z","type":"Normal","group":"web","reason":"Started","message":"m"}]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status := tt.status
			if status == 0 {
				status = http.StatusOK
			}
			c, got := recordingAgent(t, status, tt.response)
			res, err := tt.call(context.Background(), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if got.Method != tt.method || got.Path != tt.path {
				t.Errorf("request = %s %s, want %s %s", got.Method, got.Path, tt.method, tt.path)
			}
			wantQuery := tt.query
			if wantQuery == nil {
				wantQuery = url.Values{}
			}
			if !reflect.DeepEqual(got.Query, wantQuery) {
				t.Errorf("query = %v, want %v", got.Query, wantQuery)
			}
			if got.ContentType != tt.ctype {
				t.Errorf("content type = %q, want %q", got.ContentType, tt.ctype)
			}
			switch {
			case tt.body == "" && got.Body != "":
				t.Errorf("body = %q, want none", got.Body)
			case tt.ctype == "application/json" && !jsonEqual(t, got.Body, tt.body):
				t.Errorf("body = %s, want %s", got.Body, tt.body)
			case tt.ctype != "application/json" && got.Body != tt.body:
				t.Errorf("body = %q, want %q", got.Body, tt.body)
			}
			if tt.want != "" {
				// Compare values, not bytes: decode want into the result's
				// type, so fields added to the wire types later do not
				// break this test.
				b, _ := json.Marshal(res)
				want := reflect.New(reflect.TypeOf(res))
				if err := json.Unmarshal([]byte(tt.want), want.Interface()); err != nil {
					t.Fatalf("want: %v", err)
				}
				wb, _ := json.Marshal(want.Elem().Interface())
				if !jsonEqual(t, string(b), string(wb)) {
					t.Errorf("result = %s, want %s", b, wb)
				}
			}
		})
	}
}

func TestClientMapsErrorBodiesToClasses(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		class   error // nil: no class
		message string
	}{
		{"invalid", 400, `{"error":"bad name","class":"invalid"}`, ErrInvalid, "bad name"},
		{"not found", 404, `{"error":"group \"x\" not found","class":"not_found"}`, ErrNotFound, `group "x" not found`},
		{"already exists", 409, `{"error":"exists","class":"already_exists"}`, ErrAlreadyExists, "exists"},
		{"conflict", 409, `{"error":"busy","class":"conflict"}`, ErrConflict, "busy"},
		{"unavailable", 503, `{"error":"containerd is down","class":"unavailable"}`, ErrUnavailable, "containerd is down"},
		{"not leader", 421, `{"error":"ask n2","class":"not_leader"}`, ErrNotLeader, "ask n2"},
		{"internal has no class", 500, `{"error":"boom","class":"internal"}`, nil, "boom"},
		{"body that is not JSON falls back to the status", 502, "upstream gone\n", ErrUnavailable, "agentd answered 502 Bad Gateway: upstream gone"},
		{"empty body falls back to the status", 404, "", ErrNotFound, "agentd answered 404 Not Found"},
	}
	sentinels := []error{ErrInvalid, ErrNotFound, ErrAlreadyExists, ErrConflict, ErrUnavailable, ErrNotLeader}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := recordingAgent(t, tt.status, tt.body)
			_, err := c.Get(context.Background(), "x")
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.message {
				t.Errorf("message = %q, want %q", err.Error(), tt.message)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tt.class) {
					t.Errorf("errors.Is(err, %v) = %v", s, errors.Is(err, s))
				}
			}
		})
	}
}

func TestClientReturnsDetailsAsErrorList(t *testing.T) {
	body := `{"error":"2 problems","class":"invalid","details":[
		{"file":"web.toml","line":3,"col":9,"group":"web","field":"priority","message":"bad priority"},
		{"file":"db.toml","line":7,"col":1,"group":"db","container":"pg","field":"container[0].image","message":"image is required"}]}`
	c, _ := recordingAgent(t, 400, body)
	_, err := c.Apply(context.Background(), ApplyRequest{})
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("err = %#v, want an ErrorList", err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Error("not ErrInvalid")
	}
	want := []string{
		`web.toml:3:9: group "web": priority: bad priority`,
		`db.toml:7:1: group "db", container "pg": container[0].image: image is required`,
	}
	if len(list) != len(want) {
		t.Fatalf("%d details, want %d", len(list), len(want))
	}
	for i := range want {
		if got := list[i].Error(); got != want[i] {
			t.Errorf("detail %d = %q, want %q", i, got, want[i])
		}
	}
}

func TestClientDetailsKeepANonInvalidClass(t *testing.T) {
	c, _ := recordingAgent(t, 409, `{"error":"x","class":"conflict","details":[{"message":"port taken"}]}`)
	_, err := c.Apply(context.Background(), ApplyRequest{})
	var list ErrorList
	if !errors.As(err, &list) || !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v: want an ErrorList that is ErrConflict", err)
	}
}

func TestClientUnreachableAgentIsUnavailable(t *testing.T) {
	dir := t.TempDir()
	refused := filepath.Join(dir, "refused")
	ln, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the socket file stays; nothing listens: ECONNREFUSED

	for name, sock := range map[string]string{
		"socket missing": filepath.Join(dir, "missing"),
		"refused":        refused,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewClient(sock).Version(context.Background())
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			prefix := "cannot reach agentd at " + sock + ": is agentd running? ("
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message = %q, want prefix %q", err.Error(), prefix)
			}
		})
	}
}

func TestClientCancelledContextIsNotUnavailable(t *testing.T) {
	c := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.List(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want DeadlineExceeded only", err)
	}
}

func TestClientStreams(t *testing.T) {
	lines := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(`{"seq":` + string(rune('1'+i)) + `,"type":"Normal","reason":"R","message":"m"}` + "\n")
		}
		return b.String()
	}
	tests := []struct {
		name     string
		body     string
		stopAt   int // fn fails on this event (1-based); 0 never
		wantSeqs []uint64
		wantErr  string
		// unavailable: the error must be ErrUnavailable (the stream broke)
		unavailable bool
	}{
		{name: "ndjson", body: lines(3), wantSeqs: []uint64{1, 2, 3}},
		{name: "json array", body: `[{"seq":1},{"seq":2}]`, wantSeqs: []uint64{1, 2}},
		{name: "empty array", body: `[]`},
		{name: "empty body", body: ``},
		{name: "fn error stops the stream", body: lines(3), stopAt: 2, wantSeqs: []uint64{1, 2}, wantErr: "stop here"},
		{name: "truncated value", body: `{"seq":1}` + "\n" + `{"seq":`, wantSeqs: []uint64{1}, wantErr: "lost connection to agentd at ", unavailable: true},
		{name: "garbage", body: `{"seq":1}` + "\n" + `<html>`, wantSeqs: []uint64{1}, wantErr: "read stream from agentd: invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := recordingAgent(t, 200, tt.body)
			var seqs []uint64
			err := c.Events(context.Background(), EventOptions{}, func(e Event) error {
				seqs = append(seqs, e.Seq)
				if len(seqs) == tt.stopAt {
					return errors.New("stop here")
				}
				return nil
			})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrUnavailable) != tt.unavailable {
				t.Errorf("errors.Is(%v, ErrUnavailable) = %v", err, !tt.unavailable)
			}
			if !reflect.DeepEqual(seqs, tt.wantSeqs) {
				t.Errorf("seqs = %v, want %v", seqs, tt.wantSeqs)
			}
		})
	}
}

func TestClientFollowEndsWhenContextIsCancelled(t *testing.T) {
	c := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ContentTypeNDJSON)
		io.WriteString(w, `{"stream":"stdout","line":"first"}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []string
	err := c.Logs(ctx, "web", LogOptions{Follow: true, Tail: -1}, func(e LogEntry) error {
		got = append(got, e.Line)
		cancel() // the server keeps the stream open; only ctx ends it
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if !reflect.DeepEqual(got, []string{"first"}) {
		t.Errorf("lines = %q", got)
	}
}

func TestClientImportStreamsTheBody(t *testing.T) {
	// The second half is written only after the agent has read the first
	// half: a client that buffered the body before sending would deadlock.
	firstRead := make(chan struct{})
	c := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil || string(buf) != "first" {
			http.Error(w, `{"error":"bad first half","class":"invalid"}`, 400)
			return
		}
		close(firstRead)
		rest, _ := io.ReadAll(r.Body)
		io.WriteString(w, `[{"name":"`+string(buf)+string(rest)+`"}]`)
	}))
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "first")
		select {
		case <-firstRead:
			io.WriteString(pw, "-second")
			pw.Close()
		case <-time.After(5 * time.Second):
			pw.CloseWithError(errors.New("agent never saw the first half: body is buffered"))
		}
	}()
	imgs, err := c.ImportImage(context.Background(), "", pr)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != "first-second" {
		t.Errorf("images = %+v", imgs)
	}
}
