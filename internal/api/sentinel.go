package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tangram-dev/tangram/rpc"
)

// RPCError maps an error of a component's API to a Tangram RPC error, for
// the components that serve the same operations over HTTP and RPC: an
// *Error by its status, errors wrapping notFound or invalid (the
// component's sentinels) to NotFound and InvalidArgument, others to
// Unavailable (the store or a peer failed: worth retrying).
func RPCError(err, notFound, invalid error) error {
	var ae *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		switch ae.Status {
		case http.StatusUnauthorized:
			return rpc.Errorf(rpc.Unauthenticated, "%s", ae.Message)
		case http.StatusForbidden:
			return rpc.Errorf(rpc.PermissionDenied, "%s", ae.Message)
		case http.StatusNotFound:
			return rpc.Errorf(rpc.NotFound, "%s", ae.Message)
		}
		return rpc.Errorf(rpc.InvalidArgument, "%s", ae.Message)
	case errors.Is(err, notFound):
		return rpc.Errorf(rpc.NotFound, "%v", err)
	case errors.Is(err, invalid):
		return rpc.Errorf(rpc.InvalidArgument, "%v", err)
	}
	var re *rpc.Error
	if errors.As(err, &re) {
		return err
	}
	return rpc.Errorf(rpc.Unavailable, "%v", err)
}

// MapSentinels turns a component's errors into API errors: an *Error as it
// is, errors wrapping notFound (e.g. "job: not found") into 404 and invalid
// ("job: invalid") into 400, with the sentinel's words trimmed from the
// message; others pass through (500).
func MapSentinels(err, notFound, invalid error) error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, notFound):
		return NotFound("%s", strings.TrimPrefix(err.Error(), notFound.Error()+": "))
	case errors.Is(err, invalid):
		return BadRequest("%s", strings.TrimPrefix(err.Error(), invalid.Error()+" "))
	}
	return err
}
