// Package at is the AT mode of Tangram's distributed transactions: a
// database/sql wrapper that makes a service's ordinary local transactions
// branches of a global transaction, without code of their own for Confirm
// or Cancel.
//
// Inside a global transaction (a context carrying an XID: txn.Client.AT,
// txn.Middleware, or an RPC call made within one), each INSERT, UPDATE and
// DELETE is parsed (the TiDB parser, plans cached by statement text), the
// rows it changes are read before and after it (the before and after
// images), and when the local transaction commits the wrapper first
// registers the branch with the coordinator together with the global row
// locks of those rows, then writes the images to an undo table in the same
// local transaction, and commits. The data is visible at once (read
// uncommitted, globally); the global row locks keep another global
// transaction from writing the same rows until this one ends.
//
// Phase two is the coordinator's call to Handler: on commit the undo
// record is deleted (asynchronously); on rollback the before images are
// written back — after checking that each row still equals its after
// image. A row changed by someone outside the global transaction (a dirty
// write) is not overwritten: the rollback is refused with HTTP 422 and the
// coordinator parks the transaction as failed with an alarm, its row locks
// still held, for an operator to settle.
//
// SELECT … FOR UPDATE inside a global transaction waits until no other
// global transaction holds the rows (read committed). A local transaction
// outside any global one can respect the locks too: begin it with
// WithGlobalLock.
//
// MariaDB/MySQL and PostgreSQL are supported; statements AT mode cannot
// record faithfully (joins, INSERT … SELECT, ON DUPLICATE KEY UPDATE,
// updates of a primary key, subqueries in a condition) fail with an error
// naming the construct, never with a wrong undo record.
package at

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/txn"
)

// Config configures an AT database.
type Config struct {
	// Coordinator registers branches and takes row locks (required).
	Coordinator *txn.Client
	// Resource names this database among all AT databases: row locks are
	// per resource and table (required, e.g. "orders-db").
	Resource string
	// URL is where the coordinator reaches Handler for phase two
	// (required): an http:// or https:// URL, or rpc://SERVICE/Service/
	// Method served with txn.HandleBranch and Serve.
	URL string
	// Dialect is "mysql" or "postgres"; "" tells it from the driver.
	Dialect string
	// UndoTable is the undo log table (default "tangram_undo").
	UndoTable string
	// LockWait bounds how long a commit (or a SELECT … FOR UPDATE) waits
	// for rows another global transaction holds, retrying with jittered
	// backoff (default 5 s).
	LockWait time.Duration
	// CallTimeout bounds one call to the coordinator (default 5 s).
	CallTimeout time.Duration
	// UndoRetention: undo records older than this are deleted (left
	// behind only when a commit's asynchronous delete was lost; default 7
	// days).
	UndoRetention time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// DB is a database opened in AT mode. Use DB.DB as any *sql.DB.
type DB struct {
	*sql.DB
	cfg       Config
	pg        bool
	undoTable string
	plans     *planner
	log       *slog.Logger

	metaMu sync.RWMutex
	pks    map[string][]string

	deletes chan undoKey
	stop    chan struct{}
	wg      sync.WaitGroup
	closed  sync.Once

	m stats
}

type undoKey struct {
	xid    string
	branch int64
}

type stats struct {
	branches, lockWaits, rollbacks, dirty, commits atomic.Int64
}

// Stats are an AT database's counters since it was opened.
type Stats struct {
	// Branches committed locally (registered, undo written).
	Branches int64
	// LockWaits counts rounds spent waiting for another transaction's
	// row locks.
	LockWaits int64
	// Commits and Rollbacks count phase-two calls that succeeded; Dirty
	// counts rollbacks refused because a row changed.
	Commits, Rollbacks, Dirty int64
}

// Stats returns the counters.
func (db *DB) Stats() Stats {
	return Stats{Branches: db.m.branches.Load(), LockWaits: db.m.lockWaits.Load(), Commits: db.m.commits.Load(),
		Rollbacks: db.m.rollbacks.Load(), Dirty: db.m.dirty.Load()}
}

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Open opens dsn with the registered database/sql driver driverName
// ("mysql", "pgx", …) wrapped in AT mode.
func Open(driverName, dsn string, cfg Config) (*DB, error) {
	raw, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, fmt.Errorf("txn/at: open: %w", err)
	}
	d := raw.Driver()
	raw.Close()
	var c driver.Connector
	if dc, ok := d.(driver.DriverContext); ok {
		if c, err = dc.OpenConnector(dsn); err != nil {
			return nil, fmt.Errorf("txn/at: open: %w", err)
		}
	} else {
		c = dsnConnector{d: d, dsn: dsn}
	}
	if cfg.Dialect == "" {
		switch strings.ToLower(driverName) {
		case "mysql":
			cfg.Dialect = "mysql"
		case "pgx", "postgres", "pgx/v5":
			cfg.Dialect = "postgres"
		}
	}
	return OpenConnector(c, cfg)
}

