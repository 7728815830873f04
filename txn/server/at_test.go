package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/txn"
	"github.com/tangram-dev/tangram/txn/at"
)

// atBank is a bank's AT-mode service: its database opened through txn/at,
// plain local transactions in its handlers (no Confirm or Cancel code),
// and the phase-two endpoint the coordinator calls.
type atBank struct {
	*bank
	adb *at.DB
	url string
	srv *http.Server
}

// driverDSN is the bank's database for database/sql.
func (b *bank) driverDSN(t *testing.T) (string, string) {
	t.Helper()
	if b.pg {
		var name string
		if err := b.db.QueryRow(`SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(storetest.PostgresURL())
		u.Path = "/" + name
		return "pgx", u.String()
	}
	var name string
	if err := b.db.QueryRow(`SELECT DATABASE()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(storetest.MySQLURL())
	pass, _ := u.User.Password()
	return "mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s", u.User.Username(), pass, u.Host, name)
}

func newATBank(t *testing.T, b *bank, c *txn.Client, lockWait time.Duration) *atBank {
	t.Helper()
	ctx := context.Background()
	if _, err := b.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS ledger (id VARCHAR(96) PRIMARY KEY, account VARCHAR(32) NOT NULL, amount BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ab := &atBank{bank: b, url: "http://" + ln.Addr().String()}
	drv, dsn := b.driverDSN(t)
	ab.adb, err = at.Open(drv, dsn, at.Config{Coordinator: c, Resource: "bank-" + b.name, URL: ab.url + "/at/phase2", LockWait: lockWait})
	if err != nil {
		t.Fatal(err)
	}
	if err := ab.adb.Init(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /at/phase2", ab.adb.Handler())
	// move changes an account by delta inside the caller's global
	// transaction and writes a ledger row: an UPDATE and an INSERT in one
	// local transaction.
	mux.Handle("POST /at/move", txn.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tr transfer
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		err := ab.move(r.Context(), tr)
		switch {
		case errors.Is(err, txn.ErrFailure):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})))
	// purge deletes an account's ledger rows (a DELETE to undo).
	mux.Handle("POST /at/purge", txn.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tr transfer
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := ab.adb.ExecContext(r.Context(), b.q(`DELETE FROM ledger WHERE account = ?`), tr.Account); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})))
	ab.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = ab.srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = ab.srv.Close()
		_ = ab.adb.Close()
	})
	return ab
}

func (ab *atBank) move(ctx context.Context, tr transfer) error {
	tx, err := ab.adb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it does nothing
	res, err := tx.ExecContext(ctx, ab.q(`UPDATE accounts SET balance = balance + ? WHERE id = ? AND balance + ? >= 0`), tr.Amount, tr.Account, tr.Amount)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: %s: no such account or insufficient funds", txn.ErrFailure, tr.Account)
	}
	id := txn.XIDFrom(ctx) + ":" + tr.Account
	if _, err := tx.ExecContext(ctx, ab.q(`INSERT INTO ledger (id, account, amount) VALUES (?, ?, ?)`), id, tr.Account, tr.Amount); err != nil {
		return err
	}
	return tx.Commit()
}

