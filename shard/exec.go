package shard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/span"
)

// Executor runs statements over sharded databases: it routes each one,
// runs its units on their data sources (several at once, within a
// budget of connections) and combines what they return. It opens no
// database itself: the caller gives one *sql.DB per data source, opened
// with its driver (go-sql-driver/mysql for MariaDB and MySQL).
//
// Statements that touch several data sources outside a transaction run
// as one local transaction per data source, like ShardingSphere's LOCAL
// mode: each commits or fails on its own, and an error names the data
// sources that did commit.
type Executor struct {
	router *Router
	// next routes by a migration's target (nil: no migration); phase is
	// the migration's.
	next     *Router
	phase    string
	inflight atomic.Int64 // statements running
	stmts    *stmtCache
	dbs      map[string]*sql.DB
	sem      chan struct{}
	reads    map[string]*replicaGroup // primary → its replicas
	stop     context.CancelFunc       // ends the replica monitor (nil: none)
	done     chan struct{}
	close    sync.Once
	span     span.Tracer
}

// ExecutorConfig configures NewExecutor.
type ExecutorConfig struct {
	// MaxParallel bounds the units of one statement that run at once
	// (default 8): a statement sent to every shard holds at most this
	// many connections.
	MaxParallel int
	// LagCheckInterval is how often replicas of read groups with a
	// maxReplicationLag are checked (default 1 s).
	LagCheckInterval time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// TracerProvider, when set, records a span per logical statement and
	// a client span per unit under it, on its data source (nil: none).
	TracerProvider oteltrace.TracerProvider
}

