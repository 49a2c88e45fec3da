package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// server is testapp's HTTP side.
type server struct {
	listen    string
	readyFile string
	ready     atomic.Bool
	exit      chan int // set by POST /exit
}

func newServer() *server {
	s := &server{exit: make(chan int, 1)}
	s.ready.Store(true)
	return s
}

// handler returns the routes, wrapped in request logging.
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("GET /ready", s.getReady)
	mux.HandleFunc("POST /ready", s.setReady)
	mux.HandleFunc("GET /dial", dial)
	mux.HandleFunc("GET /fetch", fetch)
	mux.HandleFunc("GET /read", read)
	mux.HandleFunc("POST /write", write)
	mux.HandleFunc("GET /hostname", hostname)
	mux.HandleFunc("GET /env", env)
	mux.HandleFunc("POST /exit", s.exitLater)
	return logRequests(mux)
}

func (s *server) run() error {
	l, err := net.Listen("tcp", s.listen)
	if err != nil {
		return err
	}
	out.Printf("listening on %s", l.Addr())
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case code := <-s.exit:
		// Shutdown waits until the /exit response has been written.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		out.Printf("exiting with %d", code)
		os.Exit(code)
		return nil
	}
}

func (s *server) isReady() bool {
	if !s.ready.Load() {
		return false
	}
	if s.readyFile != "" {
		if _, err := os.Stat(s.readyFile); err != nil {
			return false
		}
	}
	return true
}

func (s *server) getReady(w http.ResponseWriter, r *http.Request) {
	if !s.isReady() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprint(w, "ready")
}

func (s *server) setReady(w http.ResponseWriter, r *http.Request) {
	switch v := r.URL.Query().Get("v"); v {
	case "true":
		s.ready.Store(true)
	case "false":
		s.ready.Store(false)
	default:
		http.Error(w, fmt.Sprintf("v=%q: want true or false", v), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "ready=%s", r.URL.Query().Get("v"))
}

func (s *server) exitLater(w http.ResponseWriter, r *http.Request) {
	code, err := atoiDefault(r.URL.Query().Get("code"), 0)
	if err != nil || code < 0 || code > 255 {
		http.Error(w, "code: want 0..255", http.StatusBadRequest)
		return
	}
	w.Header().Set("Connection", "close")
	fmt.Fprintf(w, "exiting with %d", code)
	select {
	case s.exit <- code:
	default: // already exiting
	}
}

func dial(w http.ResponseWriter, r *http.Request) {
	addr := r.URL.Query().Get("addr")
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	c.Close()
	fmt.Fprint(w, "ok")
}

var fetchClient = &http.Client{Timeout: 5 * time.Second}

func fetch(w http.ResponseWriter, r *http.Request) {
	resp, err := fetchClient.Get(r.URL.Query().Get("url"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func read(w http.ResponseWriter, r *http.Request) {
	b, err := os.ReadFile(r.URL.Query().Get("path"))
	if err != nil {
		http.Error(w, err.Error(), fileErrStatus(err))
		return
	}
	_, _ = w.Write(b)
}

func write(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		http.Error(w, err.Error(), fileErrStatus(err))
		return
	}
	fmt.Fprintf(w, "wrote %d bytes", len(b))
}

func fileErrStatus(err error) int {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

func hostname(w http.ResponseWriter, r *http.Request) {
	h, err := os.Hostname()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprint(w, h)
}

func env(w http.ResponseWriter, r *http.Request) {
	k := r.URL.Query().Get("k")
	v, ok := os.LookupEnv(k)
	if !ok {
		http.Error(w, k+" is not set", http.StatusNotFound)
		return
	}
	fmt.Fprint(w, v)
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		out.Printf("%s %s %d", r.Method, r.URL.RequestURI(), sw.status)
	})
}
