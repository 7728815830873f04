package server_test

import (
	"context"
	"database/sql"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/netfault"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/txn"
)

// viaProxy reconnects the bank to its database through a fault proxy,
// so a test can take the database "down" (every connection closed, new
// ones refused) and bring it back, as a restart looks to its clients.
func (b *bank) viaProxy(t *testing.T) *netfault.Proxy {
	t.Helper()
	drv, dsn := b.driverDSN(t)
	var p *netfault.Proxy
	if b.pg {
		u, _ := url.Parse(dsn)
		p = netfault.New(t, u.Host)
		u.Host = p.Addr()
		dsn = u.String()
	} else {
		u, _ := url.Parse(storetest.MySQLURL())
		p = netfault.New(t, u.Host)
		dsn = strings.Replace(dsn, "tcp("+u.Host+")", "tcp("+p.Addr()+")", 1)
	}
	db, err := sql.Open(drv, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b.db, b.bar.DB, b.xa.DB = db, db, db
	return p
}

// A participant's database restarts in the middle of phase two: a
// saga's credit, and an XA transfer's commit after both branches were
// prepared, fail while it is down and are retried until it is back; the
// transactions commit, the money is conserved, no branch stays prepared.
func TestParticipantDatabaseRestartMidPhaseTwo(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	p := b.viaProxy(t)
	opts := fast
	opts.MaxAttempts = -1

	// Saga: bank b's database is down when the credit comes.
	p.Down()
	calls := b.calls.Load()
	g, err := c.NewSaga(opts).
		Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 10}).
		Add(b.url("/saga/credit"), b.url("/saga/credit-undo"), transfer{"bob", 10}).
		Submit(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "two failed credits", func() bool { return b.calls.Load() >= calls+2 })
	if x, err := c.Get(ctx, g.XID); err != nil || x.Status != txn.StatusCommitting {
		t.Fatalf("while down: %+v %v", x, err)
	}
	p.Up()
	wait.For(t, 15*time.Second, "the saga committed once the database was back", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusCommitted
	})
	conserved(t, a, b)
	if got := b.account(t, "bob").balance; got != 20 {
		t.Fatalf("bob %d, want 20", got)
	}

	// XA: both branches prepared, then bank b's database goes down before
	// the coordinator commits.
	calls = b.calls.Load()
	g, err = c.XA(ctx, opts, false, func(ctx context.Context, x *txn.Txn) error {
		if err := x.XABranch(ctx, a.url("/xa/debit"), transfer{"alice", 7}); err != nil {
			return err
		}
		if err := x.XABranch(ctx, b.url("/xa/credit"), transfer{"bob", 7}); err != nil {
			return err
		}
		p.Down()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "two failed commits", func() bool { return b.calls.Load() >= calls+3 })
	if x, err := c.Get(ctx, g.XID); err != nil || x.Status != txn.StatusCommitting {
		t.Fatalf("while down: %+v %v", x, err)
	}
	p.Up()
	wait.For(t, 15*time.Second, "the XA transfer committed once the database was back", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusCommitted
	})
	conserved(t, a, b)
	if got := b.account(t, "bob").balance; got != 27 {
		t.Fatalf("bob %d, want 27", got)
	}
	noneInDoubt(t, knownTo(c), a, b)
}
