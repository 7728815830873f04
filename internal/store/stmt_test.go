package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
)

// TestStmt: a prepared statement gives the same answers as its text, in
// and out of transactions, across many transactions and connections; one
// that cannot be prepared fails when run, with the database's error.
func TestStmt(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			ins := s.Stmt(`INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`)
			get := s.Stmt(`SELECT password_hash FROM users WHERE name = ?`)
			list := s.Stmt(`SELECT name FROM users WHERE created_at = ? ORDER BY name`)
			for i := range 20 {
				err := s.InTx(ctx, func(tx *store.Tx) error {
					if _, err := tx.Exec(ctx, ins, fmt.Sprintf("stmt-%02d", i), fmt.Sprint(i), 77); err != nil {
						return err
					}
					var h string
					if err := tx.QueryRow(ctx, get, fmt.Sprintf("stmt-%02d", i)).Scan(&h); err != nil || h != fmt.Sprint(i) {
						return fmt.Errorf("read back in the transaction: %q %v", h, err)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			var h string
			if err := get.QueryRow(ctx, "stmt-07").Scan(&h); err != nil || h != "7" {
				t.Fatalf("outside a transaction: %q %v", h, err)
			}
			var names []string
			err := s.InTx(ctx, func(tx *store.Tx) error {
				rows, err := tx.Query(ctx, list, 77)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var n string
					if err := rows.Scan(&n); err != nil {
						return err
					}
					names = append(names, n)
				}
				return rows.Err()
			})
			if err != nil || len(names) != 20 || names[0] != "stmt-00" || names[19] != "stmt-19" {
				t.Fatalf("listed %v %v", names, err)
			}
			bad := s.Stmt(`SELECT nosuchcolumn FROM users WHERE name = ?`)
			err = s.InTx(ctx, func(tx *store.Tx) error { return tx.QueryRow(ctx, bad, "x").Scan(&h) })
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), "nosuchcolumn") {
				t.Fatalf("a statement that cannot be prepared: %v, want the database's error naming the column", err)
			}
		})
	}
}
