package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
)

// TestStoreSuite runs the same checks against SQLite, PostgreSQL and MariaDB.
func TestStoreSuite(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			dsn := storetest.DSN(t, d)
			s, err := store.Open(ctx, store.Config{DSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			migs, _ := store.Migrations()
			v, err := s.SchemaVersion(ctx)
			if err != nil || v != migs[len(migs)-1].Version {
				t.Fatalf("schema version = %d, %v; want %d", v, err, migs[len(migs)-1].Version)
			}
			// Reopening applies nothing twice.
			s2, err := store.Open(ctx, store.Config{DSN: dsn})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			s2.Close()

			id1, err := s.InsertID(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, "ann", "x", store.NowMillis())
			if err != nil {
				t.Fatal(err)
			}
			id2, err := s.InsertID(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, "bob", "x", store.NowMillis())
			if err != nil || id2 <= id1 {
				t.Fatalf("ids %d %d err %v", id1, id2, err)
			}
			_, err = s.ExecContext(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, "ann", "y", 1)
			if !store.IsUniqueViolation(err) {
				t.Fatalf("duplicate insert: want unique violation, got %v", err)
			}

			// A failing transaction leaves nothing behind.
			boom := errors.New("boom")
			err = s.InTx(ctx, func(tx *store.Tx) error {
				if _, err := tx.InsertID(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, "carl", "x", 1); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("InTx err = %v", err)
			}
			var n int
			if err := s.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE name = ?`, "carl").Scan(&n); err != nil || n != 0 {
				t.Fatalf("rolled-back row visible: n=%d err=%v", n, err)
			}
			// A committed one lands whole, including long text (1 MiB values).
			big := make([]byte, 1<<20)
			for i := range big {
				big[i] = 'a' + byte(i%26)
			}
			err = s.InTx(ctx, func(tx *store.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO audit_log (at, actor, action, resource, before_value, after_value, remote) VALUES (?, ?, ?, ?, ?, ?, ?)`,
					1, "ann", "test", "r", "", string(big), "")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			var got string
			if err := s.QueryRowContext(ctx, `SELECT after_value FROM audit_log WHERE action = ?`, "test").Scan(&got); err != nil || got != string(big) {
				t.Fatalf("1 MiB round trip: len %d err %v", len(got), err)
			}
			// Placeholders inside string literals are left alone.
			if err := s.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE name <> '?' AND name = ?`, "bob").Scan(&n); err != nil || n != 1 {
				t.Fatalf("literal ?: n=%d err=%v", n, err)
			}
		})
	}
}

func TestBadDSN(t *testing.T) {
	for _, dsn := range []string{"", "nothing", "oracle://x", "sqlite://", "mysql://root@127.0.0.1:3306/"} {
		_, err := store.Open(context.Background(), store.Config{DSN: dsn})
		if !errors.Is(err, store.ErrBadDSN) {
			t.Errorf("Open(%q) = %v, want ErrBadDSN", dsn, err)
		}
	}
}

// A relaxed transaction commits like any other (its flush is what
// differs, on PostgreSQL), and an UPDATE that sets the value a row has
// already counts the row on every dialect (MySQL: found rows).
func TestRelaxedAndMatchedRows(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			err := s.InTx(ctx, func(tx *store.Tx) error {
				if err := tx.Relaxed(ctx); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, "cy", "x", 1)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.ExecContext(ctx, `UPDATE users SET created_at = ? WHERE name = ?`, 1, "cy")
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				t.Fatalf("an UPDATE to the same value counted %d rows, want 1", n)
			}
		})
	}
}

// A batch is one transaction on every dialect: the rows each statement
// affected come back, a guard in a later statement's WHERE sees the
// earlier statements' writes, and an error in any statement leaves none
// of them written.
func TestBatch(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			guarded := `UPDATE users SET created_at = ? WHERE name = ? AND EXISTS (SELECT 1 FROM server_settings WHERE name = ?)`
			for _, relaxed := range []bool{false, true} {
				name := fmt.Sprintf("u%v", relaxed)
				n, err := s.Batch(ctx, relaxed,
					store.Write{Query: `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, Args: []any{name, "x", 1}},
					store.Write{Query: `UPDATE users SET created_at = ? WHERE name = ?`, Args: []any{2, name}},
					store.Write{Query: `UPDATE users SET created_at = ? WHERE name = ?`, Args: []any{3, "nobody"}},
				)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(n, []int64{1, 1, 0}) {
					t.Fatalf("relaxed %v: rows affected %v, want [1 1 0]", relaxed, n)
				}
				var at int64
				if err := s.QueryRowContext(ctx, `SELECT created_at FROM users WHERE name = ?`, name).Scan(&at); err != nil || at != 2 {
					t.Fatalf("relaxed %v: created_at %d, %v; want 2", relaxed, at, err)
				}
			}
			// The guard reads the batch's own earlier write.
			n, err := s.Batch(ctx, false,
				store.Write{Query: `INSERT INTO server_settings (name, value, updated_at) VALUES (?, ?, ?)`, Args: []any{"batch.guard", "1", 1}},
				store.Write{Query: guarded, Args: []any{5, "ufalse", "batch.guard"}},
				store.Write{Query: guarded, Args: []any{6, "utrue", "no.such.key"}},
			)
			if err != nil || !slices.Equal(n, []int64{1, 1, 0}) {
				t.Fatalf("guarded batch: %v, %v; want [1 1 0]", n, err)
			}
			// A query reads the batch's own writes; one finding nothing
			// counts 0 and the batch stands.
			var at int64
			var none string
			n, err = s.Batch(ctx, false,
				store.Write{Query: `UPDATE users SET created_at = ? WHERE name = ?`, Args: []any{8, "ufalse"}},
				store.Write{Query: `SELECT created_at FROM users WHERE name = ?`, Args: []any{"ufalse"}, Scan: []any{&at}},
				store.Write{Query: `SELECT name FROM users WHERE name = ?`, Args: []any{"nobody"}, Scan: []any{&none}},
			)
			if err != nil || !slices.Equal(n, []int64{1, 1, 0}) || at != 8 {
				t.Fatalf("a batch with queries: %v, %v, read %d; want [1 1 0], 8", n, err, at)
			}
			// A query of many rows passes each to Each, its own batch's
			// writes included; a run starts with a nil scan.
			var names []string
			starts := 0
			n, err = s.Batch(ctx, false,
				store.Write{Query: `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, Args: []any{"each", "x", 9}},
				store.Write{Query: `SELECT name FROM users WHERE created_at IN (?, ?) ORDER BY name`, Args: []any{8, 9}, Each: func(scan func(...any) error) error {
					if scan == nil {
						starts++
						names = nil
						return nil
					}
					var name string
					err := scan(&name)
					names = append(names, name)
					return err
				}},
				store.Write{Query: `UPDATE users SET created_at = ? WHERE name = ?`, Args: []any{10, "each"}},
			)
			if err != nil || !slices.Equal(n, []int64{1, 2, 1}) || !slices.Equal(names, []string{"each", "ufalse"}) || starts != 1 {
				t.Fatalf("a batch with a many-row query: %v, %v, read %v after %d starts; want [1 2 1], [each ufalse], 1", n, err, names, starts)
			}
			// The second statement fails: the first is rolled back.
			_, err = s.Batch(ctx, false,
				store.Write{Query: `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, Args: []any{"dy", "x", 1}},
				store.Write{Query: `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, Args: []any{"ufalse", "x", 1}},
			)
			if !store.IsUniqueViolation(err) {
				t.Fatalf("a duplicate in a batch: %v, want a unique violation", err)
			}
			var c int
			if err := s.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE name = ?`, "dy").Scan(&c); err != nil || c != 0 {
				t.Fatalf("a failed batch left its first write: %d rows, %v", c, err)
			}
			// The connection a failed batch ran on serves the next one.
			for range 4 {
				if _, err := s.Batch(ctx, true, store.Write{Query: `UPDATE users SET created_at = ? WHERE name = ?`, Args: []any{7, "utrue"}}); err != nil {
					t.Fatalf("after a failed batch: %v", err)
				}
			}
		})
	}
}

