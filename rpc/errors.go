package rpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// Code is a status code carried on the wire in response and stream-close
// frames. The numbering follows gRPC's so that operators can map one to the
// other without a table.
type Code uint16

// The codes. OK is zero so a zero status means success.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{
	OK: "OK", Canceled: "Canceled", Unknown: "Unknown", InvalidArgument: "InvalidArgument",
	DeadlineExceeded: "DeadlineExceeded", NotFound: "NotFound", AlreadyExists: "AlreadyExists",
	PermissionDenied: "PermissionDenied", ResourceExhausted: "ResourceExhausted",
	FailedPrecondition: "FailedPrecondition", Aborted: "Aborted", OutOfRange: "OutOfRange",
	Unimplemented: "Unimplemented", Internal: "Internal", Unavailable: "Unavailable",
	DataLoss: "DataLoss", Unauthenticated: "Unauthenticated",
}

// String returns the code's name, e.g. "NotFound".
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("Code(%d)", uint16(c))
}

// Error is the typed error every failed call returns. Handlers may return one
// (see Errorf) to choose the code the caller sees; any other error becomes
// Unknown with the error's text.
type Error struct {
	Code    Code
	Message string
	// notSent is set on the client when the request never left this process,
	// so a retry cannot run the call twice.
	notSent bool
	// exhausted is set on the client when no endpoint is left to try.
	exhausted bool
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "rpc: " + e.Code.String()
	}
	return "rpc: " + e.Code.String() + ": " + e.Message
}

// Is makes errors.Is(err, &rpc.Error{Code: rpc.NotFound}) match on the
// code, and errors.Is(err, registry.ErrNotFound) match a component's
// sentinel whose catalogue code maps to this status.
func (e *Error) Is(target error) bool {
	if t, ok := target.(*Error); ok {
		return t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
	}
	return errcode.Matches(e.ErrorCode(), target)
}

// ErrorCode returns the catalogue code of the status (docs/errors.md).
func (e *Error) ErrorCode() errcode.Code { return errcode.FromRPC(uint16(e.Code)) }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err: OK for nil, the code of an *Error in the
// chain, the status of a catalogue code (a component's sentinel, see
// internal/errcode), Canceled or DeadlineExceeded for the context errors,
// Unknown else.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if c, ok := errcode.Of(err); ok {
		return Code(errcode.Lookup(c).RPC)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	return Unknown
}

// toError converts any error into the *Error sent on the wire.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeOf(err), Message: err.Error()}
}

// ctxEnded reports whether ctx is done or its deadline has passed.
func ctxEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// ctxError maps a context's error to the typed error a caller sees. A
// context whose deadline has passed but whose timer has not fired yet
// (ctx.Err() still nil) reports DeadlineExceeded, not Canceled.
func ctxError(ctx context.Context) *Error {
	err := ctx.Err()
	if err == nil {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			err = context.DeadlineExceeded
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: DeadlineExceeded, Message: "deadline exceeded"}
	}
	return &Error{Code: Canceled, Message: "call canceled"}
}

// Sentinel errors of the package.
var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("rpc: server closed")
	// ErrClientClosed is returned by calls on a closed client.
	ErrClientClosed = &Error{Code: Canceled, Message: "client closed"}
)

// NotSent reports whether a call failed before its request left this
// process (no connection, or refused by a server shutting down), so running
// it elsewhere cannot run it twice.
func NotSent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.notSent
}
