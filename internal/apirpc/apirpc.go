// Package apirpc maps the errors of a component's API onto Tangram RPC
// status codes, for the components that serve the same operations over HTTP
// and RPC. It is apart from package api so that clients, which decode API
// errors, do not link the RPC framework.
package apirpc

import (
	"errors"
	"net/http"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/rpc"
)

// Error maps an error of a component's API to a Tangram RPC error, for
// the components that serve the same operations over HTTP and RPC: an
// *Error by its status, errors wrapping notFound or invalid (the
// component's sentinels) to NotFound and InvalidArgument, others to
// Unavailable (the store or a peer failed: worth retrying).
func Error(err, notFound, invalid error) error {
	var ae *api.Error
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
