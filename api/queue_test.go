package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestQueueRules decodes base with a [queue] table added from line 35 on
// and asserts every error with its exact line and column.
func TestQueueRules(t *testing.T) {
	queue := func(lines ...string) []any { return ambassadorEdit(append([]string{"[queue]"}, lines...)...) }
	tests := []struct {
		name  string
		edits []any
		want  []wantErr
	}{
		{"container mode", queue(`mode = "container"`), nil},
		{"pull mode with every key", queue(`name = "jobs"`, `mode = "pull"`, "parallelism = 8", "max_attempts = 5",
			`backoff = "2s"`, `max_backoff = "30s"`, `visibility_timeout = "1m"`, `max_item_size = "1MiB"`), nil},
		{"max_item_size in bytes", queue(`mode = "pull"`, "max_item_size = 4096"), nil},

		{"mode is required", queue(`name = "jobs"`),
			[]wantErr{{35, 1, "queue", "", `the queue needs a mode: add mode = "container" (the group's containers run once per item) or mode = "pull"`}}},
		{"mode must be known", queue(`mode = "push"`),
			[]wantErr{{36, 1, "queue.mode", "", `"push" is not a queue mode: use "container" (the group's containers run once per item) or "pull"`}}},
		{"misspelled mode suggests the closest", queue(`mode = "containers"`),
			[]wantErr{{36, 1, "queue.mode", "", `did you mean "container"?`}}},
		{"name is a DNS label", queue(`name = "Jobs.Q"`, `mode = "pull"`),
			[]wantErr{{36, 1, "queue.name", "", `"Jobs.Q" is not a valid queue name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. "jobs-q"`}}},
		{"negative parallelism", queue(`mode = "pull"`, "parallelism = -1"),
			[]wantErr{{37, 1, "queue.parallelism", "", "parallelism must not be negative"}}},
		{"parallelism above the maximum", queue(`mode = "pull"`, "parallelism = 20000"),
			[]wantErr{{37, 1, "queue.parallelism", "", "parallelism 20000 is more than the maximum of 10000"}}},
		{"negative max_attempts", queue(`mode = "pull"`, "max_attempts = -2"),
			[]wantErr{{37, 1, "queue.max_attempts", "", "max_attempts must be at least 1: leave it out for the default 3"}}},
		{"max_attempts above the maximum", queue(`mode = "pull"`, "max_attempts = 1000"),
			[]wantErr{{37, 1, "queue.max_attempts", "", "max_attempts 1000 is more than the maximum of 100"}}},
		{"max_backoff below backoff", queue(`mode = "pull"`, `backoff = "2m"`),
			[]wantErr{{37, 1, "queue.backoff", "", "max_backoff 1m0s is shorter than backoff 2m0s: the delay starts at backoff and doubles up to max_backoff"}}},
		{"max_backoff below backoff, both written", queue(`mode = "pull"`, `backoff = "10s"`, `max_backoff = "5s"`),
			[]wantErr{{38, 1, "queue.max_backoff", "", "max_backoff 5s is shorter than backoff 10s"}}},
		{"visibility_timeout too short", queue(`mode = "pull"`, `visibility_timeout = "10ms"`),
			[]wantErr{{37, 1, "queue.visibility_timeout", "", "visibility_timeout 10ms is out of range: use 1s to 12h0m0s; the default is 30s"}}},
		{"visibility_timeout too long", queue(`mode = "pull"`, `visibility_timeout = "24h"`),
			[]wantErr{{37, 1, "queue.visibility_timeout", "", "visibility_timeout 24h0m0s is out of range"}}},
		{"max_item_size above the maximum", queue(`mode = "pull"`, `max_item_size = "2MiB"`),
			[]wantErr{{37, 1, "queue.max_item_size", "", "max_item_size 2MiB is more than the maximum of 1MiB: items live in the Raft log"}}},
		{"max_item_size that is not a size", queue(`mode = "pull"`, `max_item_size = "big"`),
			[]wantErr{{37, 1, "queue.max_item_size", "", `invalid size "big"`}}},
		{"backoff that is not a duration", queue(`mode = "pull"`, `backoff = "soon"`),
			[]wantErr{{37, 1, "queue.backoff", "", `invalid duration "soon"`}}},
		{"unknown key", queue(`mode = "pull"`, "max_attempt = 2"),
			[]wantErr{{37, 1, "queue.max_attempt", "", `unknown key "max_attempt"; did you mean "max_attempts"?`}}},
		{"queue written as an array of tables", ambassadorEdit("[[queue]]", `mode = "pull"`),
			[]wantErr{{35, 3, "queue", "", "wrong type: expected a table, found an array of tables; write it under a [queue] header"}}},
		{"several problems, each at its place", queue(`mode = "pul"`, "parallelism = -3", `visibility_timeout = "100h"`),
			[]wantErr{
				{36, 1, "queue.mode", "", `did you mean "pull"?`},
				{37, 1, "queue.parallelism", "", "must not be negative"},
				{38, 1, "queue.visibility_timeout", "", "out of range"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("web.toml", []byte(edit(t, base, tt.edits...)))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("valid file refused: %v", err)
				}
				return
			}
			checkErrors(t, err, tt.want...)
			if !strings.Contains(err.Error(), `group "web"`) {
				t.Errorf("error %q does not name the group", err)
			}
		})
	}
}

