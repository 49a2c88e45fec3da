package ambassador

import (
	"bytes"
	"errors"
	"io"
	"strings"
)

// Limits on what the proxy reads before it connects, for balance = "shard".
const (
	// MaxKeyLine bounds the first line that carries the key.
	MaxKeyLine = 4 << 10
	// MaxKeyHead bounds the HTTP/1.x request head searched for the key
	// header (the request line and the headers before it).
	MaxKeyHead = 16 << 10
)

// keyReader reads the shard key from the start of a client's stream.
// Every byte it reads is kept, to be replayed to the backend.
type keyReader struct {
	// header names the HTTP request header that holds the key; empty:
	// the key is the first line.
	header string
}

// read reads from r until it has the key and returns it with ok, and the
// bytes read. ok is false when the stream carries no key the proxy can
// find: the first line is longer than MaxKeyLine, or (with a header) the
// stream is not an HTTP/1.x request, or the head ends or passes
// MaxKeyHead without the header. err is a read error other than EOF; an
// EOF ends the search with what was read (a stream of one line and no
// newline has that line as its key).
func (k keyReader) read(r io.Reader) (key string, ok bool, data []byte, err error) {
	limit := MaxKeyLine
	if k.header != "" {
		limit = MaxKeyHead
	}
	buf := make([]byte, 0, 512)
	lineStart := 0 // of the line not yet looked at
	first := true  // the next complete line is the first one
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		// Look at every complete line that arrived.
		for {
			i := bytes.IndexByte(buf[lineStart:], '\n')
			if i < 0 {
				break
			}
			line := trimCR(buf[lineStart : lineStart+i])
			lineStart += i + 1
			if k.header == "" {
				return string(line), true, buf, nil
			}
			if first {
				first = false
				if !isHTTP1RequestLine(line) {
					return "", false, buf, nil
				}
				continue
			}
			if len(line) == 0 { // end of the head
				return "", false, buf, nil
			}
			if v, found := headerValue(line, k.header); found {
				return v, true, buf, nil
			}
		}
		switch {
		case errors.Is(rerr, io.EOF):
			if k.header == "" && len(buf) > 0 {
				return string(trimCR(buf)), true, buf, nil
			}
			return "", false, buf, nil
		case rerr != nil:
			return "", false, buf, rerr
		case len(buf) >= limit:
			return "", false, buf, nil
		}
	}
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// isHTTP1RequestLine reports "METHOD target HTTP/1.x".
func isHTTP1RequestLine(line []byte) bool {
	f := bytes.Fields(line)
	return len(f) == 3 && bytes.HasPrefix(f[2], []byte("HTTP/1."))
}

// headerValue returns the value of line when it is the header name.
func headerValue(line []byte, name string) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i < 0 || !strings.EqualFold(string(line[:i]), name) {
		return "", false
	}
	return strings.TrimSpace(string(line[i+1:])), true
}
