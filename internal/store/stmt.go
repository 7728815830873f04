package store

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// Stmt is a statement of constant text prepared once per connection and
// reused: for hot paths, where parsing and planning the same text on every
// call costs more than running it (a third of a lock acquisition on
// SQLite). Make one per query text, at start-up: each is prepared on every
// connection that runs it, and MySQL caps prepared statements per server.
// A statement that cannot be prepared runs unprepared, so its error comes
// from running it.
type Stmt struct {
	s    *Store
	text string

	mu   sync.Mutex
	stmt *sql.Stmt
}

// Stmt returns the statement of text q ('?' placeholders), prepared when
// first run.
func (s *Store) Stmt(q string) *Stmt { return &Stmt{s: s, text: s.Rebind(q)} }

func (st *Stmt) prepared(ctx context.Context) *sql.Stmt {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stmt == nil {
		ps, err := st.s.db.PrepareContext(ctx, st.text)
		if err != nil {
			return nil
		}
		st.stmt = ps
	}
	return st.stmt
}

// QueryRow runs the query outside a transaction.
func (st *Stmt) QueryRow(ctx context.Context, args ...any) *sql.Row {
	defer st.s.observe("query", time.Now())
	if ps := st.prepared(ctx); ps != nil {
		return ps.QueryRowContext(ctx, args...)
	}
	return st.s.db.QueryRowContext(ctx, st.text, args...)
}

// Exec runs st inside the transaction.
func (t *Tx) Exec(ctx context.Context, st *Stmt, args ...any) (sql.Result, error) {
	if ps := st.prepared(ctx); ps != nil {
		return t.tx.StmtContext(ctx, ps).ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, st.text, args...)
}

// QueryRow runs st, a query of at most one row, inside the transaction.
func (t *Tx) QueryRow(ctx context.Context, st *Stmt, args ...any) *sql.Row {
	if ps := st.prepared(ctx); ps != nil {
		return t.tx.StmtContext(ctx, ps).QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, st.text, args...)
}

// Query runs st inside the transaction.
func (t *Tx) Query(ctx context.Context, st *Stmt, args ...any) (*sql.Rows, error) {
	if ps := st.prepared(ctx); ps != nil {
		return t.tx.StmtContext(ctx, ps).QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, st.text, args...)
}
