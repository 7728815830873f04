package shard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/shard"
)

// readAll reads a cursor to its end.
func readAll(t *testing.T, c *shard.Cursor) [][]any {
	t.Helper()
	var out [][]any
	for {
		row := make([]any, len(c.Columns))
		err := c.Next(row)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, row)
	}
}

// A cursor answers as Query does — streamed from the one data node when
// one answers the query, merged otherwise — and closing it early gives the
// data source's connection back and ends the statement for Drain.
func TestCursorOnMariaDB(t *testing.T) {
	ex, dbs := shop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 24 {
		if _, err := ex.Exec(ctx, "INSERT INTO t_order (order_id, user_id, amount) VALUES (?, ?, ?)", 100+i, i%3, 10*i); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		q    string
		args []any
	}{
		{"SELECT order_id, amount FROM t_order WHERE user_id = ? AND order_id = ?", []any{0, 103}},              // one node: streamed
		{"SELECT order_id, amount * 2 AS twice FROM t_order WHERE user_id = ? AND order_id = ?", []any{1, 104}}, // one node, a label
		{"SELECT o.order_id AS id FROM t_order o WHERE o.user_id = ? ORDER BY o.order_id", []any{2}},            // one database, four tables: merged
		{"SELECT order_id, amount FROM t_order ORDER BY order_id LIMIT 5, 4", nil},                              // every node: merged
		{"SELECT order_id FROM t_order WHERE user_id = ? AND order_id = ?", []any{1, 999}},                      // no row
	} {
		want, err := ex.Query(ctx, c.q, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.q, err)
		}
		cur, err := ex.Cursor(ctx, c.q, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.q, err)
		}
		got := readAll(t, cur)
		if err := cur.Close(); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cur.Columns, want.Columns) {
			t.Errorf("%s: columns %v, Query's %v", c.q, cur.Columns, want.Columns)
		}
		if fmt.Sprint(got) != fmt.Sprint(want.Values) {
			t.Errorf("%s: rows %v, Query's %v", c.q, got, want.Values)
		}
		if len(c.args) == 2 && c.args[1] == 103 && len(got) != 1 {
			t.Errorf("%s: %d rows, want 1", c.q, len(got))
		}
	}

	// Closed after one row of several: the connection goes back to the
	// pool (one connection only, so a leak would block the next query)
	// and Drain no longer waits for the statement.
	dbs["ds_0"].SetMaxOpenConns(1)
	cur, err := ex.Cursor(ctx, "SELECT order_id FROM t_order_0 WHERE user_id = ?", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.Next(make([]any, 1)); err != nil {
		t.Fatal(err)
	}
	if ex.Drain(time.Millisecond) {
		t.Error("Drain: a cursor open, yet nothing running")
	}
	if err := cur.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cur.Next(make([]any, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("Next after Close: %v, want io.EOF", err)
	}
	if !ex.Drain(time.Second) {
		t.Error("Drain: the closed cursor still counts as running")
	}
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShort()
	var n int
	if err := dbs["ds_0"].QueryRowContext(short, "SELECT COUNT(*) FROM t_order_0").Scan(&n); err != nil {
		t.Fatalf("the closed cursor kept its connection: %v", err)
	}

	// Inside a transaction the rows are read whole: the next statement
	// runs while the first's rows are still open.
	tx, err := ex.Begin(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	first, err := tx.Cursor(ctx, "SELECT order_id FROM t_order WHERE user_id = ? AND order_id = ?", 0, 103)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE t_order SET amount = amount + 1 WHERE user_id = ? AND order_id = ?", 0, 103); err != nil {
		t.Fatalf("a statement while a cursor is open in the transaction: %v", err)
	}
	if rows := readAll(t, first); len(rows) != 1 {
		t.Errorf("transaction cursor: %v, want one row", rows)
	}
}