// NewExecutor returns an executor over rules r with the data sources'
// databases dbs (one per data source the rules name).
func NewExecutor(r *Rules, dbs map[string]*sql.DB, cfg ExecutorConfig) (*Executor, error) {
	for name := range r.AllDataSources() {
		if dbs[name] == nil {
			return nil, fmt.Errorf("shard: no database given for data source %s", name)
		}
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = 8
	}
	if cfg.LagCheckInterval <= 0 {
		cfg.LagCheckInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Executor{router: NewRouter(r), dbs: dbs, sem: make(chan struct{}, cfg.MaxParallel), reads: newReplicaGroups(r),
		stmts: newStmtCache(), span: span.New(cfg.TracerProvider, "github.com/tangram-dev/tangram/shard")}
	if m := r.Migration(); m != nil {
		e.next, e.phase = NewRouter(m.To), m.Phase
		for ds, rg := range newReplicaGroups(m.To) {
			if e.reads[ds] == nil {
				e.reads[ds] = rg
			}
		}
	}
	for _, rg := range e.reads {
		if rg.g.MaxLag > 0 {
			ctx, cancel := context.WithCancel(context.Background())
			e.stop, e.done = cancel, make(chan struct{})
			go func() {
				defer close(e.done)
				e.monitor(ctx, cfg.LagCheckInterval, cfg.Logger.With("component", "shard"))
			}()
			break
		}
	}
	return e, nil
}

// Close stops the executor's replica checks (the databases are the
// caller's). Statements may still run on it: replicas stay as last seen.
func (e *Executor) Close() error {
	e.close.Do(func() {
		if e.stop != nil {
			e.stop()
			<-e.done
		}
		e.stmts.close()
	})
	return nil
}

// Router is the router reads take (to see a statement's units): the
// rules' own, or a migration's target in phase READ_NEW.
func (e *Executor) Router() *Router {
	if e.phase == PhaseReadNew {
		return e.next
	}
	return e.router
}

// writeRouters are the routers a write goes through: the authoritative
// layout's, then (migrating) the other's.
func (e *Executor) writeRouters() (primary, secondary *Router) {
	switch e.phase {
	case PhaseDoubleWrite:
		return e.router, e.next
	case PhaseReadNew:
		return e.next, e.router
	}
	return e.router, nil
}

// Drain waits up to d for the statements running on the executor to end
// (after a switch to other rules, before acting on the switch).
func (e *Executor) Drain(d time.Duration) bool {
	deadline := time.Now().Add(d)
	pause := 100 * time.Microsecond
	for e.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
	return true
}

// Rules are the rules the executor routes by.
func (e *Executor) Rules() *Rules { return e.router.rules }

// DB is data source name's database (nil when the rules do not name it).
func (e *Executor) DB(name string) *sql.DB { return e.dbs[name] }

// Result is what a write did across its units.
type Result struct {
	// RowsAffected adds up every unit's count.
	RowsAffected int64
	// LastInsertID is the first generated key (see Keys), else the
	// unit's when the statement ran on one node (0 otherwise: IDs of a
	// sharded table come from a key generator, not AUTO_INCREMENT).
	LastInsertID int64
	// Units is how many statements ran.
	Units int
	// Keys are the keys the table's key generator made for the rows of
	// an INSERT that left its key column out, in row order.
	Keys []int64
}

// Exec runs a write.
func (e *Executor) Exec(ctx context.Context, q string, args ...any) (Result, error) {
	return e.exec(ctx, q, args, e.pool, true)
}

// runner runs statements: a data source's pool, or its transaction.
type runner interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// pool is the runner of a data source outside a transaction.
func (e *Executor) pool(_ context.Context, ds string) (runner, error) {
	return e.traceUnits(pooled{e.dbs[ds], e.stmts}, ds), nil
}

func (e *Executor) exec(ctx context.Context, q string, args []any, on func(context.Context, string) (runner, error), parallel bool) (res Result, err error) {
	e.inflight.Add(1)
	defer e.inflight.Add(-1)
	var rd *Routed
	if e.span.On() {
		var s oteltrace.Span
		ctx, s = e.statement(ctx, q)
		defer func() { endStatement(s, rd, err) }()
	}
	primary, secondary := e.writeRouters()
	rd, err = primary.Route(q, args)
	if err != nil {
		return Result{}, err
	}
	if secondary == nil {
		return e.run(ctx, rd, on, parallel)
	}
	return e.doubleWrite(ctx, rd, secondary, q, args, on, parallel)
}

// run runs a write's units.
func (e *Executor) run(ctx context.Context, rd *Routed, on func(context.Context, string) (runner, error), parallel bool) (Result, error) {
	type out struct {
		n, id int64
		err   error
	}
	outs := make([]out, len(rd.Units))
	e.each(ctx, rd.Units, parallel, func(i int, u Unit) {
		r, err := on(ctx, u.DataSource)
		if err != nil {
			outs[i].err = fmt.Errorf("shard: %s: %w", u.DataSource, err)
			return
		}
		res, err := r.ExecContext(ctx, u.SQL, u.Args...)
		if err != nil {
			outs[i].err = fmt.Errorf("shard: %s: %w", u.DataSource, err)
			return
		}
		outs[i].n, _ = res.RowsAffected()
		outs[i].id, _ = res.LastInsertId()
	})
	r := Result{Units: len(rd.Units), Keys: rd.Keys}
	var errs []error
	var done []string
	for i, o := range outs {
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		r.RowsAffected += o.n
		done = append(done, rd.Units[i].DataSource)
	}
	if len(errs) > 0 {
		if len(done) > 0 && parallel {
			sort.Strings(done)
			errs = append(errs, fmt.Errorf("shard: the statement did commit on %s (each data source commits on its own outside a transaction)", strings.Join(done, ", ")))
		}
		return r, errors.Join(errs...)
	}
	switch {
	case len(rd.Keys) > 0:
		r.LastInsertID = rd.Keys[0] // like MySQL's: the first row's
	case len(outs) == 1:
		r.LastInsertID = outs[0].id
	}
	return r, nil
}

// each runs fn for every unit, at most MaxParallel at once, and returns
// when all have. In a transaction (parallel false) a data source's units
// run one after another — they share its one connection — while
// different data sources' units run at once.
func (e *Executor) each(ctx context.Context, units []Unit, parallel bool, fn func(i int, u Unit)) {
	if len(units) == 1 {
		fn(0, units[0])
		return
	}
	// groups are unit indexes run in order by one goroutine.
	var groups [][]int
	if parallel {
		groups = make([][]int, len(units))
		for i := range units {
			groups[i] = []int{i}
		}
	} else {
		at := map[string]int{}
		for i, u := range units {
			g, ok := at[u.DataSource]
			if !ok {
				g = len(groups)
				at[u.DataSource] = g
				groups = append(groups, nil)
			}
			groups[g] = append(groups[g], i)
		}
	}
	run := func(g []int) {
		for _, i := range g {
			fn(i, units[i])
		}
	}
	if len(groups) == 1 {
		run(groups[0])
		return
	}
	var wg sync.WaitGroup
	if !parallel {
		// A transaction's groups take no slot of the executor's budget:
		// each runs on a connection the transaction already holds, and
		// waiting for a slot held by another transaction's statement that
		// waits on this transaction's row locks would be a deadlock the
		// database cannot see (it ends only at its lock wait timeout).
		for _, g := range groups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				run(g)
			}()
		}
		wg.Wait()
		return
	}
	for k, g := range groups {
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
			// The units not started fail with the context's error.
			for _, g := range groups[k:] {
				run(g)
			}
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-e.sem }()
			run(g)
		}()
	}
	wg.Wait()
}

