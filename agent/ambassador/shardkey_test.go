package ambassador

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestKeyReader(t *testing.T) {
	long := strings.Repeat("x", MaxKeyLine)
	head := "GET /a HTTP/1.1\r\nHost: h\r\n"
	tests := []struct {
		name, header, in string
		key              string
		ok               bool
		read             string // the bytes it must have read; "" means all of in
	}{
		{"first line", "", "k1\nrest", "k1", true, "k1\n"},
		{"first line with CRLF", "", "k1\r\nrest", "k1", true, "k1\r\n"},
		{"empty first line", "", "\nrest", "", true, "\n"},
		{"stream ends without newline", "", "k1", "k1", true, ""},
		{"empty stream", "", "", "", false, ""},
		{"line of MaxKeyLine bytes without newline", "", long + "y\n", "", false, long},
		{"line just under the limit", "", long[1:] + "\n", long[1:], true, ""},
		{"header", "X-Key", head + "X-Key: k7\r\n\r\nbody", "k7", true, head + "X-Key: k7\r\n"},
		{"header name any case, value trimmed", "X-Key", head + "x-KEY:\t k7 \r\n\r\n", "k7", true, head + "x-KEY:\t k7 \r\n"},
		{"header missing", "X-Key", head + "X-Other: k7\r\n\r\nX-Key: body", "", false, head + "X-Other: k7\r\n\r\n"},
		{"header of HTTP/1.0", "X-Key", "GET / HTTP/1.0\nX-Key: k\n\n", "k", true, "GET / HTTP/1.0\nX-Key: k\n"},
		{"not HTTP", "X-Key", "*2\r\nX-Key: k\r\n", "", false, "*2\r\n"},
		{"head ends at EOF without the header", "X-Key", head, "", false, ""},
		{"head longer than the limit", "X-Key", head + strings.Repeat("X-Pad: 0123456789\r\n", 1000), "", false, "limit"},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			var r io.Reader = strings.NewReader(tt.in)
			if oneByte {
				name += ", one byte at a time"
				r = iotest.OneByteReader(r)
			}
			t.Run(name, func(t *testing.T) {
				key, ok, data, err := keyReader{header: tt.header}.read(r)
				if err != nil {
					t.Fatal(err)
				}
				if key != tt.key || ok != tt.ok {
					t.Errorf("key %q, ok %v; want %q, %v", key, ok, tt.key, tt.ok)
				}
				switch want := tt.read; {
				case want == "limit":
					if len(data) != MaxKeyHead || !strings.HasPrefix(tt.in, string(data)) {
						t.Errorf("read %d bytes; want the first %d of the input", len(data), MaxKeyHead)
					}
				case oneByte && want == "":
					want = tt.in
					fallthrough
				case oneByte:
					// One byte at a time, it stops right after the key.
					if string(data) != want {
						t.Errorf("read %q; want %q", data, want)
					}
				default:
					// In one read it may have more; never less, never other.
					if !strings.HasPrefix(string(data), want) || !strings.HasPrefix(tt.in, string(data)) {
						t.Errorf("read %q; want at least %q and a prefix of the input", data, want)
					}
				}
			})
		}
	}
}

func TestKeyReaderReportsReadErrors(t *testing.T) {
	boom := errors.New("boom")
	_, ok, data, err := keyReader{}.read(io.MultiReader(strings.NewReader("par"), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || ok || string(data) != "par" {
		t.Errorf("ok %v, data %q, err %v; want the error and the bytes read", ok, data, err)
	}
}