type dsnConnector struct {
	d   driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.d.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.d }

// OpenConnector wraps a driver connector in AT mode.
func OpenConnector(c driver.Connector, cfg Config) (*DB, error) {
	if cfg.Dialect == "" {
		name := strings.ToLower(fmt.Sprintf("%T", c.Driver()))
		switch {
		case strings.Contains(name, "mysql"):
			cfg.Dialect = "mysql"
		case strings.Contains(name, "stdlib") || strings.Contains(name, "pgx") || strings.Contains(name, "pq."):
			cfg.Dialect = "postgres"
		}
	}
	switch {
	case cfg.Coordinator == nil:
		return nil, errors.New("txn/at: Config.Coordinator is nil")
	case cfg.Resource == "" || len(cfg.Resource) > txn.MaxLockKeyLen:
		return nil, fmt.Errorf("txn/at: Config.Resource %q: want 1-%d bytes naming this database", cfg.Resource, txn.MaxLockKeyLen)
	case cfg.Dialect != "mysql" && cfg.Dialect != "postgres":
		return nil, fmt.Errorf("txn/at: Config.Dialect %q: want mysql or postgres", cfg.Dialect)
	}
	if err := txn.ValidTarget(cfg.URL); err != nil {
		return nil, fmt.Errorf("txn/at: Config.URL: %w", err)
	}
	if cfg.UndoTable == "" {
		cfg.UndoTable = "tangram_undo"
	}
	if !tableName.MatchString(cfg.UndoTable) {
		return nil, fmt.Errorf("txn/at: Config.UndoTable %q: want a plain table name", cfg.UndoTable)
	}
	if cfg.LockWait <= 0 {
		cfg.LockWait = 5 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.UndoRetention <= 0 {
		cfg.UndoRetention = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pg := cfg.Dialect == "postgres"
	db := &DB{cfg: cfg, pg: pg, undoTable: quote(pg, cfg.UndoTable), plans: newPlanner(pg), log: cfg.Logger,
		pks: make(map[string][]string), deletes: make(chan undoKey, 4096), stop: make(chan struct{})}
	db.DB = sql.OpenDB(&connector{db: db, base: c})
	db.wg.Add(1)
	go db.deleter()
	return db, nil
}

// Close stops the undo deleter (deleting what it has queued) and closes
// the database.
func (db *DB) Close() error {
	db.closed.Do(func() { close(db.stop) })
	db.wg.Wait()
	return db.DB.Close()
}

// Init creates the undo table if it does not exist.
func (db *DB) Init(ctx context.Context) error {
	blob, tail := "LONGBLOB", ", KEY "+quote(false, db.cfg.UndoTable+"_created")+" (created_at)"
	if db.pg {
		blob, tail = "BYTEA", ""
	}
	q := `CREATE TABLE IF NOT EXISTS ` + db.undoTable + ` (
  xid VARCHAR(64) NOT NULL,
  branch BIGINT NOT NULL,
  state INT NOT NULL,
  info ` + blob + ` NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (xid, branch)` + tail + `)`
	if _, err := db.DB.ExecContext(Raw(ctx), q); err != nil {
		return fmt.Errorf("txn/at: create the undo table: %w", err)
	}
	if db.pg {
		if _, err := db.DB.ExecContext(Raw(ctx), `CREATE INDEX IF NOT EXISTS `+quote(true, db.cfg.UndoTable+"_created")+` ON `+db.undoTable+` (created_at)`); err != nil {
			return fmt.Errorf("txn/at: index the undo table: %w", err)
		}
	}
	return nil
}

type rawKey struct{}
type globalLockKey struct{}

// Raw returns a context whose statements pass through untouched, even
// inside a global transaction (for work that must not be undone, such as
// an audit row).
func Raw(ctx context.Context) context.Context { return context.WithValue(ctx, rawKey{}, true) }

func raw(ctx context.Context) bool { v, _ := ctx.Value(rawKey{}).(bool); return v }

// WithGlobalLock returns a context for a local transaction outside any
// global one that still respects global row locks: its writes wait at
// commit, and its SELECT … FOR UPDATE waits, until no global transaction
// holds the rows (Seata's @GlobalLock).
func WithGlobalLock(ctx context.Context) context.Context {
	return context.WithValue(ctx, globalLockKey{}, true)
}

func globalLock(ctx context.Context) bool { v, _ := ctx.Value(globalLockKey{}).(bool); return v }

func xidFrom(ctx context.Context) string { return txn.XIDFrom(ctx) }

func nowMillis() int64 { return time.Now().UnixMilli() }

func (db *DB) isDuplicate(err error) bool { return txn.IsDuplicateKey(err) }

// primaryKey returns the primary key columns of p's table (cached).
func (db *DB) primaryKey(ctx context.Context, c *conn, p *plan) ([]string, error) {
	id := p.schema + "." + p.name
	db.metaMu.RLock()
	pk, ok := db.pks[id]
	db.metaMu.RUnlock()
	if ok {
		return pk, nil
	}
	var q string
	var args []driver.Value
	if db.pg {
		q = `SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
 WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`
		name := quote(true, p.name)
		if p.schema != "" {
			name = quote(true, p.schema) + "." + name
		}
		args = []driver.Value{name}
	} else {
		q = `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = COALESCE(NULLIF(?, ''), DATABASE())
 AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`
		args = []driver.Value{p.schema, p.name}
	}
	_, rows, err := c.baseQuery(ctx, q, named(args), false)
	if err != nil {
		return nil, fmt.Errorf("txn/at: primary key of %s: %w", p.table, err)
	}
	for _, r := range rows {
		s, _ := canon(r[0])
		pk = append(pk, s)
	}
	if len(pk) == 0 {
		return nil, unsupported("table %s has no primary key (AT mode locks and restores rows by it)", p.table)
	}
	db.metaMu.Lock()
	db.pks[id] = pk
	db.metaMu.Unlock()
	return pk, nil
}

// register registers a branch of xid with its row locks, waiting (with
// jittered, growing pauses) while another transaction holds one.
func (db *DB) register(ctx context.Context, xid string, locks []string) (int, error) {
	step := txn.Step{Confirm: db.cfg.URL, Cancel: db.cfg.URL, Payload: []byte(`{"resource":` + strconv.Quote(db.cfg.Resource) + `}`)}
	var last *txn.LockConflict
	branch := -1
	err := db.wait(ctx, func(ctx context.Context) (bool, error) {
		rep, err := db.cfg.Coordinator.Register(ctx, txn.RegisterRequest{XID: xid, Step: step, Resource: db.cfg.Resource, Locks: locks})
		if err != nil {
			return false, err
		}
		if rep.Conflict != nil {
			last = rep.Conflict
			return false, nil
		}
		branch = rep.Branch
		return true, nil
	}, func() error { return lockError(xid, last, db.cfg.LockWait) })
	return branch, err
}

// waitFree waits until no transaction but xid holds any of keys.
func (db *DB) waitFree(ctx context.Context, xid string, keys []string) error {
	var last *txn.LockConflict
	return db.wait(ctx, func(ctx context.Context) (bool, error) {
		rep, err := db.cfg.Coordinator.Locks(ctx, txn.LocksRequest{XID: xid, Resource: db.cfg.Resource, Keys: keys})
		if err != nil {
			return false, err
		}
		last = rep.Conflict
		return rep.Conflict == nil, nil
	}, func() error { return lockError(xid, last, db.cfg.LockWait) })
}

// ErrLockTimeout: a row stayed locked by another global transaction
// longer than Config.LockWait.
var ErrLockTimeout = errors.New("txn/at: global row lock wait timed out")

func lockError(xid string, c *txn.LockConflict, wait time.Duration) error {
	who := "another global transaction"
	if c != nil && c.XID != "" {
		who = "transaction " + c.XID
	}
	what := "a row"
	if c != nil {
		what = "row " + c.Key + " of " + c.Resource
	}
	me := ""
	if xid != "" {
		me = " (waiting: " + xid + ")"
	}
	return fmt.Errorf("%w: %s held %s for over %v%s", ErrLockTimeout, who, what, wait, me)
}

// wait calls try until it succeeds, pausing between rounds from 2 ms
// doubling to 100 ms with full jitter, for at most LockWait.
func (db *DB) wait(ctx context.Context, try func(context.Context) (bool, error), timeout func() error) error {
	deadline := time.Now().Add(db.cfg.LockWait)
	pause := 2 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, db.cfg.CallTimeout)
		ok, err := try(cctx)
		cancel()
		if err != nil || ok {
			return err
		}
		db.m.lockWaits.Add(1)
		if !time.Now().Before(deadline) {
			return timeout()
		}
		d := min(pause/2+rand.N(pause/2+1), time.Until(deadline))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("txn/at: waiting for a row lock: %w", ctx.Err())
		case <-t.C:
		}
		pause = min(pause*2, 100*time.Millisecond)
	}
}

