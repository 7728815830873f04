// Package errcode is Tangram's one error catalogue: every error a client
// can act on carries a Code, and each Code has one HTTP status and one RPC
// status. Components declare their sentinel errors with New, so a sentinel
// such as config.ErrNotFound says both what it means in Go (errors.Is) and
// what a non-Go client sees ({"error":{"code":"not_found"}} with 404, or
// RPC status NotFound). docs/errors.md lists the codes.
//
// The package has no dependencies so that SDK packages can declare their
// sentinels with it.
package errcode

import (
	"errors"
	"strings"
)

// Code is a stable, documented error code. Clients switch on it.
type Code string

// The catalogue. Adding a code means adding a row to docs/errors.md.
const (
	BadRequest       Code = "bad_request"       // the request is malformed or a value is out of range
	Unauthorized     Code = "unauthorized"      // no, a wrong, expired or revoked credential
	Forbidden        Code = "forbidden"         // the credential may not do this
	NotFound         Code = "not_found"         // the named thing does not exist
	AlreadyExists    Code = "already_exists"    // creating something that exists
	Conflict         Code = "conflict"          // a stale version (optimistic concurrency); re-read and retry
	ApprovalRequired Code = "approval_required" // the environment requires a reviewed publish request
	TooLarge         Code = "too_large"         // a body or value over its limit
	TooManyRequests  Code = "too_many_requests" // rate limited; retry later
	Unavailable      Code = "unavailable"       // the server is busy, closing or lost a dependency; retry elsewhere or later
	Canceled         Code = "canceled"          // the caller gave up
	Timeout          Code = "timeout"           // a deadline passed
	Internal         Code = "internal"          // a bug or an unexpected failure; the message is not leaked
)

// Row is a code's entry in the catalogue.
type Row struct {
	Code Code
	HTTP int    // HTTP status
	RPC  uint16 // Tangram RPC status code (numbered as gRPC's)
	// Retry says whether the same request may succeed later unchanged.
	Retry bool
}

var catalogue = []Row{
	{BadRequest, 400, 3, false},
	{Unauthorized, 401, 16, false},
	{Forbidden, 403, 7, false},
	{NotFound, 404, 5, false},
	{AlreadyExists, 409, 6, false},
	{Conflict, 409, 10, false},
	{ApprovalRequired, 409, 9, false},
	{TooLarge, 413, 8, false},
	{TooManyRequests, 429, 8, true},
	{Unavailable, 503, 14, true},
	{Canceled, 499, 1, false},
	{Timeout, 504, 4, true},
	{Internal, 500, 13, false},
}

// Catalogue returns every code's row, in documentation order.
func Catalogue() []Row { return append([]Row(nil), catalogue...) }

// Lookup returns code's row; unknown codes get Internal's row with the
// code kept.
func Lookup(code Code) Row {
	for _, r := range catalogue {
		if r.Code == code {
			return r
		}
	}
	r := catalogue[len(catalogue)-1]
	r.Code = code
	return r
}

// FromHTTP returns the code for an HTTP status when an answer carried no
// code of its own.
func FromHTTP(status int) Code {
	for _, r := range catalogue {
		if r.HTTP == status {
			return r.Code
		}
	}
	if status >= 500 {
		return Internal
	}
	return BadRequest
}

// FromRPC returns the code for an RPC status.
func FromRPC(status uint16) Code {
	for _, r := range catalogue {
		if r.RPC == status {
			return r.Code
		}
	}
	return Internal
}

// Error is a sentinel error with a code.
type Error struct {
	code Code
	msg  string
}

// New returns a sentinel. msg carries the package prefix ("config: not
// found"); wrap it with fmt.Errorf("%w: ...") to say what.
func New(code Code, msg string) *Error { return &Error{code: code, msg: msg} }

func (e *Error) Error() string { return e.msg }

// ErrorCode returns the sentinel's code.
func (e *Error) ErrorCode() Code { return e.code }

// Coder is implemented by errors that carry a code: sentinels, API errors
// decoded by clients, RPC errors.
type Coder interface{ ErrorCode() Code }

// Of returns the code of the first error in err's chain that has one.
func Of(err error) (Code, bool) {
	var c Coder
	if errors.As(err, &c) {
		return c.ErrorCode(), true
	}
	return "", false
}

// Message returns err's text without the sentinel's own words, which the
// code already says: "create app: config: already exists: app \"shop\""
// becomes "create app: app \"shop\"".
func Message(err error) string {
	msg := err.Error()
	var s *Error
	if errors.As(err, &s) && s.msg != msg {
		if i := strings.Index(msg, s.msg+": "); i >= 0 {
			return msg[:i] + msg[i+len(s.msg)+2:]
		}
		if i := strings.Index(msg, s.msg+" "); i >= 0 {
			return msg[:i] + msg[i+len(s.msg)+1:]
		}
	}
	return msg
}

// Matches reports whether target is a sentinel with code: clients use it to
// make errors.Is(err, config.ErrNotFound) true for an error decoded from the
// wire.
func Matches(code Code, target error) bool {
	t, ok := target.(*Error)
	return ok && t.code == code
}
