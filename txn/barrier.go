package txn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// BranchInfo identifies the branch operation a participant is asked to
// run: the coordinator (and the SDK, for a Try) sends it as headers.
type BranchInfo struct {
	XID    string
	Branch string
	Op     Op
	Mode   Mode
}

// BranchFromRequest reads the branch headers of a participant's request.
func BranchFromRequest(r *http.Request) (BranchInfo, error) {
	return branchInfo("branch request: header", r.Header.Get(HeaderXID), r.Header.Get(HeaderBranch), r.Header.Get(HeaderOp), r.Header.Get(HeaderMode))
}

// branchInfo checks a branch's identity as a participant received it
// (where: "branch request: header", "branch call: metadata").
func branchInfo(where, xid, branch, op, mode string) (BranchInfo, error) {
	bi := BranchInfo{XID: xid, Branch: branch, Op: Op(op), Mode: Mode(mode)}
	if err := ValidXID(bi.XID); err != nil {
		return bi, fmt.Errorf("txn: %s %s: %w", where, HeaderXID, err)
	}
	if bi.Branch == "" || len(bi.Branch) > 64 {
		return bi, fmt.Errorf("%w: %s %s %q: want 1-64 characters", ErrBadRequest, where, HeaderBranch, bi.Branch)
	}
	if !bi.Op.Valid() {
		return bi, fmt.Errorf("%w: %s %s %q: want action, compensate, try, confirm, cancel or msg", ErrBadRequest, where, HeaderOp, bi.Op)
	}
	return bi, nil
}