// TestQueueDecodesWithDefaults proves every key of [queue] reaches the
// spec and the effective config fills the defaults, per mode.
func TestQueueDecodesWithDefaults(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  QueueSpec
	}{
		{"container mode defaults", []string{`mode = "container"`}, QueueSpec{
			Name: "web", Mode: QueueContainer, Parallelism: 1, MaxAttempts: 3,
			Backoff: Duration(time.Second), MaxBackoff: Duration(time.Minute),
			VisibilityTimeout: Duration(30 * time.Second), MaxItemSize: 256 << 10,
		}},
		{"pull mode has no parallelism cap by default", []string{`mode = "pull"`}, QueueSpec{
			Name: "web", Mode: QueuePull, MaxAttempts: 3,
			Backoff: Duration(time.Second), MaxBackoff: Duration(time.Minute),
			VisibilityTimeout: Duration(30 * time.Second), MaxItemSize: 256 << 10,
		}},
		{"every key", []string{`name = "jobs"`, `mode = "pull"`, "parallelism = 8", "max_attempts = 5",
			`backoff = "2s"`, `max_backoff = "30s"`, `visibility_timeout = "1m"`, `max_item_size = "64KiB"`}, QueueSpec{
			Name: "jobs", Mode: QueuePull, Parallelism: 8, MaxAttempts: 5,
			Backoff: Duration(2 * time.Second), MaxBackoff: Duration(30 * time.Second),
			VisibilityTimeout: Duration(time.Minute), MaxItemSize: 64 << 10,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := edit(t, base, ambassadorEdit(append([]string{"[queue]"}, tt.lines...)...)...)
			g, err := Decode("web.toml", []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if g.Queue == nil || *g.Queue != tt.want {
				t.Fatalf("queue = %+v, want %+v", g.Queue, tt.want)
			}
			if err := g.Queue.Validate("web"); err != nil {
				t.Fatalf("the effective queue does not validate: %v", err)
			}
		})
	}
}

func TestQueueRetryDelayDoublesUpToTheCap(t *testing.T) {
	q := QueueSpec{Mode: QueuePull, Backoff: Duration(time.Second), MaxBackoff: Duration(10 * time.Second)}
	var got []time.Duration
	for attempt := 0; attempt <= 6; attempt++ {
		got = append(got, q.RetryDelay(attempt))
	}
	want := []time.Duration{time.Second, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("delays = %v, want %v", got, want)
	}
	var def QueueSpec
	if d := def.RetryDelay(100); d != time.Minute {
		t.Fatalf("default delay after 100 attempts = %s, want the 1m cap", d)
	}
}

func TestQueueSpecValidateWithoutAFile(t *testing.T) {
	q := QueueSpec{Name: "Bad Name", Mode: "batch", MaxItemSize: 4 << 20}
	err := q.Validate("web")
	var list ErrorList
	if !errors.As(err, &list) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate = %v, want an ErrorList", err)
	}
	want := []string{"queue.name", "queue.mode", "queue.max_item_size"}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, f := range want {
		if list[i].Field != f || list[i].Group != "web" || list[i].Line != 0 {
			t.Errorf("error %d = %+v, want field %s of group web", i, *list[i], f)
		}
	}
	if err := (&QueueSpec{Mode: QueueContainer}).Validate("web"); err != nil {
		t.Fatalf("a minimal queue is refused: %v", err)
	}
}

