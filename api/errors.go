package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error classes. Every error the agent returns wraps one of these; callers
// test with errors.Is. They become HTTP status codes at the API boundary
// only (HTTPStatus, ClassError).
var (
	ErrInvalid       = errors.New("invalid")
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrConflict      = errors.New("conflict")
	ErrUnavailable   = errors.New("unavailable")
	ErrNotLeader     = errors.New("not leader")
)

var classes = []struct {
	err    error
	name   string
	status int
}{
	{ErrInvalid, "invalid", http.StatusBadRequest},
	{ErrNotFound, "not_found", http.StatusNotFound},
	{ErrAlreadyExists, "already_exists", http.StatusConflict},
	{ErrConflict, "conflict", http.StatusConflict},
	{ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	{ErrNotLeader, "not_leader", http.StatusMisdirectedRequest},
}

// Class returns the class name of err ("invalid", "not_found", …) and the
// HTTP status it maps to; "internal" and 500 when it has none.
func Class(err error) (string, int) {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.name, c.status
		}
	}
	return "internal", http.StatusInternalServerError
}

// ClassError returns the class sentinel for a class name, or nil.
func ClassError(name string) error {
	for _, c := range classes {
		if c.name == name {
			return c.err
		}
	}
	return nil
}

// FieldError is one problem in a group file, with its position.
type FieldError struct {
	File      string `json:"file,omitempty"`
	Line      int    `json:"line,omitempty"`
	Col       int    `json:"col,omitempty"`
	Group     string `json:"group,omitempty"`
	Container string `json:"container,omitempty"`
	// Field is the key path, e.g. "container[1].mount[0].volume".
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// Error renders "file:line:col: group "g", container "c": field: message".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
			if e.Col > 0 {
				fmt.Fprintf(&b, ":%d", e.Col)
			}
		}
		b.WriteString(": ")
	}
	if e.Group != "" {
		fmt.Fprintf(&b, "group %q", e.Group)
		if e.Container != "" {
			fmt.Fprintf(&b, ", container %q", e.Container)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Unwrap makes every FieldError an ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// ErrorList is every problem found in one or more files. It is an ErrInvalid.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

func (l ErrorList) Unwrap() error { return ErrInvalid }

// Details returns the list as plain values for ErrorBody.
func (l ErrorList) Details() []FieldError {
	out := make([]FieldError, len(l))
	for i, e := range l {
		out[i] = *e
	}
	return out
}
