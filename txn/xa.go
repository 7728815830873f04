package txn

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// XA runs branches as XA transactions of the participant's database —
// MariaDB/MySQL (XA START … XA END, XA PREPARE, XA COMMIT or ROLLBACK) or
// PostgreSQL (BEGIN … PREPARE TRANSACTION, COMMIT or ROLLBACK PREPARED) —
// so that the branch's work is durable but undecided until the
// coordinator decides. A branch's Try is its local work and the prepare;
// Confirm commits the prepared branch, Cancel rolls it back.
//
// The barrier table guards the Try: the Try inserts its row inside the XA
// branch and a Cancel that finds no prepared branch inserts it, so a Try
// arriving after its Cancel fails (ErrSuspended) instead of leaving a
// prepared branch — and its locks — behind.
type XA struct {
	DB *sql.DB
	// Dialect is "mysql" or "postgres"; "" detects it from the driver.
	Dialect string
	// Table is the barrier table (default "tangram_barrier").
	Table string
	// Timeout bounds a Try's statements (default 30 s). They run to the
	// end even when the caller gives up, so a branch is never cut off
	// mid-statement.
	Timeout time.Duration
	// Hold, on MariaDB/MySQL, keeps the session that prepared a branch
	// open for up to Hold, so that the branch's Confirm or Cancel, when
	// it comes to this XA, commits or rolls back on that session. That
	// saves closing a connection and opening another for every branch,
	// and it keeps prepared branches from being detached from their
	// sessions at all — which MariaDB under load was seen to do badly,
	// leaving a branch that holds its locks while neither XA RECOVER nor
	// XA COMMIT can reach it until the server restarts. Use it when phase
	// two reaches the process that ran the Try (one instance, or routing
	// by XID). A Confirm or Cancel that reaches another process while
	// the branch is held finds it unknown there and fails, to be retried
	// by the coordinator once Hold has passed and the session is closed.
	// 0 (the default): the session is closed after the prepare.
	Hold time.Duration
	// MaxHeld bounds the sessions held at once (default 64); a branch
	// prepared beyond it is detached at once.
	MaxHeld int

	mu     sync.Mutex
	held   map[string]*heldBranch // by xaID
	closed bool                   // Close ran: hold nothing more
}

// heldBranch is a prepared branch's session, kept open for its phase two.
type heldBranch struct {
	conn  *sql.Conn
	timer *time.Timer
}

// keep holds conn, on which branch id was just prepared, until its phase
// two takes it or Hold passes; false when it cannot be held.
func (x *XA) keep(id string, conn *sql.Conn) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	maxHeld := x.MaxHeld
	if maxHeld <= 0 {
		maxHeld = 64
	}
	if x.Hold <= 0 || x.closed || len(x.held) >= maxHeld {
		return false
	}
	if x.held == nil {
		x.held = make(map[string]*heldBranch)
	}
	h := &heldBranch{conn: conn}
	h.timer = time.AfterFunc(x.Hold, func() {
		if x.take(id, h) != nil {
			release(conn)
		}
	})
	x.held[id] = h
	return true
}

// take removes branch id's held session (only h's, when h is given) and
// returns its connection; nil when none is held.
func (x *XA) take(id string, h *heldBranch) *sql.Conn {
	x.mu.Lock()
	defer x.mu.Unlock()
	cur := x.held[id]
	if cur == nil || (h != nil && cur != h) {
		return nil
	}
	delete(x.held, id)
	cur.timer.Stop()
	return cur.conn
}

func (x *XA) isHeld(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.held[id] != nil
}

// release closes a held session, detaching its prepared branch: any
// session may then commit or roll it back.
func release(conn *sql.Conn) {
	discard(conn)
	_ = conn.Close()
}

// Close closes the sessions still held (Hold), detaching their branches
// for phase two on other sessions; branches prepared after it are
// detached at once, as without Hold.
func (x *XA) Close() error {
	x.mu.Lock()
	held := x.held
	x.held = nil
	x.closed = true
	x.mu.Unlock()
	for _, h := range held {
		h.timer.Stop()
		release(h.conn)
	}
	return nil
}

func (x *XA) timeout() time.Duration {
	if x.Timeout > 0 {
		return x.Timeout
	}
	return 30 * time.Second
}

