// Package apirpc maps errors onto Tangram RPC statuses through the one
// error catalogue (internal/errcode), for the components that serve
// operations over RPC as well as HTTP. It is apart from package api so that
// clients, which decode API errors, do not link the RPC framework.
package apirpc

import (
	"context"
	"errors"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/rpc"
)

// Error maps err to an *rpc.Error: an *rpc.Error as it is; an error with a
// catalogue code (an API error, a component's sentinel) by the code's RPC
// status, with the sentinel's words trimmed as over HTTP; context errors
// as Canceled/DeadlineExceeded; any other error as Unavailable with its
// text (the store or a peer failed: worth retrying elsewhere).
func Error(err error) error {
	if err == nil {
		return nil
	}
	var re *rpc.Error
	if errors.As(err, &re) {
		return re
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return &rpc.Error{Code: rpc.Code(errcode.Lookup(ae.ErrorCode()).RPC), Message: ae.Message}
	}
	if code, ok := errcode.Of(err); ok {
		return &rpc.Error{Code: rpc.Code(errcode.Lookup(code).RPC), Message: errcode.Message(err)}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return rpc.Errorf(rpc.DeadlineExceeded, "%v", err)
	case errors.Is(err, context.Canceled):
		return rpc.Errorf(rpc.Canceled, "%v", err)
	}
	return rpc.Errorf(rpc.Unavailable, "%v", err)
}
