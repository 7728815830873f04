package server_test

import (
	"database/sql"
	"fmt"
	"testing"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/txn"
)

// The barrier's insert is prepared by Init and then once per connection,
// not on every call: on MariaDB a statement with arguments is otherwise a
// prepare, an execute and a close each time.
func TestBarrierPreparesItsInsertOncePerConnection(t *testing.T) {
	b := newBank(t, "prep", store.MySQL)
	b.db.SetMaxOpenConns(1)
	ctx := ctxT(t)
	prepares := func() int { return sessionPrepares(t, b.db) }
	before := prepares()
	for i := range 20 {
		bi := txn.BranchInfo{XID: fmt.Sprintf("%024x", i+1), Branch: "0", Op: txn.OpAction, Mode: txn.ModeSaga}
		if err := b.bar.Call(ctx, bi, func(*sql.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if got := prepares() - before; got > 1 {
		t.Fatalf("20 barrier calls prepared %d statements on their connection, want at most 1", got)
	}
	// Still exact: a second delivery of an operation does not run it.
	again := txn.BranchInfo{XID: fmt.Sprintf("%024x", 1), Branch: "0", Op: txn.OpAction, Mode: txn.ModeSaga}
	if err := b.bar.Call(ctx, again, func(*sql.Tx) error { t.Error("a duplicate ran"); return nil }); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM tangram_barrier`).Scan(&n); err != nil || n != 20 {
		t.Fatalf("barrier rows %d, %v; want 20", n, err)
	}
}

// sessionPrepares is how many statements MariaDB has prepared on the
// session db's next statement runs on (db holds one connection).
func sessionPrepares(t *testing.T, db *sql.DB) int {
	t.Helper()
	var name string
	var n int
	if err := db.QueryRowContext(ctxT(t), `SHOW SESSION STATUS LIKE 'Com_stmt_prepare'`).Scan(&name, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