// Handler serves the coordinator's phase-two calls at Config.URL over
// HTTP (Serve does the work). Answers: 200 done; 422 a row changed since
// the branch wrote it (a dirty write — the coordinator parks the
// transaction for an operator); 400 not a branch call; 500 anything else
// (retried).
func (db *DB) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "txn/at: POST a branch call", http.StatusMethodNotAllowed)
			return
		}
		bi, err := txn.BranchFromRequest(r)
		if err == nil {
			err = db.Serve(r.Context(), bi)
		}
		txn.WriteResult(w, err)
	})
}

// Serve runs a phase-two call of the coordinator: confirm (the global
// transaction committed: the undo record is deleted, soon) or cancel (it
// rolled back: the before images are restored). A row changed since the
// branch wrote it (a dirty write) fails with an error wrapping both
// ErrDirty and txn.ErrOperator, so the coordinator parks the transaction
// for an operator. For a participant over Tangram RPC:
// txn.HandleBranch(srv, method, func(ctx, bi, _) error { return db.Serve(ctx, bi) })
// with Config.URL rpc://SERVICE/method.
func (db *DB) Serve(ctx context.Context, bi txn.BranchInfo) error {
	branch, err := strconv.ParseInt(bi.Branch, 10, 64)
	if err != nil || branch < 0 {
		return fmt.Errorf("%w: branch %q: want a number", txn.ErrBadRequest, bi.Branch)
	}
	switch bi.Op {
	case txn.OpConfirm:
		db.m.commits.Add(1)
		select {
		case db.deletes <- undoKey{bi.XID, branch}:
			return nil
		default: // the queue is full: delete now
			return db.deleteUndo(ctx, []undoKey{{bi.XID, branch}})
		}
	case txn.OpCancel:
		err := db.Rollback(ctx, bi.XID, branch)
		if errors.Is(err, ErrDirty) {
			db.m.dirty.Add(1)
			db.log.Error("txn/at: rollback refused: a row changed since the branch wrote it; settle it by hand, then retry the transaction",
				"xid", bi.XID, "branch", branch, "err", err)
			return fmt.Errorf("%w: %w", txn.ErrOperator, err)
		}
		if err == nil {
			db.m.rollbacks.Add(1)
		}
		return err
	}
	return fmt.Errorf("%w: AT branch operation %q: want confirm or cancel", txn.ErrBadRequest, bi.Op)
}