// WriteResult answers a branch request: 200 on success; 409 for a
// business failure (ErrFailure) or a refused Try (ErrSuspended), which the
// coordinator does not retry; 422 for ErrOperator (parked at once); 400
// for a request that is not a branch call; 500 for anything else, which
// it retries.
func WriteResult(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"result":"ok"}`))
	case errors.Is(err, ErrFailure) || errors.Is(err, ErrSuspended):
		// The status says "failed"; the text says why, without the
		// sentinel's words.
		http.Error(w, errcode.Message(err), http.StatusConflict)
	case errors.Is(err, ErrOperator):
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
	case errors.Is(err, ErrBadRequest):
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// Barrier is the sub-transaction barrier: a table in the business
// database whose rows, written in the same local transaction as the
// branch's own work, make every branch operation safe to deliver more than
// once and in any order:
//
//   - idempotent: an operation that already ran does nothing again;
//   - empty rollback: a Cancel (or compensation) whose Try (action) never
//     ran does nothing, and succeeds;
//   - no suspension: a Try arriving after its Cancel does nothing and
//     fails with ErrSuspended.
//
// Each operation inserts its own row (xid, branch, op); an undo operation
// first inserts its origin's row, so a late origin finds it taken. The
// primary key serialises a Try and a Cancel racing each other.
type Barrier struct {
	DB *sql.DB
	// Dialect is "postgres", "mysql" (MariaDB too) or "sqlite"; "" detects
	// it from the driver.
	Dialect string
	// Table (default "tangram_barrier").
	Table string

	mu   sync.Mutex
	prep prepared // by Init, for exec
}

// prepared is a statement prepared on db.
type prepared struct {
	db *sql.DB
	q  string
	st *sql.Stmt
}

// exec runs q in tx: through its statement prepared by Init when there
// is one (database/sql prepares it on each connection the first time that
// connection runs it, on the transaction's own connection, and reuses it
// after), so a barrier row is one round trip where a driver that prepares
// every statement with arguments (MySQL's, without interpolateParams)
// makes it a prepare, an execute and a close.
func (b *Barrier) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	b.mu.Lock()
	p := b.prep
	b.mu.Unlock()
	if p.st == nil || p.q != q || p.db != b.DB { // none, or prepared for another table or database
		return tx.ExecContext(ctx, q, args...)
	}
	return tx.StmtContext(ctx, p.st).ExecContext(ctx, args...)
}

// prepare prepares the barrier's insert on b.DB for exec.
func (b *Barrier) prepare(ctx context.Context, d string) error {
	q := b.insertSQL(d)
	st, err := b.DB.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	b.mu.Lock()
	old := b.prep.st
	b.prep = prepared{db: b.DB, q: q, st: st}
	b.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// Close closes the statement Init prepared (not the DB). A barrier used
// after Close runs its statement unprepared.
func (b *Barrier) Close() error {
	b.mu.Lock()
	st := b.prep.st
	b.prep = prepared{}
	b.mu.Unlock()
	if st == nil {
		return nil
	}
	return st.Close()
}

func (b *Barrier) table() string {
	if b.Table == "" {
		return "tangram_barrier"
	}
	return b.Table
}

func (b *Barrier) dialect() (string, error) {
	if b.Dialect != "" {
		return b.Dialect, nil
	}
	if b.DB == nil {
		return "", errors.New("txn: Barrier.DB is nil")
	}
	name := strings.ToLower(fmt.Sprintf("%T", b.DB.Driver()))
	switch {
	case strings.Contains(name, "stdlib") || strings.Contains(name, "pq.") || strings.Contains(name, "pgx"):
		return "postgres", nil
	case strings.Contains(name, "mysql"):
		return "mysql", nil
	case strings.Contains(name, "sqlite"):
		return "sqlite", nil
	}
	return "", fmt.Errorf("txn: barrier: cannot tell the SQL dialect of driver %s; set Barrier.Dialect", name)
}

// Init creates the barrier table if it does not exist and prepares the
// barrier's statement (a barrier not initialised works, its statement
// unprepared). Close releases it.
func (b *Barrier) Init(ctx context.Context) error {
	d, err := b.dialect()
	if err != nil {
		return err
	}
	_, err = b.DB.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+b.table()+` (
  xid VARCHAR(64) NOT NULL,
  branch VARCHAR(64) NOT NULL,
  op VARCHAR(16) NOT NULL,
  reason VARCHAR(16) NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (xid, branch, op)
)`)
	if err != nil {
		return fmt.Errorf("txn: create barrier table %s: %w", b.table(), err)
	}
	if err := b.prepare(ctx, d); err != nil {
		return fmt.Errorf("txn: barrier table %s: prepare its insert: %w", b.table(), err)
	}
	return nil
}

// insertSQL adds a barrier row unless it exists.
func (b *Barrier) insertSQL(d string) string {
	switch d {
	case "postgres":
		return `INSERT INTO ` + b.table() + ` (xid, branch, op, reason, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`
	case "mysql":
		return `INSERT IGNORE INTO ` + b.table() + ` (xid, branch, op, reason, created_at) VALUES (?, ?, ?, ?, ?)`
	}
	return `INSERT OR IGNORE INTO ` + b.table() + ` (xid, branch, op, reason, created_at) VALUES (?, ?, ?, ?, ?)`
}

// insert adds a barrier row unless it exists; it reports whether it did.
func (b *Barrier) insert(ctx context.Context, tx *sql.Tx, d string, bi BranchInfo, op, reason Op) (bool, error) {
	res, err := b.exec(ctx, tx, b.insertSQL(d), bi.XID, bi.Branch, string(op), string(reason), time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("txn: barrier %s/%s/%s: %w", bi.XID, bi.Branch, op, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// Call runs fn — the branch's own work — in one local transaction with
// the barrier's row, when the barrier lets it run: a duplicate, an empty
// rollback and a suspended Try commit the barrier row alone and skip fn
// (nil, or ErrSuspended for the Try). fn's error rolls everything back,
// barrier row included, so the operation may run again.
func (b *Barrier) Call(ctx context.Context, bi BranchInfo, fn func(tx *sql.Tx) error) (err error) {
	d, err := b.dialect()
	if err != nil {
		return err
	}
	if !bi.Op.Valid() || bi.XID == "" || bi.Branch == "" {
		return fmt.Errorf("%w: barrier: branch %+v", ErrBadRequest, bi)
	}
	tx, err := b.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("txn: barrier: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	originDone := false
	if origin := bi.Op.Origin(); origin != "" {
		// An undo inserts its origin's row first: present already means
		// the origin ran (or was itself refused); inserted now means it
		// never ran — and now never will.
		inserted, err := b.insert(ctx, tx, d, bi, origin, bi.Op)
		if err != nil {
			return err
		}
		originDone = !inserted
	}
	mine, err := b.insert(ctx, tx, d, bi, bi.Op, bi.Op)
	if err != nil {
		return err
	}
	switch {
	case !mine && bi.Op.Origin() == "":
		// A forward operation whose row exists: it ran before (a
		// duplicate) or its undo came first (suspension).
		var reason string
		q := `SELECT reason FROM ` + b.table() + ` WHERE xid = ? AND branch = ? AND op = ?`
		if d == "postgres" {
			q = `SELECT reason FROM ` + b.table() + ` WHERE xid = $1 AND branch = $2 AND op = $3`
		}
		if err := tx.QueryRowContext(ctx, q, bi.XID, bi.Branch, string(bi.Op)).Scan(&reason); err != nil {
			return fmt.Errorf("txn: barrier: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("txn: barrier: commit: %w", err)
		}
		if Op(reason) == reasonClosed {
			return fmt.Errorf("%w: %s branch %s %s (settled as never run first)", ErrSuspended, bi.XID, bi.Branch, bi.Op)
		}
		if Op(reason) != bi.Op {
			return fmt.Errorf("%w: %s branch %s (its %s came first)", ErrSuspended, bi.XID, bi.Branch, reason)
		}
		return nil
	case !mine, bi.Op.Origin() != "" && !originDone:
		// A duplicate undo, or an empty rollback: nothing to undo.
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("txn: barrier: commit: %w", err)
		}
		return nil
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("txn: barrier: commit: %w", err)
	}
	return nil
}

// reasonClosed marks a row Settle wrote: the operation had not run, and
// now never will.
const reasonClosed Op = "closed"

// Settle reports whether bi's forward operation committed, exactly: when
// it has not, Settle writes the operation's row itself (reason "closed"),
// so a local transaction still to come finds it taken and fails with
// ErrSuspended. An operation in flight makes Settle wait for its end (the
// row's lock). It answers a two-phase message's check-back (txn/msg) and
// DTM-style "query prepared" questions.
func (b *Barrier) Settle(ctx context.Context, bi BranchInfo) (committed bool, err error) {
	d, err := b.dialect()
	if err != nil {
		return false, err
	}
	if !bi.Op.Valid() || bi.Op.Origin() != "" || bi.XID == "" || bi.Branch == "" {
		return false, fmt.Errorf("%w: barrier: settle %+v: want a forward operation of a branch", ErrBadRequest, bi)
	}
	tx, err := b.DB.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("txn: barrier: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	closed, err := b.insert(ctx, tx, d, bi, bi.Op, reasonClosed)
	if err != nil {
		return false, err
	}
	var reason string
	if !closed {
		q := `SELECT reason FROM ` + b.table() + ` WHERE xid = ? AND branch = ? AND op = ?`
		if d == "postgres" {
			q = `SELECT reason FROM ` + b.table() + ` WHERE xid = $1 AND branch = $2 AND op = $3`
		}
		if err := tx.QueryRowContext(ctx, q, bi.XID, bi.Branch, string(bi.Op)).Scan(&reason); err != nil {
			return false, fmt.Errorf("txn: barrier: settle %s/%s/%s: %w", bi.XID, bi.Branch, bi.Op, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("txn: barrier: settle: commit: %w", err)
	}
	return Op(reason) == bi.Op, nil
}
