package api

import (
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// Timeouts of a remote client's connections. Calls themselves are bounded
// by their context only (streams run until it ends).
const (
	// RemoteDialTimeout bounds the TCP connect to a remote agent.
	RemoteDialTimeout = 5 * time.Second
	// RemoteHandshakeTimeout bounds the TLS handshake after it.
	RemoteHandshakeTimeout = 5 * time.Second
)

// NewRemoteClient returns a client for the agent whose inter-agent API
// listens at addr (host:port), over HTTPS with tlsConfig: the cluster CA
// as its roots and a client certificate (pki.ClientConfig; agentctl's or a
// node's). Errors are those of NewClient; "cannot reach agentd at
// https://addr" when the dial fails.
func NewRemoteClient(addr string, tlsConfig *tls.Config) *Client {
	return NewHTTPClient("https://"+addr, RemoteHTTPClient(tlsConfig))
}

// RemoteHTTPClient returns the *http.Client under NewRemoteClient: HTTP/1.1
// over TLS with tlsConfig, RemoteDialTimeout and RemoteHandshakeTimeout,
// idle connections kept for reuse, and no proxy from the environment
// (agents talk to each other directly).
func RemoteHTTPClient(tlsConfig *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: RemoteDialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: RemoteHandshakeTimeout,
		MaxIdleConns:        16,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr}
}
