// Package api holds the conventions every Tangram HTTP API shares: JSON
// bodies, the error envelope {"error":{"code","message"}} with the right
// status, size-limited decoding and limit/cursor pagination.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// Error is an API error with an HTTP status and a stable code.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Details carries optional structured context (e.g. the current version on a conflict).
	Details any `json:"details,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrorCode returns the catalogue code, so errcode.Of works on API errors.
func (e *Error) ErrorCode() errcode.Code { return errcode.Code(e.Code) }

// Is makes errors.Is(err, config.ErrNotFound) true for an API error with the
// sentinel's code, as clients decode it from the wire.
func (e *Error) Is(target error) bool { return errcode.Matches(errcode.Code(e.Code), target) }

// Detailer is implemented by errors that carry structured context for the
// envelope's details (e.g. the current version on a conflict).
type Detailer interface{ ErrorDetails() any }

// From turns any error into the *Error a client sees: an *Error as it is;
// an error with a catalogue code (a component's sentinel, wrapped with
// context) by its code, with the sentinel's words trimmed from the message;
// context errors as canceled/timeout; anything else as internal, whose text
// is not sent (Handler logs it).
func From(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	code, ok := errcode.Of(err)
	switch {
	case ok:
	case errors.Is(err, context.DeadlineExceeded):
		code = errcode.Timeout
	case errors.Is(err, context.Canceled):
		code = errcode.Canceled
	default:
		return &Error{Status: http.StatusInternalServerError, Code: string(errcode.Internal), Message: "internal error"}
	}
	out := &Error{Status: errcode.Lookup(code).HTTP, Code: string(code), Message: errcode.Message(err)}
	var d Detailer
	if errors.As(err, &d) {
		out.Details = d.ErrorDetails()
	}
	return out
}

// Internal reports whether err maps to no catalogue code (a 500 whose
// text the client is not told).
func Internal(err error) bool {
	var ae *Error
	if errors.As(err, &ae) {
		return false
	}
	_, ok := errcode.Of(err)
	return !ok && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// Errorf builds an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Of builds an *Error with a catalogue code and its status.
func Of(code errcode.Code, format string, args ...any) *Error {
	return Errorf(errcode.Lookup(code).HTTP, string(code), format, args...)
}

// BadRequest is a 400.
func BadRequest(format string, args ...any) *Error {
	return Of(errcode.BadRequest, format, args...)
}

// NotFound is a 404 naming what is missing.
func NotFound(format string, args ...any) *Error {
	return Of(errcode.NotFound, format, args...)
}

// Conflict is a 409.
func Conflict(format string, args ...any) *Error {
	return Of(errcode.Conflict, format, args...)
}

// Forbidden is a 403.
func Forbidden(format string, args ...any) *Error {
	return Of(errcode.Forbidden, format, args...)
}

// Unauthorized is a 401.
func Unauthorized(format string, args ...any) *Error {
	return Of(errcode.Unauthorized, format, args...)
}

// WriteJSON writes v as JSON with the status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// WriteError writes err, mapped by From, in the error envelope.
func WriteError(w http.ResponseWriter, err error) {
	ae := From(err)
	WriteJSON(w, ae.Status, map[string]any{"error": ae})
}

// MaxBody is the default request body limit (values are limited to 1 MiB;
// a body carries a little more than one value).
const MaxBody = 4 << 20

// Decode reads a JSON body into v, refusing unknown fields, bodies over
// MaxBody and trailing data, with a message naming the problem.
func Decode(r *http.Request, v any) error {
	body := http.MaxBytesReader(nil, r.Body, MaxBody)
	dec := json.NewDecoder(body)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return decodeError(err)
	}
	if dec.More() {
		return BadRequest("request body has data after the JSON object")
	}
	// null would decode into v as "no fields set", turning a mistaken or
	// truncated request into an action with every default.
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return BadRequest("request body is %s; want a JSON object", jsonKind(t))
	}
	inner := json.NewDecoder(bytes.NewReader(raw))
	inner.DisallowUnknownFields()
	if err := inner.Decode(v); err != nil {
		return decodeError(err)
	}
	return nil
}

func jsonKind(t []byte) string {
	switch {
	case len(t) == 0:
		return "empty"
	case string(t) == "null":
		return "null"
	case t[0] == '[':
		return "an array"
	case t[0] == '"':
		return "a string"
	case string(t) == "true" || string(t) == "false":
		return "a boolean"
	}
	return "a number"
}

func decodeError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return Of(errcode.TooLarge, "request body over %d bytes", MaxBody)
	case errors.Is(err, io.EOF):
		return BadRequest("request body is empty; want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("request body is not valid JSON: it ends before the object does")
	case errors.As(err, &se):
		return BadRequest("request body is not valid JSON at byte %d: %v", se.Offset, err)
	case errors.As(err, &te):
		return BadRequest("field %q: want %s, got %s", te.Field, te.Type, te.Value)
	default:
		return BadRequest("request body: %v", err)
	}
}

// Mux is where components mount their routes: an *http.ServeMux, or
// one that also records the patterns (the API document's check).
type Mux interface {
	Handle(pattern string, handler http.Handler)
}

// MaxWatch is the longest a long-poll watch may ask to be held, and
// DefaultWatch what it gets when it does not ask.
const (
	MaxWatch     = 60 * time.Second
	DefaultWatch = 30 * time.Second
)

// WatchTimeout reads a long poll's ?timeout=: a positive duration up to
// MaxWatch, DefaultWatch when absent. Every watch API uses this rule. A
// server may answer sooner with no changes (its operator bounds holds,
// or it is shutting down); the client then simply watches again.
func WatchTimeout(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout")
	if v == "" {
		return DefaultWatch, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > MaxWatch {
		return 0, BadRequest("timeout %q: want a duration from 1ms up to %s, such as 30s", v, MaxWatch)
	}
	return d, nil
}

// Page is a limit/cursor pair read from the query string.
type Page struct {
	Limit  int
	Cursor int64
}

// ReadPage parses ?limit=&cursor= with a default and maximum limit.
func ReadPage(r *http.Request, def, max int) (Page, error) {
	p := Page{Limit: def}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return p, BadRequest("limit %q: want a positive integer", v)
		}
		if n > max {
			n = max
		}
		p.Limit = n
	}
	if v := r.URL.Query().Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return p, BadRequest("cursor %q: want a cursor returned by a previous page", v)
		}
		p.Cursor = n
	}
	return p, nil
}

// List is the envelope of a paginated list.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// HandlerFunc is an API handler that returns its error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handler adapts fn: a returned error is mapped by From and written in the
// error envelope; errors with no catalogue code become a 500 and are
// logged, since the client is told only "internal error".
func Handler(log *slog.Logger, fn HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fn(w, r)
		if err == nil {
			return
		}
		if Internal(err) {
			log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		WriteError(w, err)
	})
}
