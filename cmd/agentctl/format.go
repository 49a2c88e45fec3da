package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// newTable returns a tabwriter for tables: columns two spaces apart. Call
// Flush when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// age renders how long ago t was the way kubectl does: 5s, 3m, 2h, 4d, 1y.
// A zero t is "-".
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return shortDuration(now.Sub(t))
}

func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0 // clock skew between agentd and here
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d < 365*24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return fmt.Sprintf("%dy", int(d/(365*24*time.Hour)))
}

// timeAndAge renders t as "2024-05-01T10:00:00Z (5m ago)", or "-".
func timeAndAge(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), age(now, t))
}

// humanBytes renders n with a binary unit: 512 B, 1.5 KiB, 12.3 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// plural renders "1 problem", "2 problems".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// orDash returns s, or "-" when it is empty (tables need a cell).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDigest keeps the algorithm and 12 hex digits of a digest.
func shortDigest(d string) string {
	for i := 0; i < len(d); i++ {
		if d[i] == ':' && len(d) > i+1+12 {
			return d[:i+1+12]
		}
	}
	return d
}
