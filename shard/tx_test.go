package shard_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/shard"
)

// A transaction's statement over several data sources runs on the
// connections the transaction holds and takes no slot of the executor's
// MaxParallel budget: a statement outside it that holds the only slot
// while it waits on the transaction's row lock does not stop the
// transaction from going on and committing (which a database could not
// see as a deadlock: it would end only at innodb_lock_wait_timeout, with
// the waiting statement failing).
func TestTransactionTakesNoParallelSlot(t *testing.T) {
	base, dbs := shop(t)
	ex, err := shard.NewExecutor(base.Rules(), dbs, shard.ExecutorConfig{MaxParallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Order 100 of user 0 lives in ds_0, order 101 of user 1 in ds_1.
	if _, err := ex.Exec(ctx, "INSERT INTO t_order (order_id, user_id, amount) VALUES (?, ?, ?), (?, ?, ?)", 100, 0, 1, 101, 1, 1); err != nil {
		t.Fatal(err)
	}
	tx, err := ex.Begin(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(ctx, "UPDATE t_order SET amount = amount + 1 WHERE user_id = ? AND order_id = ?", 0, 100); err != nil {
		t.Fatal(err)
	}
	// Outside the transaction, an update of both orders on every node
	// (no user_id): one unit at a time, and the one on order 100's table
	// waits for the transaction's lock, holding the only slot.
	outside := make(chan error, 1)
	go func() {
		_, err := ex.Exec(ctx, "UPDATE t_order SET amount = amount + 10 WHERE order_id IN (100, 101)")
		outside <- err
	}()
	var ds0 string
	if err := dbs["ds_0"].QueryRowContext(ctx, "SELECT DATABASE()").Scan(&ds0); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the outside update to wait on the transaction's row lock", func() bool {
		select {
		case err := <-outside:
			t.Fatalf("the outside update ended before the transaction did: %v", err)
		default:
		}
		// In flight on order 100's table (it takes milliseconds unless it
		// waits): the one slot is held. (information_schema.innodb_trx was
		// seen not to list such an autocommit statement's wait.)
		var n int
		err := dbs["ds_0"].QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.processlist
			WHERE db = ? AND command = 'Query' AND info LIKE 'UPDATE%t_order_0%+10%'`, ds0).Scan(&n)
		return err == nil && n > 0
	})
	// The transaction reads both data sources and commits meanwhile.
	rows, err := tx.Query(ctx, "SELECT order_id, amount FROM t_order WHERE order_id IN (100, 101) ORDER BY order_id")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows.Values) != 2 {
		t.Fatalf("the transaction read %v, want orders 100 and 101", rows.Values)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := wait.Receive(t, 30*time.Second, "the outside update", outside); err != nil {
		t.Fatalf("the outside update: %v", err)
	}
	got, err := ex.Query(ctx, "SELECT order_id, amount FROM t_order WHERE order_id IN (100, 101) ORDER BY order_id")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range got.Values {
		fmt.Fprintf(&b, "%s=%s ", text(r[0]), text(r[1]))
	}
	if b.String() != "100=12 101=11 " {
		t.Errorf("amounts %q, want 100=12 101=11", b.String())
	}
}

func text(v any) string {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return fmt.Sprint(v)
}
