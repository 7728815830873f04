package lease_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tangram-dev/tangram/lock/lease"
)

func TestGuardRefusesOlderTokens(t *testing.T) {
	var g lease.Guard
	if err := g.Admit("row:1", 5); err != nil {
		t.Fatal(err)
	}
	if err := g.Admit("row:1", 5); err != nil {
		t.Fatalf("the same holder writing again: %v", err)
	}
	if err := g.Admit("row:1", 4); !errors.Is(err, lease.ErrStaleFence) {
		t.Fatalf("older token: %v, want ErrStaleFence", err)
	}
	if err := g.Admit("row:2", 1); err != nil {
		t.Fatalf("another resource: %v", err)
	}
}

func TestLeaseEndsAndItsContext(t *testing.T) {
	l := lease.NewLease(7)
	ctx, cancel := l.Context(context.Background())
	defer cancel()
	lost := errors.New("renewal found another owner")
	l.End(lost)
	l.End(nil) // the first end wins
	<-ctx.Done()
	if !errors.Is(context.Cause(ctx), lost) || !errors.Is(l.Err(), lost) {
		t.Fatalf("cause %v, Err %v", context.Cause(ctx), l.Err())
	}
	r := lease.NewLease(8)
	r.End(nil)
	if r.Err() != nil {
		t.Fatalf("a released lease's Err is %v", r.Err())
	}
	rctx, rcancel := r.Context(context.Background())
	defer rcancel()
	if rctx.Err() == nil {
		t.Fatal("the context of an ended lease is live")
	}
}