func (x *XA) barrier() *Barrier { return &Barrier{DB: x.DB, Dialect: x.Dialect, Table: x.Table} }

func (x *XA) dialect() (string, error) {
	d, err := x.barrier().dialect()
	if err == nil && d != "mysql" && d != "postgres" {
		err = fmt.Errorf("txn: XA needs MariaDB/MySQL or PostgreSQL, not %s", d)
	}
	return d, err
}

// Init creates the barrier table if it does not exist.
func (x *XA) Init(ctx context.Context) error { return x.barrier().Init(ctx) }

// xaID names the database's XA branch for bi: MariaDB's gtrid and bqual,
// or PostgreSQL's transaction identifier.
func xaID(d string, bi BranchInfo) (string, error) {
	if err := ValidXID(bi.XID); err != nil {
		return "", err
	}
	if bi.Branch == "" || len(bi.Branch) > 32 || strings.IndexFunc(bi.Branch, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') }) >= 0 {
		return "", fmt.Errorf("%w: XA branch %q: want 1-32 letters and digits", ErrBadRequest, bi.Branch)
	}
	if d == "postgres" {
		return "'tangram:" + bi.XID + ":" + bi.Branch + "'", nil
	}
	return "'" + bi.XID + "','" + bi.Branch + "'", nil
}

// Serve runs the operation bi asks for: Try runs fn in a new XA branch and
// prepares it, Confirm commits it, Cancel rolls it back. A participant's
// single XA endpoint calls it and answers with WriteResult.
func (x *XA) Serve(ctx context.Context, bi BranchInfo, fn func(ctx context.Context, conn *sql.Conn) error) error {
	switch bi.Op {
	case OpTry:
		return x.Try(ctx, bi, fn)
	case OpConfirm:
		return x.Commit(ctx, bi)
	case OpCancel:
		return x.Rollback(ctx, bi)
	}
	return fmt.Errorf("%w: XA branch: operation %q", ErrBadRequest, bi.Op)
}

