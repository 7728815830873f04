package shard

import (
	"context"
	"database/sql"
	"sync"
)

// Statements with arguments run as prepared statements kept per data
// source and text: database/sql with go-sql-driver/mysql would otherwise
// prepare, execute and close each one (three round trips); a kept
// statement is one COM_STMT_EXECUTE (and its results keep their binary
// types). The texts are the router's per-node texts, so they are few.

// maxStmts bounds the kept statements of an executor; past it a
// statement runs unkept.
const maxStmts = 8192

type stmtCache struct {
	mu     sync.Mutex
	stmts  map[stmtKey]*sql.Stmt
	closed bool // the executor closed: statements run unkept
}

type stmtKey struct {
	db *sql.DB
	q  string
}

// get returns the kept statement for q on db, preparing it on first use
// (nil when the cache is full or the statement does not prepare: run it
// unkept).
func (c *stmtCache) get(ctx context.Context, db *sql.DB, q string) *sql.Stmt {
	k := stmtKey{db, q}
	c.mu.Lock()
	st, ok := c.stmts[k]
	full := len(c.stmts) >= maxStmts || c.closed
	c.mu.Unlock()
	if ok || full {
		return st
	}
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		// Let the unkept run report the error (or succeed where
		// preparing is not allowed).
		c.mu.Lock()
		c.stmts[k] = nil
		c.mu.Unlock()
		return nil
	}
	c.mu.Lock()
	if prev, ok := c.stmts[k]; ok && prev != nil || c.closed {
		c.mu.Unlock()
		st.Close()
		if c.closed {
			return nil
		}
		return prev
	}
	c.stmts[k] = st
	c.mu.Unlock()
	return st
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for k, st := range c.stmts {
		if st != nil {
			st.Close()
		}
		delete(c.stmts, k)
	}
}

// pooled runs statements on a data source's pool through the cache.
type pooled struct {
	db *sql.DB
	c  *stmtCache
}

func (p pooled) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if len(args) > 0 {
		if st := p.c.get(ctx, p.db, q); st != nil {
			return st.ExecContext(ctx, args...)
		}
	}
	return p.db.ExecContext(ctx, q, args...)
}

func (p pooled) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if len(args) > 0 {
		if st := p.c.get(ctx, p.db, q); st != nil {
			return st.QueryContext(ctx, args...)
		}
	}
	return p.db.QueryContext(ctx, q, args...)
}

// inTx runs statements in a transaction through the cache (a kept
// statement already prepared on the transaction's connection is reused
// there).
type inTx struct {
	tx *sql.Tx
	db *sql.DB
	c  *stmtCache
}

func (t inTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if len(args) > 0 {
		if st := t.c.get(ctx, t.db, q); st != nil {
			return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		}
	}
	return t.tx.ExecContext(ctx, q, args...)
}

func (t inTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if len(args) > 0 {
		if st := t.c.get(ctx, t.db, q); st != nil {
			return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
		}
	}
	return t.tx.QueryContext(ctx, q, args...)
}