// deleter deletes the undo records of committed branches in batches,
// and old records once an hour.
func (db *DB) deleter() {
	defer db.wg.Done()
	ctx := Raw(context.Background())
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	db.purge(ctx)
	for {
		var batch []undoKey
		select {
		case k := <-db.deletes:
			batch = append(batch, k)
		case <-tick.C:
			db.purge(ctx)
			continue
		case <-db.stop:
			for {
				select {
				case k := <-db.deletes:
					batch = append(batch, k)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				if err := db.deleteUndo(ctx, batch); err != nil {
					db.log.Warn("txn/at: delete undo records at close", "err", err)
				}
			}
			return
		}
	more:
		for len(batch) < 200 {
			select {
			case k := <-db.deletes:
				batch = append(batch, k)
			default:
				break more
			}
		}
		if err := db.deleteUndo(ctx, batch); err != nil {
			db.log.Warn("txn/at: delete undo records of committed branches (old ones are purged later)", "n", len(batch), "err", err)
		}
	}
}

func (db *DB) deleteUndo(ctx context.Context, keys []undoKey) error {
	ctx, cancel := context.WithTimeout(Raw(ctx), db.cfg.CallTimeout)
	defer cancel()
	var sb strings.Builder
	args := make([]any, 0, 2*len(keys))
	sb.WriteString(`DELETE FROM ` + db.undoTable + ` WHERE (xid, branch) IN (`)
	for i, k := range keys {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?, ?)")
		args = append(args, k.xid, k.branch)
	}
	sb.WriteString(")")
	q := sb.String()
	if db.pg {
		q = rebind(q)
	}
	_, err := db.DB.ExecContext(ctx, q, args...)
	return err
}

func (db *DB) purge(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	q := `DELETE FROM ` + db.undoTable + ` WHERE created_at < ?`
	if db.pg {
		q = rebind(q)
	}
	if _, err := db.DB.ExecContext(ctx, q, nowMillis()-db.cfg.UndoRetention.Milliseconds()); err != nil && ctx.Err() == nil {
		db.log.Debug("txn/at: purge old undo records", "err", err)
	}
}
