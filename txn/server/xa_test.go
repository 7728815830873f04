package server_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/txn"
)

// failedXATransfer runs an XA transfer of 5 from account at bank from to
// an account bank to does not have: the credit's Try fails, and it waits
// until the transaction is rolled back.
func failedXATransfer(t *testing.T, c *txn.Client, from *bank, account string, to *bank) {
	t.Helper()
	ctx := ctxT(t)
	var xid string
	_, err := c.XA(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		xid = x.XID()
		if err := x.XABranch(ctx, from.url("/xa/debit"), transfer{account, 5}); err != nil {
			return err
		}
		return x.XABranch(ctx, to.url("/xa/credit"), transfer{"nobody", 5})
	})
	if !errors.Is(err, txn.ErrFailure) {
		t.Fatalf("want the Try's failure, got %v", err)
	}
	wait.For(t, 15*time.Second, "the rollbacks ran", func() bool {
		x, err := c.Get(ctx, xid)
		return err == nil && x.Status == txn.StatusAborted
	})
}

// noneInDoubt checks that the banks hold no prepared branch of this
// test's transactions (those mine says are). XA RECOVER on MariaDB lists
// the whole server's prepared branches, and on PostgreSQL the database's:
// another package's tests running at the same time, or a benchmark, may
// hold branches of their own there.
func noneInDoubt(t *testing.T, mine func(xid string) bool, banks ...*bank) {
	t.Helper()
	for _, b := range banks {
		ps, err := b.xa.Recover(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if mine(p.XID) {
				t.Fatalf("bank %s: prepared branch left: %+v (all listed: %+v)", b.name, p, ps)
			}
		}
	}
}

// knownTo says whether coordinator c has a record of xid: the
// transactions a test ran through it.
func knownTo(c *txn.Client) func(xid string) bool {
	return func(xid string) bool {
		_, err := c.Get(context.Background(), xid)
		return err == nil
	}
}

