package apirpc_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apirpc"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/rpc"
)

var errMissing = errcode.New(errcode.NotFound, "thing: not found")

func TestError(t *testing.T) {
	for _, c := range []struct {
		err  error
		code rpc.Code
		msg  string
	}{
		{fmt.Errorf("%w: app %q", errMissing, "shop"), rpc.NotFound, `app "shop"`},
		{api.Forbidden("no"), rpc.PermissionDenied, "no"},
		{api.Of(errcode.TooManyRequests, "slow down"), rpc.ResourceExhausted, "slow down"},
		{rpc.Errorf(rpc.Aborted, "x"), rpc.Aborted, "x"},
		{context.DeadlineExceeded, rpc.DeadlineExceeded, "context deadline exceeded"},
		{errors.New("db down"), rpc.Unavailable, "db down"},
	} {
		var re *rpc.Error
		if !errors.As(apirpc.Error(c.err), &re) || re.Code != c.code || re.Message != c.msg {
			t.Errorf("Error(%v) = %v, want %v %q", c.err, apirpc.Error(c.err), c.code, c.msg)
		}
	}
	if apirpc.Error(nil) != nil {
		t.Fatal("nil")
	}
	// The RPC status maps back to the sentinel on the calling side.
	if !errors.Is(apirpc.Error(errMissing), errMissing) {
		t.Fatal("errors.Is(rpc error, sentinel) is false")
	}
}
