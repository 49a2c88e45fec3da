package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeRoutes(t *testing.T) {
	dir := t.TempDir()
	readyFile := filepath.Join(dir, "ready")
	s := newServer()
	srv := httptest.NewServer(s.handler())
	defer srv.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	t.Setenv("TESTAPP_X", "42")

	steps := []struct {
		name       string
		method     string
		path       string
		body       string
		before     func()
		wantStatus int
		wantBody   string // prefix
	}{
		{"health", "GET", "/health", "", nil, 200, "ok"},
		{"ready at start", "GET", "/ready", "", nil, 200, "ready"},
		{"flip not ready", "POST", "/ready?v=false", "", nil, 200, "ready=false"},
		{"not ready", "GET", "/ready", "", nil, 503, "not ready"},
		{"flip ready", "POST", "/ready?v=true", "", nil, 200, "ready=true"},
		{"bad ready value", "POST", "/ready?v=maybe", "", nil, 400, ""},
		{"ready file missing", "GET", "/ready", "", func() { s.readyFile = readyFile }, 503, "not ready"},
		{"ready file present", "GET", "/ready", "", func() { os.WriteFile(readyFile, nil, 0o644) }, 200, "ready"},
		{"ready file removed", "GET", "/ready", "", func() { os.Remove(readyFile) }, 503, "not ready"},
		{"dial open port", "GET", "/dial?addr=" + strings.TrimPrefix(srv.URL, "http://"), "", nil, 200, "ok"},
		{"dial closed port", "GET", "/dial?addr=" + closedAddr, "", nil, 502, "dial tcp"},
		{"fetch proxies status and body", "GET", "/fetch?url=" + srv.URL + "/ready", "", nil, 503, "not ready"},
		{"fetch unreachable", "GET", "/fetch?url=http://" + closedAddr + "/", "", nil, 502, ""},
		{"write", "POST", "/write?path=" + filepath.Join(dir, "x"), "hello", nil, 200, "wrote 5 bytes"},
		{"read back", "GET", "/read?path=" + filepath.Join(dir, "x"), "", nil, 200, "hello"},
		{"read missing", "GET", "/read?path=" + filepath.Join(dir, "none"), "", nil, 404, ""},
		{"write into missing dir", "POST", "/write?path=" + filepath.Join(dir, "no", "x"), "a", nil, 404, ""},
		{"env set", "GET", "/env?k=TESTAPP_X", "", nil, 200, "42"},
		{"env unset", "GET", "/env?k=TESTAPP_UNSET", "", nil, 404, ""},
		{"wrong method", "GET", "/write?path=x", "", nil, 405, ""},
		{"bad exit code", "POST", "/exit?code=300", "", nil, 400, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before()
			}
			req, err := http.NewRequest(st.method, srv.URL+st.path, strings.NewReader(st.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != st.wantStatus || !strings.HasPrefix(string(b), st.wantBody) {
				t.Fatalf("%s %s = %d %q, want %d %q...", st.method, st.path, resp.StatusCode, b, st.wantStatus, st.wantBody)
			}
		})
	}
}

func TestExitIsSignalledAfterResponse(t *testing.T) {
	s := newServer()
	srv := httptest.NewServer(s.handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/exit?code=7", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "exiting with 7" {
		t.Fatalf("POST /exit = %d %q", resp.StatusCode, b)
	}
	select {
	case code := <-s.exit:
		if code != 7 {
			t.Fatalf("exit code = %d, want 7", code)
		}
	default:
		t.Fatal("POST /exit did not ask the server to exit")
	}
}