// An XA transfer between PostgreSQL and MariaDB: reported committed only
// once both branches committed; a failed Try rolls every branch back.
func TestXATransferCommitAndRollback(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	// One connection: MariaDB keeps a prepared branch attached to its
	// session, so the session that prepared must not serve anything else.
	b.db.SetMaxOpenConns(1)
	g, err := c.XA(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		if err := x.XABranch(ctx, a.url("/xa/debit"), transfer{"alice", 25}); err != nil {
			return err
		}
		if ps, _ := a.xa.Recover(ctx); !slices.ContainsFunc(ps, func(p txn.BranchInfo) bool { return p.XID == x.XID() }) {
			t.Errorf("after the try: prepared %+v", ps)
		}
		if err := x.XABranch(ctx, b.url("/xa/credit"), transfer{"bob", 25}); err != nil {
			return err
		}
		var bal int64
		if err := b.db.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = 'bob'`).Scan(&bal); err != nil || bal != 10 {
			return fmt.Errorf("a plain read beside a prepared branch: balance %d, %v", bal, err)
		}
		return nil
	})
	if err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("commit: %+v %v", g, err)
	}
	if a.account(t, "alice").balance != 75 || b.account(t, "bob").balance != 35 {
		t.Fatalf("alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
	noneInDoubt(t, knownTo(c), a, b)
	conserved(t, a, b)

	failedXATransfer(t, c, a, "alice", b)
	noneInDoubt(t, knownTo(c), a, b)
	if a.account(t, "alice").balance != 75 {
		t.Fatalf("alice after rollback: %+v", a.account(t, "alice"))
	}
	conserved(t, a, b)
}

// A branch left prepared because its participant was down for the whole
// phase two (the transaction parked as failed) is in doubt; Resolve
// commits it by the coordinator's decision, and the coordinator's retry
// then finds it committed. A rollback before the Try refuses the late Try.
func TestXAInDoubtResolvedAndLateTryRefused(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	opts := fast
	opts.MaxAttempts = 2
	a.errs.Store(1 << 40) // bank a's phase two is down
	g, err := c.XA(ctx, opts, true, func(ctx context.Context, x *txn.Txn) error {
		if err := x.XABranch(ctx, a.url("/xa/debit"), transfer{"alice", 10}); err != nil {
			return err
		}
		return x.XABranch(ctx, b.url("/xa/credit"), transfer{"bob", 10})
	})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, "the transaction parked", func() bool {
		x, err := c.Get(ctx, g.XID)
		g = x
		return err == nil && x.Status == txn.StatusFailed
	})
	if g.Phase != "commit" {
		t.Fatalf("parked in phase %q", g.Phase)
	}
	ps, err := a.xa.Recover(ctx)
	ps = slices.DeleteFunc(ps, func(p txn.BranchInfo) bool { return !knownTo(c)(p.XID) })
	if err != nil || len(ps) != 1 || ps[0].XID != g.XID {
		t.Fatalf("in doubt at bank a: %+v %v", ps, err)
	}
	committed, rolledBack, err := a.xa.Resolve(ctx, c)
	if err != nil || committed != 1 || rolledBack != 0 {
		t.Fatalf("resolve: %d committed %d rolled back, %v", committed, rolledBack, err)
	}
	a.errs.Store(0)
	if g, err = c.Retry(ctx, g.XID, true); err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("retry: %+v %v", g, err)
	}
	noneInDoubt(t, knownTo(c), a, b)
	if a.account(t, "alice").balance != 90 || b.account(t, "bob").balance != 20 {
		t.Fatalf("alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}

	// The rollback comes first; the Try that arrives later is refused and
	// leaves nothing prepared.
	for _, bk := range []*bank{a, b} {
		bi := txn.BranchInfo{XID: "late-" + bk.name, Branch: "0", Op: txn.OpCancel, Mode: txn.ModeXA}
		if err := bk.xa.Rollback(ctx, bi); err != nil {
			t.Fatal(err)
		}
		bi.Op = txn.OpTry
		err := bk.xa.Try(ctx, bi, func(ctx context.Context, conn *sql.Conn) error {
			_, err := conn.ExecContext(ctx, bk.q(`UPDATE accounts SET balance = balance + 1000 WHERE id = ?`), "alice")
			return err
		})
		if !errors.Is(err, txn.ErrSuspended) {
			t.Fatalf("bank %s: late try: %v", bk.name, err)
		}
	}
	noneInDoubt(t, knownTo(c), a, b)
	conserved(t, a, b)
}

// With Hold, a MariaDB branch's Confirm or Cancel runs on the session that
// prepared it: no connection is closed and opened per branch, no branch is
// detached from its session, and a Confirm reaching another process while
// the branch is held is not reported done. A session held past Hold (or
// at Close) is closed, and the branch is then settled from any session.
func TestXAHeldSessionSettlesTheBranch(t *testing.T) {
	b := newBank(t, "held", store.MySQL)
	b.open(t, "carol", 100)
	ctx := ctxT(t)
	x := &txn.XA{DB: b.db, Hold: time.Minute}
	defer x.Close()
	elsewhere := &txn.XA{DB: b.db} // another process's XA on the same database
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// A failed run must not leave its branches prepared (and their
		// row locks held) on the shared MariaDB for the tests after it.
		_ = x.Close()
		ps, _ := elsewhere.Recover(context.Background())
		for _, p := range ps {
			if strings.HasPrefix(p.XID, "held") {
				_ = elsewhere.Rollback(context.Background(), p)
			}
		}
	})
	debit := func(ids map[int64]bool) func(ctx context.Context, conn *sql.Conn) error {
		return func(ctx context.Context, conn *sql.Conn) error {
			var id int64
			if err := conn.QueryRowContext(ctx, `SELECT CONNECTION_ID()`).Scan(&id); err != nil {
				return err
			}
			ids[id] = true
			_, err := conn.ExecContext(ctx, `UPDATE accounts SET balance = balance - 1 WHERE id = 'carol'`)
			return err
		}
	}
	sessions := map[int64]bool{}
	for i := range 10 {
		bi := txn.BranchInfo{XID: fmt.Sprintf("held%d", i), Branch: "0", Op: txn.OpTry, Mode: txn.ModeXA}
		if err := x.Try(ctx, bi, debit(sessions)); err != nil {
			t.Fatal(err)
		}
		again := map[int64]bool{}
		if err := x.Try(ctx, bi, debit(again)); err != nil || len(again) != 0 {
			t.Fatalf("a repeated Try while held: %v, ran its statements %d times", err, len(again))
		}
		if err := elsewhere.Commit(ctx, bi); err == nil {
			t.Fatal("a Confirm on another session said committed while the branch was prepared and held")
		}
		if err := x.Commit(ctx, bi); err != nil {
			t.Fatal(err)
		}
		if got := b.account(t, "carol").balance; got != int64(99-i) {
			t.Fatalf("after commit %d: balance %d", i, got)
		}
	}
	if len(sessions) > 3 {
		t.Fatalf("10 branches ran on %d sessions: held sessions were not given back to the pool", len(sessions))
	}

	// Cancel on the held session: the debit is undone and a late Try refused.
	bi := txn.BranchInfo{XID: "heldcancel", Branch: "0", Op: txn.OpTry, Mode: txn.ModeXA}
	if err := x.Try(ctx, bi, debit(sessions)); err != nil {
		t.Fatal(err)
	}
	if err := x.Rollback(ctx, bi); err != nil {
		t.Fatal(err)
	}
	if err := x.Try(ctx, bi, debit(sessions)); !errors.Is(err, txn.ErrSuspended) {
		t.Fatalf("a Try after its Cancel: %v", err)
	}
	if got := b.account(t, "carol").balance; got != 90 {
		t.Fatalf("after the cancel: balance %d, want 90", got)
	}

	// Past Hold, and at Close, the session is closed: the branch is then
	// committed from elsewhere.
	short := &txn.XA{DB: b.db, Hold: 100 * time.Millisecond}
	defer short.Close()
	for i, holder := range []*txn.XA{short, x} {
		bi := txn.BranchInfo{XID: fmt.Sprintf("heldlate%d", i), Branch: "0", Op: txn.OpTry, Mode: txn.ModeXA}
		if err := holder.Try(ctx, bi, debit(sessions)); err != nil {
			t.Fatal(err)
		}
		if holder == x {
			x.Close()
		}
		wait.For(t, 10*time.Second, "the branch committed from another session", func() bool {
			return elsewhere.Commit(ctx, bi) == nil
		})
	}
	// After Close nothing is held any more: a later branch is detached
	// at once, not kept for a minute by a closed XA.
	bi = txn.BranchInfo{XID: "heldafterclose", Branch: "0", Op: txn.OpTry, Mode: txn.ModeXA}
	if err := x.Try(ctx, bi, debit(sessions)); err != nil {
		t.Fatal(err)
	}
	if err := elsewhere.Commit(ctx, bi); err != nil {
		t.Fatalf("a branch prepared after Close is not detached: %v", err)
	}
	if got := b.account(t, "carol").balance; got != 87 {
		t.Fatalf("after the released branches: balance %d, want 87", got)
	}
	noneInDoubt(t, func(xid string) bool { return strings.HasPrefix(xid, "held") }, b)
}

// Driven by the coordinator, a participant holding its sessions (Hold)
// commits and rolls back its branches on them: transfers commit, a
// failed one is rolled back on the held session, nothing stays prepared.
func TestXATransferWithHeldSessions(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	b.xa = &txn.XA{DB: b.db, Hold: time.Minute}
	defer b.xa.Close()
	for range 5 {
		g, err := c.XA(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
			if err := x.XABranch(ctx, a.url("/xa/debit"), transfer{"alice", 2}); err != nil {
				return err
			}
			return x.XABranch(ctx, b.url("/xa/credit"), transfer{"bob", 2})
		})
		if err != nil || g.Status != txn.StatusCommitted {
			t.Fatalf("commit: %+v %v", g, err)
		}
	}
	if a.account(t, "alice").balance != 90 || b.account(t, "bob").balance != 20 {
		t.Fatalf("alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
	// Bob's debit is prepared and held; the credit fails; the Cancel
	// rolls the held branch back.
	failedXATransfer(t, c, b, "bob", a)
	if got := b.account(t, "bob").balance; got != 20 {
		t.Fatalf("bob after the rollback: %d, want 20", got)
	}
	noneInDoubt(t, knownTo(c), a, b)
	conserved(t, a, b)
}