// call posts tr to a service inside ctx's global transaction.
func call(ctx context.Context, u string, tr transfer) error {
	body, _ := json.Marshal(tr)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	txn.SetHeader(ctx, req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", u, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}

func (b *bank) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := b.db.QueryRow(b.q(q), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// ended waits for xid to reach a final (or parked) state.
func ended(t *testing.T, c *txn.Client, xid string) txn.Global {
	t.Helper()
	var g txn.Global
	wait.For(t, 15*time.Second, "transaction "+xid+" to end", func() bool {
		var err error
		g, err = c.Get(context.Background(), xid)
		return err == nil && (g.Status.Final() || g.Status == txn.StatusFailed)
	})
	return g
}

func TestATTransferCommitRollbackAndFailure(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	aa, bb := newATBank(t, a, c, 0), newATBank(t, b, c, 0)
	moveBoth := func(amount int64) func(ctx context.Context, _ *txn.Txn) error {
		return func(ctx context.Context, _ *txn.Txn) error {
			if err := call(ctx, aa.url+"/at/move", transfer{Account: "alice", Amount: -amount}); err != nil {
				return err
			}
			return call(ctx, bb.url+"/at/move", transfer{Account: "bob", Amount: amount})
		}
	}
	// Commit: both local transactions stay; their undo records go.
	g, err := c.AT(ctx, fast, true, moveBoth(30))
	if err != nil || g.Status != txn.StatusCommitted || len(g.Branches) != 2 {
		t.Fatalf("commit: %+v %v", g, err)
	}
	if a.account(t, "alice").balance != 70 || b.account(t, "bob").balance != 40 || b.count(t, `SELECT COUNT(*) FROM ledger`) != 1 {
		t.Fatalf("after commit: alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
	wait.For(t, 5*time.Second, "undo records of committed branches to be deleted", func() bool {
		return a.count(t, `SELECT COUNT(*) FROM tangram_undo`) == 0 && b.count(t, `SELECT COUNT(*) FROM tangram_undo`) == 0
	})
	conserved(t, a, b)

	// Rollback: the initiator changes its mind after both branches
	// committed locally; the before images come back.
	g, err = c.AT(ctx, fast, true, func(ctx context.Context, tx *txn.Txn) error {
		if err := moveBoth(25)(ctx, tx); err != nil {
			return err
		}
		if a.account(t, "alice").balance != 45 { // visible at once: read uncommitted
			return errors.New("the debit is not visible")
		}
		return errors.New("changed my mind")
	})
	if err == nil || err.Error() != "changed my mind" {
		t.Fatalf("rollback: %v", err)
	}
	if g = ended(t, c, g.XID); g.Status != txn.StatusAborted {
		t.Fatalf("rollback ended %s: %s", g.Status, g.Reason)
	}
	if a.account(t, "alice").balance != 70 || b.account(t, "bob").balance != 40 || b.count(t, `SELECT COUNT(*) FROM ledger WHERE id = ?`, g.XID+":bob") != 0 {
		t.Fatalf("after rollback: alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
	conserved(t, a, b)

	// A business failure of the second branch rolls back the first.
	g, err = c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
		if err := call(ctx, aa.url+"/at/move", transfer{Account: "alice", Amount: -5}); err != nil {
			return err
		}
		return call(ctx, bb.url+"/at/move", transfer{Account: "nobody", Amount: 5})
	})
	if err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Fatalf("failure: %v", err)
	}
	if g = ended(t, c, g.XID); g.Status != txn.StatusAborted || len(g.Branches) != 1 {
		t.Fatalf("failure ended %+v", g)
	}
	if a.account(t, "alice").balance != 70 {
		t.Fatalf("alice after the failed transfer: %+v", a.account(t, "alice"))
	}
	conserved(t, a, b)

	// A DELETE rolled back puts the rows back as they were; a statement
	// outside a transaction inside a global one is a branch of its own.
	before := b.count(t, `SELECT COUNT(*) FROM ledger WHERE account = 'bob'`)
	g, err = c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
		if err := call(ctx, bb.url+"/at/purge", transfer{Account: "bob"}); err != nil {
			return err
		}
		if n := b.count(t, `SELECT COUNT(*) FROM ledger WHERE account = 'bob'`); n != 0 {
			return fmt.Errorf("purge left %d rows", n)
		}
		return errors.New("undo the purge")
	})
	if g = ended(t, c, g.XID); g.Status != txn.StatusAborted || err == nil || err.Error() != "undo the purge" {
		t.Fatalf("purge: %+v %v", g, err)
	}
	if n := b.count(t, `SELECT COUNT(*) FROM ledger WHERE account = 'bob' AND amount = 30`); n != before || n != 1 {
		t.Fatalf("ledger after the purge was undone: %d rows (had %d)", n, before)
	}
	if s := bb.adb.Stats(); s.Branches < 3 || s.Rollbacks < 2 || s.Dirty != 0 {
		t.Fatalf("bank b stats %+v", s)
	}
}

func TestATRowLocksMakeWritersWaitBoundedly(t *testing.T) {
	c, a, _ := setup(t)
	ctx := ctxT(t)
	aa := newATBank(t, a, c, 0)
	impatient := newATBank(t, a, c, 300*time.Millisecond)

	// The first transaction debits alice and holds its row lock until
	// told to finish.
	held, release := make(chan struct{}, 1), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
			if err := call(ctx, aa.url+"/at/move", transfer{Account: "alice", Amount: -10}); err != nil {
				return err
			}
			held <- struct{}{}
			<-release
			return nil
		})
		first <- err
	}()
	wait.Receive(t, 10*time.Second, "the first transaction to hold alice", held)

	// A writer with a short wait gives up with an error naming the
	// holder, and its local transaction is rolled back.
	_, err := c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
		return call(ctx, impatient.url+"/at/move", transfer{Account: "alice", Amount: -1})
	})
	if err == nil || !strings.Contains(err.Error(), "global row lock wait timed out") || !strings.Contains(err.Error(), "accounts:alice") {
		t.Fatalf("impatient writer: %v", err)
	}
	// So does a reader that locks the row (SELECT … FOR UPDATE).
	_, err = c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
		tx, err := impatient.adb.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback() //nolint:errcheck // read only
		var bal int64
		return tx.QueryRowContext(ctx, a.q(`SELECT balance FROM accounts WHERE id = ? FOR UPDATE`), "alice").Scan(&bal)
	})
	if err == nil || !strings.Contains(err.Error(), "global row lock wait timed out") {
		t.Fatalf("locking reader: %v", err)
	}
	if got := a.account(t, "alice").balance; got != 90 {
		t.Fatalf("alice %d after the refused writer, want 90", got)
	}

	// A patient writer waits, and goes on once the first commits.
	second := make(chan error, 1)
	waits := aa.adb.Stats().LockWaits
	go func() {
		_, err := c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
			return call(ctx, aa.url+"/at/move", transfer{Account: "alice", Amount: -10})
		})
		second <- err
	}()
	wait.For(t, 10*time.Second, "the second writer to wait for the lock", func() bool { return aa.adb.Stats().LockWaits > waits })
	close(release)
	if err := wait.Receive(t, 10*time.Second, "the first transaction", first); err != nil {
		t.Fatal(err)
	}
	if err := wait.Receive(t, 10*time.Second, "the second transaction", second); err != nil {
		t.Fatal(err)
	}
	if got := a.account(t, "alice").balance; got != 80 {
		t.Fatalf("alice %d, want 80", got)
	}
	// Local transactions can respect global locks too.
	tx, err := aa.adb.BeginTx(at.WithGlobalLock(ctx), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, a.q(`UPDATE accounts SET balance = balance + 0 WHERE id = ?`), "alice"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("a local transaction respecting free locks: %v", err)
	}
}

