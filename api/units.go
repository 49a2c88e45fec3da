package api

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Duration is a time.Duration written as a Go duration string ("10s",
// "1m30s") in files and JSON.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText parses a Go duration string; negative values are refused.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: write it like \"10s\", \"1m30s\" or \"500ms\"", string(b))
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: must not be negative", string(b))
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ByteSize is a number of bytes, written as an integer or a string with a
// binary or decimal unit: "256MiB", "1Gi", "64M", "512k".
type ByteSize int64

var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1000, "kb": 1000, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1000 * 1000, "mb": 1000 * 1000, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1000 * 1000 * 1000, "gb": 1000 * 1000 * 1000, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1000 * 1000 * 1000 * 1000, "tb": 1000 * 1000 * 1000 * 1000, "ti": 1 << 40, "tib": 1 << 40,
}

// ParseByteSize parses "256MiB", "1G", "1024".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := byteUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q: write it like \"256MiB\", \"1GiB\", \"64M\" or a number of bytes", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("invalid size %q: write it like \"256MiB\", \"1GiB\", \"64M\" or a number of bytes", s)
	}
	v := f * float64(mult)
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return ByteSize(v), nil
}

// UnmarshalTOML accepts an integer (bytes) or a string with a unit.
func (b *ByteSize) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("invalid size %d: must not be negative", x)
		}
		*b = ByteSize(x)
		return nil
	case string:
		s, err := ParseByteSize(x)
		if err != nil {
			return err
		}
		*b = s
		return nil
	}
	return fmt.Errorf("invalid size: want a string like \"256MiB\" or an integer, got %T", v)
}

func (b *ByteSize) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	if f, ok := v.(float64); ok {
		v = int64(f)
	}
	return b.UnmarshalTOML(v)
}

// String renders the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		n int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(b) >= u.n && int64(b)%u.n == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.n, u.s)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MilliCPU is CPU in thousandths of a core, written "500m", "2", "0.5" or
// as a number of cores.
type MilliCPU int64

// ParseMilliCPU parses "500m", "1.5", "2".
func ParseMilliCPU(s string) (MilliCPU, error) {
	t := strings.TrimSpace(s)
	bad := fmt.Errorf("invalid cpu %q: write it like \"500m\" (half a core) or \"2\" (two cores)", s)
	if strings.HasSuffix(t, "m") {
		n, err := strconv.ParseInt(strings.TrimSuffix(t, "m"), 10, 64)
		if err != nil || n < 0 || n > 1<<30 {
			return 0, bad
		}
		return MilliCPU(n), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f > 1<<20 || math.IsNaN(f) {
		return 0, bad
	}
	return MilliCPU(math.Round(f * 1000)), nil
}

// UnmarshalTOML accepts "500m", "2", 2 or 0.5.
func (c *MilliCPU) UnmarshalTOML(v any) error {
	var err error
	switch x := v.(type) {
	case string:
		*c, err = ParseMilliCPU(x)
	case int64:
		*c, err = ParseMilliCPU(strconv.FormatInt(x, 10))
	case float64:
		*c, err = ParseMilliCPU(strconv.FormatFloat(x, 'f', -1, 64))
	default:
		err = fmt.Errorf("invalid cpu: want a string like \"500m\" or a number of cores, got %T", v)
	}
	return err
}

func (c *MilliCPU) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	return c.UnmarshalTOML(v)
}

// MarshalTOML writes the CPU as a string UnmarshalTOML reads back: "500m"
// or "2". (As a bare integer it would read back as cores.)
func (c MilliCPU) MarshalTOML() ([]byte, error) {
	return []byte(strconv.Quote(c.String())), nil
}

// MarshalJSON writes the string form ("500m", "2"), which UnmarshalJSON
// reads back: a bare number would mean cores.
func (c MilliCPU) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

func (c MilliCPU) String() string {
	if c%1000 == 0 {
		return strconv.FormatInt(int64(c)/1000, 10)
	}
	return strconv.FormatInt(int64(c), 10) + "m"
}

// Signal is a signal name ("SIGTERM", "TERM") or number ("15").
type Signal string

// Parse returns the signal number.
func (s Signal) Parse() (syscall.Signal, error) {
	return ParseSignal(string(s))
}

// ParseSignal parses "SIGTERM", "TERM", "sigterm" or "15".
func ParseSignal(s string) (syscall.Signal, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if n, err := strconv.Atoi(t); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("invalid signal %q: number out of range 1-64", s)
		}
		return syscall.Signal(n), nil
	}
	if !strings.HasPrefix(t, "SIG") {
		t = "SIG" + t
	}
	if sig := unix.SignalNum(t); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("invalid signal %q: use a name like \"SIGTERM\", \"SIGINT\", \"SIGQUIT\" or a number", s)
}

// UnmarshalText validates the signal. An empty string is the zero value
// ("use the default"), so an effective config written back out as TOML,
// stop_signal = "" included, decodes again.
func (s *Signal) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*s = ""
		return nil
	}
	if _, err := ParseSignal(string(b)); err != nil {
		return err
	}
	*s = Signal(b)
	return nil
}

// Priority is a group's priority: a number, or the name of a priority class
// that the agent's config resolves to a number.
type Priority struct {
	Value int64
	// Class is the class name when the priority was written as one.
	Class string
}

// UnmarshalTOML accepts an integer or a class name.
func (p *Priority) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		*p = Priority{Value: x}
		return nil
	case string:
		if !IsDNSLabel(x) {
			return fmt.Errorf("invalid priority %q: use a number or a priority class name such as \"high\", \"normal\", \"batch\"", x)
		}
		*p = Priority{Class: x}
		return nil
	}
	return fmt.Errorf("invalid priority: want an integer or a class name, got %T", v)
}

// MarshalTOML writes the priority as it was given: an integer, or the
// class name as a string.
func (p Priority) MarshalTOML() ([]byte, error) {
	if p.Class != "" {
		if !IsDNSLabel(p.Class) {
			return nil, fmt.Errorf("invalid priority class %q", p.Class)
		}
		return []byte(`"` + p.Class + `"`), nil
	}
	return []byte(strconv.FormatInt(p.Value, 10)), nil
}

func (p Priority) MarshalJSON() ([]byte, error) {
	if p.Class != "" {
		return json.Marshal(p.Class)
	}
	return json.Marshal(p.Value)
}

func (p *Priority) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	if f, ok := v.(float64); ok {
		v = int64(f)
	}
	return p.UnmarshalTOML(v)
}

func (p Priority) String() string {
	if p.Class != "" {
		return p.Class
	}
	return strconv.FormatInt(p.Value, 10)
}

// IsDNSLabel reports whether s is an RFC 1123 label: 1-63 characters of
// lowercase letters, digits and '-', starting and ending alphanumeric.
func IsDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}