// A batch the database picks as a deadlock victim runs again: a bigger
// transaction holds row b and then wants row a, which the batch locked
// before waiting on b; the database rolls the batch back (the smaller
// transaction, and the one that waited first), and its second run
// succeeds once the other commits.
func TestBatchRetriedAfterADeadlock(t *testing.T) {
	for _, d := range []store.Dialect{store.Postgres, store.MySQL} {
		t.Run(string(d), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s := storetest.Open(t, d)
			for _, n := range []string{"a", "b", "c", "d", "e"} {
				if _, err := s.ExecContext(ctx, `INSERT INTO server_settings (name, value, updated_at) VALUES (?, '0', 0)`, n); err != nil {
					t.Fatal(err)
				}
			}
			waits := `SELECT COUNT(*) FROM pg_locks WHERE NOT granted`
			if d == store.MySQL {
				// (information_schema.INNODB_TRX does not always show the wait
				// on MariaDB 10.11; the statement's state does)
				waits = `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE db = DATABASE() AND state = 'Updating' AND info LIKE 'UPDATE server_settings%'`
			}
			set := s.Rebind(`UPDATE server_settings SET value = ? WHERE name = ?`)
			// PostgreSQL's victim is the waiter whose deadlock check runs
			// first: the batch's, one deadlock_timeout after it began to
			// wait — unless the bigger transaction's second wait came
			// later than that (a loaded machine), when it is the bigger
			// one. That outcome tests nothing here: try again.
			for attempt := 1; ; attempt++ {
				tx, err := s.DB().BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range []string{"c", "d", "e", "b"} {
					if _, err := tx.ExecContext(ctx, set, "tx", n); err != nil {
						t.Fatal(err)
					}
				}
				done := make(chan error, 1)
				go func() {
					_, err := s.Batch(ctx, false,
						store.Write{Query: `UPDATE server_settings SET value = ? WHERE name = ?`, Args: []any{"batch", "a"}},
						store.Write{Query: `UPDATE server_settings SET value = ? WHERE name = ?`, Args: []any{"batch", "b"}})
					done <- err
				}()
				wait.For(t, 10*time.Second, "the batch waiting on row b", func() bool {
					var n int
					return s.QueryRowContext(ctx, waits).Scan(&n) == nil && n > 0
				})
				if _, err := tx.ExecContext(ctx, set, "tx", "a"); err != nil {
					tx.Rollback()
					<-done
					if attempt < 5 {
						t.Logf("attempt %d: the bigger transaction was the victim; again", attempt)
						continue
					}
					t.Fatalf("the bigger transaction was the victim %d times (the test needs the batch to be): %v", attempt, err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != nil {
					t.Fatalf("the batch after a deadlock: %v", err)
				}
				break
			}
			for _, n := range []string{"a", "b"} {
				var v string
				if err := s.QueryRowContext(ctx, `SELECT value FROM server_settings WHERE name = ?`, n).Scan(&v); err != nil || v != "batch" {
					t.Fatalf("row %s: %q, %v; want the batch's write (it ran last)", n, v, err)
				}
			}
		})
	}
}

// On MySQL/MariaDB a statement with arguments goes as one statement text
// (the driver interpolates them): no server-side prepare, execute and
// close per statement.
func TestMySQLStatementsAreNotPreparedOneByOne(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.MySQL)
	s.DB().SetMaxOpenConns(1) // one session: its counters are ours
	prepares := func() int64 {
		var name string
		var n int64
		if err := s.QueryRowContext(ctx, `SHOW SESSION STATUS LIKE 'Com_stmt_prepare'`).Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := prepares()
	for i := range 10 {
		if _, err := s.ExecContext(ctx, `INSERT INTO server_settings (name, value, updated_at) VALUES (?, ?, ?)`, fmt.Sprintf("interp%d", i), "v'\\\"", i); err != nil {
			t.Fatal(err)
		}
	}
	if n := prepares() - before; n != 0 {
		t.Fatalf("10 statements with arguments prepared %d times on the server", n)
	}
	var v string
	if err := s.QueryRowContext(ctx, `SELECT value FROM server_settings WHERE name = ?`, "interp3").Scan(&v); err != nil || v != "v'\\\"" {
		t.Fatalf("a value with quotes and a backslash came back as %q, %v", v, err)
	}
}

// On PostgreSQL and MariaDB a session left idle inside a transaction (a
// process frozen mid-transaction) is ended by the server within seconds,
// its locks released: the row it updated can be written by another
// session long before the frozen one would have woken.
func TestIdleTransactionsAreEnded(t *testing.T) {
	for _, d := range []store.Dialect{store.Postgres, store.MySQL} {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			if _, err := s.ExecContext(ctx, `INSERT INTO server_settings (name, value, updated_at) VALUES ('frozen', 'a', 0)`); err != nil {
				t.Fatal(err)
			}
			frozen, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer frozen.Rollback()
			if _, err := frozen.ExecContext(ctx, s.Rebind(`UPDATE server_settings SET value = 'b' WHERE name = 'frozen'`)); err != nil {
				t.Fatal(err)
			}
			// The frozen transaction holds the row's lock; another writer
			// gets it once the server has ended that session (2 s), well
			// within 10 s.
			start := time.Now()
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := s.ExecContext(wctx, `UPDATE server_settings SET value = 'c' WHERE name = 'frozen'`); err != nil {
				t.Fatalf("a write behind the frozen transaction's lock: %v after %v", err, time.Since(start))
			}
			if err := frozen.Commit(); err == nil {
				t.Fatal("the frozen transaction committed after the server ended its session")
			}
			var v string
			if err := s.QueryRowContext(ctx, `SELECT value FROM server_settings WHERE name = 'frozen'`).Scan(&v); err != nil || v != "c" {
				t.Fatalf("value %q, %v; want c", v, err)
			}
		})
	}
}