// Try runs fn — the branch's statements, on conn — in a new XA branch
// and prepares it. fn's error rolls the branch back and is returned (a
// business failure should be ErrFailure, so the transaction aborts). A
// Try repeated while its branch is prepared does nothing.
func (x *XA) Try(ctx context.Context, bi BranchInfo, fn func(ctx context.Context, conn *sql.Conn) error) (err error) {
	d, err := x.dialect()
	if err != nil {
		return err
	}
	id, err := xaID(d, bi)
	if err != nil {
		return err
	}
	if x.isHeld(id) {
		return nil // a repeated Try, its branch prepared and held here
	}
	prepared, err := x.isPrepared(ctx, d, bi)
	if err != nil {
		return err
	}
	if prepared {
		return nil // a repeated Try
	}
	// The branch runs to its end (prepared, or rolled back on its own
	// session) even when the caller gives up: a driver aborting a
	// statement closes the connection under a live XA branch, which
	// MariaDB was seen to leave behind, locks held, where neither
	// XA RECOVER nor XA ROLLBACK could reach it until it restarted.
	ctx, cancelTry := context.WithTimeout(context.WithoutCancel(ctx), x.timeout())
	defer cancelTry()
	conn, err := x.DB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("txn: XA try: %w", err)
	}
	held := false
	defer func() {
		if !held {
			conn.Close()
		}
	}()
	start, end, prepare, rollback := "XA START "+id, "XA END "+id, "XA PREPARE "+id, "XA ROLLBACK "+id
	if d == "postgres" {
		start, end, prepare, rollback = "BEGIN", "", "PREPARE TRANSACTION "+id, "ROLLBACK"
	}
	// The branch's statements run on conn alone; once it is started, any
	// way out but the prepare rolls it back on the same connection.
	bg := context.WithoutCancel(ctx)
	if d == "mysql" {
		// Read committed: InnoDB then takes no gap locks for the branch's
		// reads and the barrier's insert, so prepared branches waiting for
		// the coordinator do not block each other's inserts into the
		// same index ranges (a wait no deadlock detector sees, across
		// branches of different global transactions). The session ends
		// with the branch (discarded after the prepare).
		if _, err := conn.ExecContext(ctx, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"); err != nil {
			return fmt.Errorf("txn: XA try %s: %w", id, err)
		}
	}
	if _, err := conn.ExecContext(ctx, start); err != nil {
		return fmt.Errorf("txn: XA try %s: start: %w", id, err)
	}
	undo := func() {
		if end != "" {
			_, _ = conn.ExecContext(bg, end)
		}
		if _, rerr := conn.ExecContext(bg, rollback); rerr != nil {
			discard(conn) // in an unknown state
		}
	}
	b := x.barrier()
	ins := `INSERT INTO ` + b.table() + ` (xid, branch, op, reason, created_at) VALUES (?, ?, ?, ?, ?)`
	if d == "postgres" {
		ins = `INSERT INTO ` + b.table() + ` (xid, branch, op, reason, created_at) VALUES ($1, $2, $3, $4, $5)`
	}
	if _, err := conn.ExecContext(ctx, ins, bi.XID, bi.Branch, string(OpTry), string(OpTry), time.Now().UnixMilli()); err != nil {
		undo()
		if isDuplicate(err) {
			return x.triedBefore(ctx, d, bi)
		}
		return fmt.Errorf("txn: XA try %s: barrier: %w", id, err)
	}
	if err := fn(ctx, conn); err != nil {
		undo()
		return err
	}
	if end != "" {
		if _, err := conn.ExecContext(ctx, end); err != nil {
			undo()
			return fmt.Errorf("txn: XA try %s: end: %w", id, err)
		}
	}
	if _, err := conn.ExecContext(bg, prepare); err != nil {
		undo()
		return fmt.Errorf("txn: XA try %s: prepare: %w", id, err)
	}
	if d == "mysql" {
		// MariaDB and MySQL keep a prepared XA branch attached to the
		// session that prepared it: any other statement there fails
		// (XAER_RMFAIL) until the session ends, but its XA COMMIT or XA
		// ROLLBACK runs there — what a held session is for (Hold).
		if held = x.keep(id, conn); held {
			return nil
		}
		// Closing the session detaches the
		// branch, which any session may then commit or roll back — once
		// the server has finished the detaching: answer only then, so the
		// coordinator's commit never meets a branch half detached (under
		// load MariaDB was seen to lose such a branch where neither
		// XA RECOVER nor XA COMMIT could reach it until it restarted).
		discard(conn)
		return x.awaitDetached(ctx, d, bi, id)
	}
	return nil
}

