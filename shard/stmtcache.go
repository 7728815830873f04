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
	mu      sync.Mutex
	stmts   map[stmtKey]*sql.Stmt
	warming map[stmtKey]bool // being prepared in the background
	closed  bool             // the executor closed: statements run unkept
	ctx     context.Context  // cancelled by close: background preparing stops
	cancel  context.CancelFunc
	wg      sync.WaitGroup // background preparing
}

func newStmtCache() *stmtCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &stmtCache{stmts: map[stmtKey]*sql.Stmt{}, warming: map[stmtKey]bool{}, ctx: ctx, cancel: cancel}
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

// kept returns the kept statement for q on db without preparing it on
// the caller's time: when there is none yet it is prepared in the
// background, and nil is returned (run the statement unkept this time).
// A transaction's statements take this way: the transaction holds one of
// db's connections, and preparing needs another — with every connection
// held by a transaction waiting to prepare, none would ever come back.
func (c *stmtCache) kept(db *sql.DB, q string) *sql.Stmt {
	k := stmtKey{db, q}
	c.mu.Lock()
	st, ok := c.stmts[k]
	if ok || c.warming[k] || c.closed || len(c.stmts) >= maxStmts {
		c.mu.Unlock()
		return st
	}
	c.warming[k] = true
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		c.get(c.ctx, db, q)
		c.mu.Lock()
		delete(c.warming, k)
		c.mu.Unlock()
	}()
	return nil
}

func (c *stmtCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
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
// there; one not kept yet runs unkept while it is prepared for next time).
type inTx struct {
	tx *sql.Tx
	db *sql.DB
	c  *stmtCache
}

func (t inTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if len(args) > 0 {
		if st := t.c.kept(t.db, q); st != nil {
			return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		}
	}
	return t.tx.ExecContext(ctx, q, args...)
}

func (t inTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if len(args) > 0 {
		if st := t.c.kept(t.db, q); st != nil {
			return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
		}
	}
	return t.tx.QueryContext(ctx, q, args...)
}