// Rows are a query's merged result: its units' rows combined as one
// database would answer (groups and aggregates merged, the order
// restored, the LIMIT's window kept).
type Rows struct {
	Columns []string
	// Types describe the columns as the data source reported them (the
	// first unit's; nil when no unit ran a query).
	Types  []*sql.ColumnType
	Values [][]any
	kinds  []colKind
}

// maxRows bounds what one query may bring into memory.
const maxRows = 1_000_000

// Query runs a query and returns its rows, read whole (the values as the
// driver scans them into any: integers as int64, text as []byte or
// string).
func (e *Executor) Query(ctx context.Context, q string, args ...any) (*Rows, error) {
	return e.query(ctx, q, args, e.pool, true)
}

func (e *Executor) query(ctx context.Context, q string, args []any, on func(context.Context, string) (runner, error), parallel bool) (_ *Rows, err error) {
	e.inflight.Add(1)
	defer e.inflight.Add(-1)
	var rd *Routed
	if e.span.On() {
		var s oteltrace.Span
		ctx, s = e.statement(ctx, q)
		defer func() { endStatement(s, rd, err) }()
	}
	rd, err = e.Router().Route(q, args)
	if err != nil {
		return nil, err
	}
	return e.queryRouted(ctx, rd, on, parallel)
}