// awaitDetached waits until the prepared branch is listed by XA RECOVER
// (detached from its closed session), for up to 2 s.
func (x *XA) awaitDetached(ctx context.Context, d string, bi BranchInfo, id string) error {
	pause := time.Millisecond
	deadline := time.Now().Add(2 * time.Second)
	for {
		ok, err := x.isPrepared(ctx, d, bi)
		if err != nil {
			return fmt.Errorf("txn: XA try %s: after the prepare: %w", id, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("txn: XA try %s: the prepared branch did not detach from its session within 2 s", id)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("txn: XA try %s: %w", id, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// discard closes conn's connection instead of returning it to the pool.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
}

// triedBefore explains a Try whose barrier row exists: its Cancel came
// first (ErrSuspended), or it committed before (nil).
func (x *XA) triedBefore(ctx context.Context, d string, bi BranchInfo) error {
	b := x.barrier()
	q := `SELECT reason FROM ` + b.table() + ` WHERE xid = ? AND branch = ? AND op = ?`
	if d == "postgres" {
		q = `SELECT reason FROM ` + b.table() + ` WHERE xid = $1 AND branch = $2 AND op = $3`
	}
	var reason string
	if err := x.DB.QueryRowContext(ctx, q, bi.XID, bi.Branch, string(OpTry)).Scan(&reason); err != nil {
		return fmt.Errorf("txn: XA try %s/%s: barrier: %w", bi.XID, bi.Branch, err)
	}
	if Op(reason) != OpTry {
		return fmt.Errorf("%w: %s branch %s (its %s came first)", ErrSuspended, bi.XID, bi.Branch, reason)
	}
	return nil
}

// IsDuplicateKey reports whether err is a duplicate-key error of MariaDB,
// MySQL, PostgreSQL or SQLite (what the barrier's and the undo log's
// inserts rely on).
func IsDuplicateKey(err error) bool { return isDuplicate(err) }

func isDuplicate(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "Error 1062") || strings.Contains(s, "23505") || strings.Contains(s, "UNIQUE constraint")
}

// isUnknown: the database has no prepared branch of that name.
func isUnknown(err error) bool {
	s := err.Error()
	return strings.Contains(s, "XAER_NOTA") || strings.Contains(s, "Error 1397") || strings.Contains(s, "42704")
}

func (x *XA) isPrepared(ctx context.Context, d string, bi BranchInfo) (bool, error) {
	ps, err := x.Recover(ctx)
	if err != nil {
		return false, err
	}
	for _, p := range ps {
		if p.XID == bi.XID && p.Branch == bi.Branch {
			return true, nil
		}
	}
	return false, nil
}

// Commit commits the branch's prepared XA transaction. One already
// committed (nothing prepared under its name) is not an error: Confirm is
// repeated safely.
func (x *XA) Commit(ctx context.Context, bi BranchInfo) error {
	if x.finishHeld(ctx, bi, "XA COMMIT ") {
		return nil
	}
	return x.finish(ctx, bi, "commit", "XA COMMIT ", "COMMIT PREPARED ")
}

// finishHeld ends a branch prepared on a session still held (Hold) with
// verb, on that session, and gives the session back to the pool; false
// when no session of the branch is held here or that failed — then the
// session is closed (detaching the branch) and the caller goes on as for
// a branch prepared elsewhere.
func (x *XA) finishHeld(ctx context.Context, bi BranchInfo, verb string) bool {
	id, err := xaID("mysql", bi)
	if err != nil {
		return false
	}
	conn := x.take(id, nil)
	if conn == nil {
		return false
	}
	// Not cut off midway by the caller giving up: a driver aborting the
	// statement closes the session under it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.timeout())
	defer cancel()
	if _, err := conn.ExecContext(ctx, verb+id); err != nil {
		release(conn)
		return false
	}
	_ = conn.Close()
	return true
}

// Rollback rolls the branch's prepared XA transaction back, and marks
// its Try as cancelled so a late one is refused. Nothing prepared (the Try
// failed, never came, or this is a repeat) is not an error.
func (x *XA) Rollback(ctx context.Context, bi BranchInfo) error {
	if !x.finishHeld(ctx, bi, "XA ROLLBACK ") {
		if err := x.finish(ctx, bi, "rollback", "XA ROLLBACK ", "ROLLBACK PREPARED "); err != nil {
			return err
		}
	}
	// The barrier row says the Try is cancelled: a Try in flight that
	// prepares after this waits on the row, then fails on it.
	cancel := bi
	cancel.Op = OpCancel
	return x.barrier().Call(ctx, cancel, func(*sql.Tx) error { return nil })
}

// finish ends the branch's prepared transaction with the dialect's
// statement (MySQL's or PostgreSQL's verb before the branch's name); no
// prepared branch of that name is not an error.
func (x *XA) finish(ctx context.Context, bi BranchInfo, what, mysqlVerb, pgVerb string) error {
	d, err := x.dialect()
	if err != nil {
		return err
	}
	id, err := xaID(d, bi)
	if err != nil {
		return err
	}
	q := mysqlVerb + id
	if d == "postgres" {
		q = pgVerb + id
	}
	for attempt := 0; ; attempt++ {
		_, err := x.DB.ExecContext(ctx, q)
		if err == nil {
			return nil
		}
		if !isUnknown(err) {
			return fmt.Errorf("txn: XA %s %s: %w", what, id, err)
		}
		// MariaDB answers "unknown" for a branch still attached to the
		// session that prepared it, while that session is closing: ask
		// again a few times before believing it.
		if d != "mysql" || attempt == 3 {
			break
		}
		t := time.NewTimer(time.Duration(2<<(2*attempt)) * time.Millisecond) // 2, 8, 32 ms
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("txn: XA %s %s: %w", what, id, ctx.Err())
		case <-t.C:
		}
	}
	if what != "commit" {
		return nil // nothing prepared: rolled back before, or never prepared
	}
	// Nothing prepared under that name: committed before only if the
	// Try's barrier row (written inside the branch) is there to see.
	// Else the branch is not settled yet, and saying "committed" would
	// be a lie.
	b := x.barrier()
	sel := `SELECT reason FROM ` + b.table() + ` WHERE xid = ? AND branch = ? AND op = ?`
	if d == "postgres" {
		sel = `SELECT reason FROM ` + b.table() + ` WHERE xid = $1 AND branch = $2 AND op = $3`
	}
	var reason string
	err = x.DB.QueryRowContext(ctx, sel, bi.XID, bi.Branch, string(OpTry)).Scan(&reason)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("txn: XA commit %s: no prepared branch and no committed one: not settled yet", id)
	case err != nil:
		return fmt.Errorf("txn: XA commit %s: barrier: %w", id, err)
	case Op(reason) != OpTry:
		return fmt.Errorf("txn: XA commit %s: the branch was cancelled (%s), it cannot commit", id, reason)
	}
	return nil
}

// Recover lists the branches of Tangram transactions prepared in this
// database and not yet committed or rolled back — after a crash, the
// in-doubt ones. Resolve settles them with the coordinator's decision.
func (x *XA) Recover(ctx context.Context) ([]BranchInfo, error) {
	d, err := x.dialect()
	if err != nil {
		return nil, err
	}
	var out []BranchInfo
	if d == "postgres" {
		rows, err := x.DB.QueryContext(ctx, `SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'tangram:%'`)
		if err != nil {
			return nil, fmt.Errorf("txn: XA recover: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var gid string
			if err := rows.Scan(&gid); err != nil {
				return nil, err
			}
			parts := strings.Split(gid, ":")
			if len(parts) >= 3 {
				out = append(out, BranchInfo{XID: strings.Join(parts[1:len(parts)-1], ":"), Branch: parts[len(parts)-1], Mode: ModeXA})
			}
		}
		return out, rows.Err()
	}
	rows, err := x.DB.QueryContext(ctx, `XA RECOVER`)
	if err != nil {
		return nil, fmt.Errorf("txn: XA recover: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var format, glen, blen int
		var data string
		if err := rows.Scan(&format, &glen, &blen, &data); err != nil {
			return nil, err
		}
		// XA RECOVER lists the whole server's prepared branches: keep
		// those named as Tangram names them (an XID, then a branch of
		// letters and digits), not another coordinator's.
		if blen > 0 && blen <= 32 && glen+blen <= len(data) && ValidXID(data[:glen]) == nil &&
			strings.IndexFunc(data[glen:glen+blen], func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') }) < 0 {
			out = append(out, BranchInfo{XID: data[:glen], Branch: data[glen : glen+blen], Mode: ModeXA})
		}
	}
	return out, rows.Err()
}

// Resolve settles this database's in-doubt branches (Recover) with the
// coordinator's decision: the branch of a transaction decided to commit
// (committed, committing, or parked as failed while committing) is
// committed, of one decided to abort or unknown to the coordinator rolled
// back; a transaction still prepared is left alone. It returns how many of each.
func (x *XA) Resolve(ctx context.Context, c *Client) (committed, rolledBack int, err error) {
	ps, err := x.Recover(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, bi := range ps {
		g, gerr := c.Get(ctx, bi.XID)
		switch {
		case errors.Is(gerr, ErrNotFound) || (gerr != nil && strings.Contains(gerr.Error(), "NotFound")):
			gerr = nil
			g.Status = StatusAborted
		case gerr != nil:
			err = errors.Join(err, gerr)
			continue
		}
		switch {
		case g.Status == StatusCommitted || g.Status == StatusCommitting || (g.Status == StatusFailed && g.Phase == "commit"):
			if e := x.Commit(ctx, bi); e != nil {
				err = errors.Join(err, e)
				continue
			}
			committed++
		case g.Status == StatusAborted || g.Status == StatusAborting || (g.Status == StatusFailed && g.Phase == "abort"):
			if e := x.Rollback(ctx, bi); e != nil {
				err = errors.Join(err, e)
				continue
			}
			rolledBack++
		}
	}
	return committed, rolledBack, err
}
