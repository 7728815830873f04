package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/txn"
)

// TestTransfersOverRPC: participants served over Tangram RPC and found by
// service name in the server's registry — the coordinator calls
// rpc://bank-a/…, the initiator's Try too (through its own registry
// client). Saga (committed, compensated, through an outage), TCC and XA,
// money conserved after each.
func TestTransfersOverRPC(t *testing.T) {
	h := servertest.Start(t)
	rc, err := registry.NewClient(context.Background(), registry.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c, err := txn.Dial(context.Background(), txn.Config{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token, App: "bank",
		Resolve: func(ns, group, service string) (rpc.Resolver, error) {
			return rc.Resolver(registry.Key{Namespace: ns, Group: group, Service: service}), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := newBank(t, "a", store.Postgres)
	b := newBank(t, "b", store.MySQL)
	a.open(t, "alice", 100)
	b.open(t, "bob", 10)
	a.serveRPC(t, h, "bank-a")
	b.serveRPC(t, h, "bank-b")
	ctx := ctxT(t)

	// A saga: committed.
	g, err := c.NewSaga(fast).
		Add(a.rpcURL("/saga/debit"), a.rpcURL("/saga/debit-undo"), transfer{"alice", 10}).
		Add(b.rpcURL("/saga/credit"), b.rpcURL("/saga/credit-undo"), transfer{"bob", 10}).
		Submit(ctx, true)
	if err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("saga: %+v %v", g, err)
	}
	conserved(t, a, b)
	if a.account(t, "alice").balance != 90 {
		t.Fatalf("alice %+v", a.account(t, "alice"))
	}

	// A saga whose credit fails for a business reason (Aborted over
	// RPC): compensated, not retried.
	g, err = c.NewSaga(fast).
		Add(a.rpcURL("/saga/debit"), a.rpcURL("/saga/debit-undo"), transfer{"alice", 10}).
		Add(b.rpcURL("/saga/credit"), b.rpcURL("/saga/credit-undo"), transfer{"nobody", 10}).
		Submit(ctx, true)
	if err != nil || g.Status != txn.StatusAborted || !strings.Contains(g.Reason, "no such account") {
		t.Fatalf("failed saga: %+v %v", g, err)
	}
	conserved(t, a, b)

	// Through an outage of bank b: its answers are errors, retried.
	calls := b.calls.Load()
	b.errs.Store(2)
	g, err = c.NewSaga(fast).
		Add(a.rpcURL("/saga/debit"), a.rpcURL("/saga/debit-undo"), transfer{"alice", 5}).
		Add(b.rpcURL("/saga/credit"), b.rpcURL("/saga/credit-undo"), transfer{"bob", 5}).
		Submit(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, "the saga committed after the outage", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusCommitted
	})
	if n := b.calls.Load() - calls; n != 3 {
		t.Fatalf("bank b called %d times, want 3", n)
	}
	conserved(t, a, b)

	// TCC: the initiator's Try over RPC too; then a failing Try cancels.
	g, err = c.TCC(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		if err := x.Branch(ctx, a.rpcURL("/tcc/debit-try"), a.rpcURL("/tcc/debit-confirm"), a.rpcURL("/tcc/debit-cancel"), transfer{"alice", 20}); err != nil {
			return err
		}
		return x.Branch(ctx, b.rpcURL("/tcc/credit-try"), b.rpcURL("/tcc/credit-confirm"), b.rpcURL("/tcc/credit-cancel"), transfer{"bob", 20})
	})
	if err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("tcc: %+v %v", g, err)
	}
	conserved(t, a, b)
	g, err = c.TCC(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		if err := x.Branch(ctx, a.rpcURL("/tcc/debit-try"), a.rpcURL("/tcc/debit-confirm"), a.rpcURL("/tcc/debit-cancel"), transfer{"alice", 1000}); err != nil {
			return err
		}
		return errors.New("not reached")
	})
	if !errors.Is(err, txn.ErrFailure) || !strings.Contains(err.Error(), "insufficient funds") {
		t.Fatalf("tcc overdraft: %+v %v", g, err)
	}
	wait.For(t, 15*time.Second, "the cancel ran", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusAborted
	})
	conserved(t, a, b)

	// XA over RPC.
	g, err = c.XA(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		if err := x.XABranch(ctx, a.rpcURL("/xa/debit"), transfer{"alice", 7}); err != nil {
			return err
		}
		return x.XABranch(ctx, b.rpcURL("/xa/credit"), transfer{"bob", 7})
	})
	if err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("xa: %+v %v", g, err)
	}
	conserved(t, a, b)
	if got := a.account(t, "alice").balance; got != 100-10-5-20-7 {
		t.Fatalf("alice %d", got)
	}

	// A target that is not one is refused when the saga is submitted.
	_, err = c.NewSaga(fast).Add("rpc://bank-a", "rpc://bank-a/bank", transfer{"alice", 1}).Submit(ctx, false)
	if err == nil || !strings.Contains(err.Error(), "rpc://SERVICE-OR-HOST:PORT/Service/Method") {
		t.Fatalf("a bad rpc target: %v", err)
	}
}