func TestATDirtyWriteParksForAnOperator(t *testing.T) {
	c, a, _ := setup(t)
	ctx := ctxT(t)
	aa := newATBank(t, a, c, 0)
	g, err := c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
		if err := call(ctx, aa.url+"/at/move", transfer{Account: "alice", Amount: -10}); err != nil {
			return err
		}
		// Someone outside the global transaction writes alice's row.
		if _, err := a.db.Exec(a.q(`UPDATE accounts SET balance = balance + 1000 WHERE id = ?`), "alice"); err != nil {
			return err
		}
		return errors.New("roll back over a dirty write")
	})
	if err == nil {
		t.Fatal("no error")
	}
	g = ended(t, c, g.XID)
	if g.Status != txn.StatusFailed || !strings.Contains(g.Reason, "dirty write") || !strings.Contains(g.Reason, "accounts:alice") {
		t.Fatalf("want parked for an operator: %s %q", g.Status, g.Reason)
	}
	if got := a.account(t, "alice").balance; got != 1090 {
		t.Fatalf("alice %d: the rollback overwrote a write it did not make", got)
	}
	// Its rows stay locked: no other global transaction writes them.
	rep, err := c.Locks(ctx, txn.LocksRequest{Resource: "bank-a", Keys: []string{"accounts:alice"}})
	if err != nil || rep.Conflict == nil || rep.Conflict.XID != g.XID {
		t.Fatalf("locks of a parked transaction: %+v %v", rep, err)
	}
	if s := aa.adb.Stats(); s.Dirty != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The operator takes the stray write back out, then retries.
	if _, err := a.db.Exec(a.q(`UPDATE accounts SET balance = balance - 1000 WHERE id = ?`), "alice"); err != nil {
		t.Fatal(err)
	}
	if g, err = c.Retry(ctx, g.XID, true); err != nil || g.Status != txn.StatusAborted {
		t.Fatalf("retry: %+v %v", g, err)
	}
	if got := a.account(t, "alice").balance; got != 100 {
		t.Fatalf("alice %d after the rollback, want 100", got)
	}
	rep, err = c.Locks(ctx, txn.LocksRequest{Resource: "bank-a", Keys: []string{"accounts:alice"}})
	if err != nil || rep.Conflict != nil {
		t.Fatalf("locks after the rollback: %+v %v", rep, err)
	}
}

// The AT wrapper's own statements (the images, the undo log) are
// prepared once per connection: on MariaDB a statement with arguments is
// otherwise a prepare, an execute and a close each time. The
// application's statements are left as the driver runs them.
func TestATPreparesItsOwnStatementsOncePerConnection(t *testing.T) {
	c, _, b := setup(t)
	ctx := ctxT(t)
	bb := newATBank(t, b, c, 0)
	bb.adb.SetMaxOpenConns(1)
	prepares := func() int { return sessionPrepares(t, bb.adb.DB) }
	before := prepares()
	const n = 10
	for range n {
		g, err := c.AT(ctx, fast, true, func(ctx context.Context, _ *txn.Txn) error {
			return bb.move(ctx, transfer{Account: "bob", Amount: 1})
		})
		if err != nil || g.Status != txn.StatusCommitted {
			t.Fatalf("%+v %v", g, err)
		}
	}
	// Each transaction: its two statements and a batch of undo deletes;
	// once: the wrapper's four (two images of the UPDATE, one of the
	// INSERT, the undo record), a primary-key look-up per table and a
	// spare. Unprepared, the wrapper's four come with every transaction
	// (73 here).
	if got, most := prepares()-before, 3*n+7; got > most {
		t.Fatalf("%d AT transactions prepared %d statements on their connection, want at most %d", n, got, most)
	}
	if got := b.account(t, "bob").balance; got != 10+n {
		t.Fatalf("bob %d, want %d", got, 10+n)
	}
}