// queryRouted runs a routed query's units and merges their rows.
func (e *Executor) queryRouted(ctx context.Context, rd *Routed, on func(context.Context, string) (runner, error), parallel bool) (*Rows, error) {
	if parallel && !rd.Locking && len(e.reads) > 0 {
		// Outside a transaction: replicas answer plain reads.
		on = e.readRunner
	}
	parts := make([]*Rows, len(rd.Units))
	errs := make([]error, len(rd.Units))
	e.each(ctx, rd.Units, parallel, func(i int, u Unit) {
		r, err := on(ctx, u.DataSource)
		if err != nil {
			errs[i] = fmt.Errorf("shard: %s: %w", u.DataSource, err)
			return
		}
		parts[i], errs[i] = queryUnit(ctx, r, u)
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := &Rows{}
	total := 0
	for i, p := range parts {
		if i == 0 {
			out.Columns, out.Types = p.Columns, p.Types
		} else if len(p.Columns) != len(out.Columns) {
			return nil, fmt.Errorf("shard: %s answered %d columns, %s %d (the tables of one logical table differ)",
				rd.Units[0].DataSource, len(out.Columns), rd.Units[i].DataSource, len(p.Columns))
		}
		total += len(p.Values)
	}
	out.Values = make([][]any, 0, total)
	for _, p := range parts {
		out.Values = append(out.Values, p.Values...)
	}
	if rd.merge != nil {
		if err := rd.merge.merge(out, parts[0].kinds, rd.offset, rd.count); err != nil {
			return nil, err
		}
	}
	if rd.labels != nil {
		out.Columns = slices.Clone(out.Columns)
		rd.relabel(out.Columns)
	}
	return out, nil
}

// Cursor is a query's rows read one at a time. Outside a transaction,
// when one data node answers the query whole (no rows to merge), they are
// streamed from the data source as the application reads them — the
// data source's connection stays with the cursor until it is closed or
// read to the end, and the number of rows has no limit; otherwise they are
// read whole first, as Query does.
type Cursor struct {
	// Columns are the result's column names.
	Columns []string
	rows    *sql.Rows // streamed
	ds      string
	vals    []any // a streamed row, scanned through ptrs
	ptrs    []any
	release func() // the executor's count of statements running, once
	r       *Rows  // read whole
	i       int
	types   []*sql.ColumnType
}

// Cursor runs a query and returns its rows to be read one at a time.
func (e *Executor) Cursor(ctx context.Context, q string, args ...any) (_ *Cursor, err error) {
	e.inflight.Add(1)
	var once sync.Once
	release := func() { once.Do(func() { e.inflight.Add(-1) }) }
	var rd *Routed
	if e.span.On() {
		var s oteltrace.Span
		ctx, s = e.statement(ctx, q)
		defer func() { endStatement(s, rd, err) }()
	}
	rd, err = e.Router().Route(q, args)
	if err != nil {
		release()
		return nil, err
	}
	if len(rd.Units) != 1 || rd.merge != nil {
		r, err := e.queryRouted(ctx, rd, e.pool, true)
		release()
		if err != nil {
			return nil, err
		}
		return RowsCursor(r), nil
	}
	on := e.pool
	if !rd.Locking && len(e.reads) > 0 {
		on = e.readRunner
	}
	u := rd.Units[0]
	fail := func(err error) (*Cursor, error) {
		release()
		return nil, fmt.Errorf("shard: %s: %w", u.DataSource, err)
	}
	run, err := on(ctx, u.DataSource)
	if err != nil {
		return fail(err)
	}
	rows, err := run.QueryContext(ctx, u.SQL, u.Args...)
	if err != nil {
		return fail(err)
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return fail(err)
	}
	if rd.labels != nil {
		cols = slices.Clone(cols)
		rd.relabel(cols)
	}
	c := &Cursor{Columns: cols, rows: rows, ds: u.DataSource, vals: make([]any, len(cols)), ptrs: make([]any, len(cols)), release: release}
	for i := range c.vals {
		c.ptrs[i] = &c.vals[i]
	}
	return c, nil
}

// Cursor runs a query inside the transaction. Its rows are read whole
// first: the transaction's connections stay free for its next statement.
func (t *Tx) Cursor(ctx context.Context, q string, args ...any) (*Cursor, error) {
	r, err := t.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return RowsCursor(r), nil
}

// RowsCursor reads rows already in memory as a cursor.
func RowsCursor(r *Rows) *Cursor { return &Cursor{Columns: r.Columns, r: r, types: r.Types} }

// Types describe the columns as the data source reports them (nil when no
// data source answered).
func (c *Cursor) Types() []*sql.ColumnType {
	if c.types == nil && c.rows != nil {
		c.types, _ = c.rows.ColumnTypes()
	}
	return c.types
}

// Next reads the next row into dest (one value per column, as Rows.Values
// holds them); io.EOF reports the end.
func (c *Cursor) Next(dest []any) error {
	if c.rows == nil {
		if c.r == nil || c.i >= len(c.r.Values) {
			return io.EOF
		}
		copy(dest, c.r.Values[c.i])
		c.i++
		return nil
	}
	if !c.rows.Next() {
		err := c.rows.Err()
		c.Close()
		if err != nil {
			return fmt.Errorf("shard: %s: %w", c.ds, err)
		}
		return io.EOF
	}
	if err := c.rows.Scan(c.ptrs...); err != nil {
		c.Close()
		return fmt.Errorf("shard: %s: %w", c.ds, err)
	}
	copy(dest, c.vals)
	return nil
}

// Close ends the cursor, giving its data source connection back.
func (c *Cursor) Close() error {
	var err error
	if c.rows != nil {
		err = c.rows.Close()
		c.rows = nil
		c.r = nil
	}
	if c.release != nil {
		c.release()
	}
	return err
}

// Describe returns a SELECT's columns (names and types) without its
// rows, asking one data source (see Router.Describe).
func (e *Executor) Describe(ctx context.Context, q string) (*Rows, error) {
	rd, err := e.Router().Describe(q)
	if err != nil {
		return nil, err
	}
	u := rd.Units[0]
	out, err := queryUnit(ctx, e.dbs[u.DataSource], u)
	if err != nil {
		return nil, err
	}
	if rd.labels != nil {
		rd.relabel(out.Columns)
	}
	out.Values = nil
	return out, nil
}

func queryUnit(ctx context.Context, r runner, u Unit) (*Rows, error) {
	rows, err := r.QueryContext(ctx, u.SQL, u.Args...)
	if err != nil {
		return nil, fmt.Errorf("shard: %s: %w", u.DataSource, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("shard: %s: %w", u.DataSource, err)
	}
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, fmt.Errorf("shard: %s: %w", u.DataSource, err)
	}
	out := &Rows{Columns: cols, Types: types, kinds: make([]colKind, len(types))}
	for i, ct := range types {
		out.kinds[i] = kindOf(ct.DatabaseTypeName())
	}
	for rows.Next() {
		if len(out.Values) >= maxRows {
			return nil, fmt.Errorf("shard: %s: more than %d rows: narrow the query", u.DataSource, maxRows)
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("shard: %s: %w", u.DataSource, err)
		}
		out.Values = append(out.Values, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("shard: %s: %w", u.DataSource, err)
	}
	return out, nil
}

// Tx is a transaction over the sharded databases: one local transaction
// per data source it touches, begun when a statement first reaches it
// (ShardingSphere's LOCAL mode). Commit commits each; a data source that
// fails to commit after others did is named in the error — the
// transaction is atomic within each data source, not across them. A Tx
// runs its statements one at a time.
type Tx struct {
	e    *Executor
	opts *sql.TxOptions
	mu   sync.Mutex
	txs  map[string]*sql.Tx
	done bool
}

// Begin starts a transaction.
func (e *Executor) Begin(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	return &Tx{e: e, opts: opts, txs: map[string]*sql.Tx{}}, nil
}

// on is the data source's transaction, begun on first use. A
// statement's units on different data sources call it at once; one data
// source's units come one after another.
func (t *Tx) on(ctx context.Context, ds string) (runner, error) {
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return nil, sql.ErrTxDone
	}
	tx := t.txs[ds]
	t.mu.Unlock()
	if tx == nil {
		// Begun outside the lock: the data sources' BEGINs go out at once.
		var err error
		if tx, err = t.e.dbs[ds].BeginTx(ctx, t.opts); err != nil {
			return nil, err
		}
		t.mu.Lock()
		if t.done {
			t.mu.Unlock()
			_ = tx.Rollback()
			return nil, sql.ErrTxDone
		}
		t.txs[ds] = tx
		t.mu.Unlock()
	}
	return t.e.traceUnits(inTx{tx, t.e.dbs[ds], t.e.stmts}, ds), nil
}

// Exec runs a write inside the transaction.
func (t *Tx) Exec(ctx context.Context, q string, args ...any) (Result, error) {
	return t.e.exec(ctx, q, args, t.on, false)
}

// Query runs a query inside the transaction.
func (t *Tx) Query(ctx context.Context, q string, args ...any) (*Rows, error) {
	return t.e.query(ctx, q, args, t.on, false)
}

// Commit commits every data source's transaction.
func (t *Tx) Commit() error {
	return t.end(true)
}

// Rollback rolls every data source's transaction back.
func (t *Tx) Rollback() error {
	return t.end(false)
}

func (t *Tx) end(commit bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return sql.ErrTxDone
	}
	t.done = true
	names := make([]string, 0, len(t.txs))
	for ds := range t.txs {
		names = append(names, ds)
	}
	sort.Strings(names)
	// The data sources commit (or roll back) at once.
	errs := make([]error, len(names))
	end := func(i int) {
		ds := names[i]
		if commit {
			errs[i] = t.txs[ds].Commit()
		} else {
			errs[i] = t.txs[ds].Rollback()
		}
		if errs[i] != nil {
			errs[i] = fmt.Errorf("shard: %s: %w", ds, errs[i])
		}
	}
	if len(names) == 1 {
		end(0)
	} else {
		var wg sync.WaitGroup
		for i := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				end(i)
			}()
		}
		wg.Wait()
	}
	failed := false
	var committed []string
	for i, ds := range names {
		if errs[i] != nil {
			failed = true
		} else if commit {
			committed = append(committed, ds)
		}
	}
	if failed && len(committed) > 0 {
		errs = append(errs, fmt.Errorf("shard: the transaction did commit on %s (atomic within each data source, not across them)", strings.Join(committed, ", ")))
	}
	return errors.Join(errs...)
}