// TestCoordClientSendsRequestsAsTheContractSays checks the lease and queue
// client methods against the routes in coord.go.
func TestCoordClientSendsRequestsAsTheContractSays(t *testing.T) {
	tests := []struct {
		name         string
		call         func(ctx context.Context, c *Client) (any, error)
		response     string
		method, path string
		query        url.Values
		body         string
		want         string
	}{
		{
			name:     "Leases",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Leases(ctx) },
			response: `[{"name":"leader","holder":"web-0","node":"n1","token":12,"expiry":"2025-01-02T03:04:05Z"}]`,
			method:   "GET", path: "/v1/leases",
			want: `[{"name":"leader","holder":"web-0","node":"n1","token":12,"expiry":"2025-01-02T03:04:05Z"}]`,
		},
		{
			name:     "Lease long-polls",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Lease(ctx, "leader", 5*time.Second, 12) },
			response: `{"name":"leader","holder":"web-1","token":15}`,
			method:   "GET", path: "/v1/leases/leader", query: url.Values{"wait": {"5s"}, "token": {"12"}},
			want: `{"name":"leader","holder":"web-1","token":15}`,
		},
		{
			name: "Campaign",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Campaign(ctx, "shard-1", CampaignRequest{Timeout: Duration(10 * time.Second)})
			},
			response: `{"name":"shard-1","holder":"web-0","token":20,"held":true}`,
			method:   "POST", path: "/v1/leases/shard-1/campaign", body: `{"timeout":"10s"}`,
			want: `{"name":"shard-1","holder":"web-0","token":20,"held":true}`,
		},
		{
			name:   "Resign",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Resign(ctx, "leader") },
			method: "DELETE", path: "/v1/leases/leader",
		},
		{
			name:     "Queue",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Queue(ctx, "jobs") },
			response: `{"name":"jobs","group":"web","spec":{"mode":"pull"},"status":{"queued":3,"leased":1,"done":2,"dead":0,"total":6,"failed_attempts":1,"rate":0.5}}`,
			method:   "GET", path: "/v1/queues/jobs",
			want: `{"name":"jobs","group":"web","spec":{"mode":"pull"},"status":{"queued":3,"leased":1,"done":2,"dead":0,"total":6,"failed_attempts":1,"rate":0.5}}`,
		},
		{
			name: "Push",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Push(ctx, "jobs", [][]byte{[]byte("a"), []byte("bc")})
			},
			response: `{"queue":"jobs","ids":[7,8]}`,
			method:   "POST", path: "/v1/queues/jobs/items", body: `{"items":["YQ==","YmM="]}`,
			want: `{"queue":"jobs","ids":[7,8]}`,
		},
		{
			name: "QueueItems",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.QueueItems(ctx, "jobs", ItemFilter{State: ItemDead, After: 10, Limit: 50})
			},
			response: `[{"id":11,"queue":"jobs","state":"dead","attempts":3,"size":1,"last_error":"boom"}]`,
			method:   "GET", path: "/v1/queues/jobs/items", query: url.Values{"state": {"dead"}, "after": {"10"}, "limit": {"50"}},
			want: `[{"id":11,"queue":"jobs","state":"dead","attempts":3,"size":1,"last_error":"boom"}]`,
		},
		{
			name:     "QueueItem",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.QueueItem(ctx, "jobs", 11) },
			response: `{"id":11,"queue":"jobs","state":"done","attempts":1,"size":1,"data":"YQ==","result":"b2s="}`,
			method:   "GET", path: "/v1/queues/jobs/items/11",
			want: `{"id":11,"queue":"jobs","state":"done","attempts":1,"size":1,"data":"YQ==","result":"b2s="}`,
		},
		{
			name:     "Retry",
			call:     func(ctx context.Context, c *Client) (any, error) { return c.Retry(ctx, "jobs", 11, 12) },
			response: `{"ids":[11,12]}`,
			method:   "POST", path: "/v1/queues/jobs/retry", body: `{"ids":[11,12]}`,
			want: `{"ids":[11,12]}`,
		},
		{
			name: "LeaseItems",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.LeaseItems(ctx, "jobs", LeaseRequest{Max: 10, Visibility: Duration(time.Minute), Wait: Duration(time.Second)})
			},
			response: `{"items":[{"id":3,"token":40,"attempt":1,"expiry":"2025-01-02T03:05:05Z","data":"YQ=="}]}`,
			method:   "POST", path: "/v1/queues/jobs/lease", body: `{"max":10,"visibility":"1m0s","wait":"1s"}`,
			want: `{"items":[{"id":3,"token":40,"attempt":1,"expiry":"2025-01-02T03:05:05Z","data":"YQ=="}]}`,
		},
		{
			name: "Ack",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Ack(ctx, "jobs", Ack{ID: 3, Token: 40, Result: []byte("ok")})
			},
			response: `{"results":[{"id":3,"outcome":"done"}]}`,
			method:   "POST", path: "/v1/queues/jobs/ack", body: `{"acks":[{"id":3,"token":40,"result":"b2s="}]}`,
			want: `{"results":[{"id":3,"outcome":"done"}]}`,
		},
		{
			name: "Nack",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Nack(ctx, "jobs", Nack{ID: 3, Token: 40, Error: "boom"})
			},
			response: `{"results":[{"id":3,"state":"queued","not_before":"2025-01-02T03:05:06Z"}]}`,
			method:   "POST", path: "/v1/queues/jobs/nack", body: `{"nacks":[{"id":3,"token":40,"error":"boom"}]}`,
			want: `{"results":[{"id":3,"state":"queued","not_before":"2025-01-02T03:05:06Z"}]}`,
		},
		{
			name: "Extend",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Extend(ctx, "jobs", ExtendRequest{Items: []ItemRef{{ID: 3, Token: 40}}})
			},
			response: `{"results":[{"id":3,"expiry":"2025-01-02T03:06:05Z"}]}`,
			method:   "POST", path: "/v1/queues/jobs/extend", body: `{"items":[{"id":3,"token":40}]}`,
			want: `{"results":[{"id":3,"expiry":"2025-01-02T03:06:05Z"}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, got := recordingAgent(t, http.StatusOK, tt.response)
			res, err := tt.call(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if got.Method != tt.method || got.Path != tt.path {
				t.Fatalf("request = %s %s, want %s %s", got.Method, got.Path, tt.method, tt.path)
			}
			if tt.query == nil {
				tt.query = url.Values{}
			}
			if !reflect.DeepEqual(got.Query, tt.query) {
				t.Fatalf("query = %v, want %v", got.Query, tt.query)
			}
			switch {
			case tt.body == "" && got.Body != "":
				t.Fatalf("body = %q, want none", got.Body)
			case tt.body != "" && (got.ContentType != "application/json" || !jsonEqual(t, got.Body, tt.body)):
				t.Fatalf("body = %s (%s), want %s", got.Body, got.ContentType, tt.body)
			}
			if tt.want != "" {
				// Compare values: decode want into the result's type.
				b, _ := json.Marshal(res)
				want := reflect.New(reflect.TypeOf(res))
				if err := json.Unmarshal([]byte(tt.want), want.Interface()); err != nil {
					t.Fatalf("want: %v", err)
				}
				wb, _ := json.Marshal(want.Elem().Interface())
				if !jsonEqual(t, string(b), string(wb)) || !jsonEqual(t, string(b), tt.want) {
					t.Fatalf("result = %s, want %s", b, tt.want)
				}
			}
		})
	}
}

func TestCoordClientKeepsTheConflictClass(t *testing.T) {
	c, _ := recordingAgent(t, http.StatusConflict, `{"error":"lease web/leader is held by web-1 on node n2 (token 9) until 2025-01-02T03:04:05Z","class":"conflict"}`)
	_, err := c.Campaign(context.Background(), "leader", CampaignRequest{})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "held by web-1") {
		t.Fatalf("Campaign = %v, want a conflict naming the holder", err)
	}
}
