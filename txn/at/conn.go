package at

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
)

// connector opens wrapped connections.
type connector struct {
	db   *DB
	base driver.Connector
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	b, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &conn{db: c.db, base: b}, nil
}

func (c *connector) Driver() driver.Driver { return c.base.Driver() }

// conn wraps a driver connection. Outside a global transaction it passes
// every call through; inside one (a transaction begun with a context
// carrying an XID, or a statement run with one) it records undo images
// of each write and registers the branch when the transaction commits.
type conn struct {
	db   *DB
	base driver.Conn
	tx   *localTx
	// own holds the wrapper's own statements (images, the undo log)
	// prepared on this connection, for drivers that prepare every
	// statement with arguments (MySQL's without interpolateParams): each
	// is then one round trip instead of a prepare, an execute and a close.
	// The application's statements are run as the driver runs them.
	own map[string]driver.Stmt
}

// maxOwn bounds a connection's prepared statements of the wrapper's own
// (image queries differ with the number of rows a statement touched).
const maxOwn = 64

// prepared returns the wrapper's statement q prepared on this connection
// (a connection serves one goroutine at a time: no lock).
func (c *conn) prepared(ctx context.Context, q string) (driver.Stmt, error) {
	if s, ok := c.own[q]; ok {
		return s, nil
	}
	s, err := c.basePrepare(ctx, q)
	if err != nil {
		return nil, err
	}
	if len(c.own) >= maxOwn {
		c.closeOwn()
	}
	if c.own == nil {
		c.own = make(map[string]driver.Stmt)
	}
	c.own[q] = s
	return s, nil
}

func (c *conn) closeOwn() {
	for _, s := range c.own {
		_ = s.Close()
	}
	c.own = nil
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
)

func (c *conn) Prepare(q string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), q)
}

func (c *conn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	var s driver.Stmt
	var err error
	if p, ok := c.base.(driver.ConnPrepareContext); ok {
		s, err = p.PrepareContext(ctx, q)
	} else {
		s, err = c.base.Prepare(q)
	}
	if err != nil {
		return nil, err
	}
	return &stmt{c: c, base: s, q: q}, nil
}

func (c *conn) Close() error {
	c.closeOwn()
	return c.base.Close()
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	bt, err := c.beginBase(ctx, opts)
	if err != nil {
		return nil, err
	}
	t := &localTx{c: c, base: bt, ctx: context.WithoutCancel(ctx)}
	if !raw(ctx) {
		t.xid = xidFrom(ctx)
		t.globalLock = globalLock(ctx)
	}
	c.tx = t
	return t, nil
}

func (c *conn) beginBase(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.base.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	if opts.Isolation != 0 || opts.ReadOnly {
		return nil, errors.New("txn/at: the driver does not take transaction options")
	}
	return c.base.Begin() //nolint:staticcheck // the driver offers nothing better
}

// tracked reports whether statements now need undo images (inside a
// global transaction) or lock checks (a local one respecting them).
func (c *conn) tracked() bool {
	return c.tx != nil && (c.tx.xid != "" || c.tx.globalLock)
}

func (c *conn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	if c.tracked() {
		p, err := c.db.plans.get(q)
		if err != nil {
			return nil, err
		}
		if p.kind != passThrough {
			return c.tx.exec(ctx, p, q, args)
		}
	} else if c.tx == nil && !raw(ctx) {
		if x := xidFrom(ctx); x != "" && mayWrite(q) {
			return c.implicit(ctx, x, q, args)
		}
	}
	e, ok := c.base.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	return e.ExecContext(ctx, q, args)
}

// implicit runs a write outside a transaction, in a global transaction's
// context, in a local transaction of its own (a branch).
func (c *conn) implicit(ctx context.Context, xid, q string, args []driver.NamedValue) (driver.Result, error) {
	p, err := c.db.plans.get(q)
	if err != nil {
		return nil, err
	}
	if p.kind == passThrough || p.kind == selectForUpdate {
		return c.baseExec(ctx, q, args, false)
	}
	t, err := c.BeginTx(ctx, driver.TxOptions{})
	if err != nil {
		return nil, err
	}
	lt := t.(*localTx)
	lt.xid = xid
	res, err := lt.exec(ctx, p, q, args)
	if err != nil {
		return nil, errors.Join(err, lt.Rollback())
	}
	if err := lt.Commit(); err != nil {
		return nil, err
	}
	return res, nil
}

func (c *conn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if c.tracked() {
		p, err := c.db.plans.get(q)
		if err != nil {
			return nil, err
		}
		if p.kind == selectForUpdate {
			if err := c.tx.lockRead(ctx, p, args); err != nil {
				return nil, err
			}
		} else if p.kind != passThrough {
			return nil, fmt.Errorf("txn/at: a %s run as a query: run it with Exec so its undo images are recorded", p.kind)
		}
	}
	qr, ok := c.base.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	return qr.QueryContext(ctx, q, args)
}

func (c *conn) Ping(ctx context.Context) error {
	if p, ok := c.base.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *conn) ResetSession(ctx context.Context) error {
	c.tx = nil
	if r, ok := c.base.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *conn) IsValid() bool {
	if v, ok := c.base.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.base.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// baseExec runs a statement on the wrapped connection (through a prepared
// statement when the driver asks for one: kept on the connection for the
// wrapper's own statements, own).
func (c *conn) baseExec(ctx context.Context, q string, args []driver.NamedValue, own bool) (driver.Result, error) {
	if e, ok := c.base.(driver.ExecerContext); ok {
		r, err := e.ExecContext(ctx, q, args)
		if !errors.Is(err, driver.ErrSkip) {
			return r, err
		}
	}
	s, err := c.stmtFor(ctx, q, own)
	if err != nil {
		return nil, err
	}
	if !own {
		defer s.Close()
	}
	if se, ok := s.(driver.StmtExecContext); ok {
		return se.ExecContext(ctx, args)
	}
	return s.Exec(values(args)) //nolint:staticcheck // the driver offers nothing better
}

func (c *conn) stmtFor(ctx context.Context, q string, own bool) (driver.Stmt, error) {
	if own {
		return c.prepared(ctx, q)
	}
	return c.basePrepare(ctx, q)
}

// baseQuery runs a query on the wrapped connection and reads every row
// (own: as baseExec).
func (c *conn) baseQuery(ctx context.Context, q string, args []driver.NamedValue, own bool) ([]string, [][]driver.Value, error) {
	var rows driver.Rows
	var err error
	if qr, ok := c.base.(driver.QueryerContext); ok {
		rows, err = qr.QueryContext(ctx, q, args)
	} else {
		err = driver.ErrSkip
	}
	if errors.Is(err, driver.ErrSkip) {
		var s driver.Stmt
		if s, err = c.stmtFor(ctx, q, own); err != nil {
			return nil, nil, err
		}
		if !own {
			defer s.Close()
		}
		if sq, ok := s.(driver.StmtQueryContext); ok {
			rows, err = sq.QueryContext(ctx, args)
		} else {
			rows, err = s.Query(values(args)) //nolint:staticcheck // the driver offers nothing better
		}
	}
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	cols := rows.Columns()
	var out [][]driver.Value
	for {
		r := make([]driver.Value, len(cols))
		if err := rows.Next(r); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, nil, err
		}
		for i, v := range r {
			if b, ok := v.([]byte); ok { // the driver may reuse its buffer
				r[i] = append([]byte(nil), b...)
			}
		}
		out = append(out, r)
	}
	return cols, out, nil
}

func (c *conn) basePrepare(ctx context.Context, q string) (driver.Stmt, error) {
	if p, ok := c.base.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, q)
	}
	return c.base.Prepare(q)
}

func values(args []driver.NamedValue) []driver.Value {
	out := make([]driver.Value, len(args))
	for i, a := range args {
		out[i] = a.Value
	}
	return out
}

func named(vals []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(vals))
	for i, v := range vals {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}

// stmt is a prepared statement of a wrapped connection.
type stmt struct {
	c    *conn
	base driver.Stmt
	q    string
}

func (s *stmt) Close() error  { return s.base.Close() }
func (s *stmt) NumInput() int { return s.base.NumInput() }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	tracked := s.c.tracked()
	xid := ""
	if !tracked && s.c.tx == nil && !raw(ctx) && mayWrite(s.q) {
		xid = xidFrom(ctx)
	}
	if tracked || xid != "" {
		p, err := s.c.db.plans.get(s.q)
		if err != nil {
			return nil, err
		}
		switch {
		case p.kind == passThrough || p.kind == selectForUpdate:
		case tracked:
			return s.c.tx.exec(ctx, p, s.q, args)
		default:
			return s.c.implicit(ctx, xid, s.q, args)
		}
	}
	if se, ok := s.base.(driver.StmtExecContext); ok {
		return se.ExecContext(ctx, args)
	}
	return s.base.Exec(values(args)) //nolint:staticcheck // the driver offers nothing better
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if s.c.tracked() {
		p, err := s.c.db.plans.get(s.q)
		if err != nil {
			return nil, err
		}
		if p.kind == selectForUpdate {
			if err := s.c.tx.lockRead(ctx, p, args); err != nil {
				return nil, err
			}
		}
	}
	if sq, ok := s.base.(driver.StmtQueryContext); ok {
		return sq.QueryContext(ctx, args)
	}
	return s.base.Query(values(args)) //nolint:staticcheck // the driver offers nothing better
}

func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := s.base.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return s.c.CheckNamedValue(nv)
}

// rebind turns ? markers outside quotes into PostgreSQL's $1…$n.
func rebind(q string) string {
	var sb strings.Builder
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		ch := q[i]
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			}
		case ch == '\'' || ch == '"':
			quote = ch
		case ch == '?':
			n++
			fmt.Fprintf(&sb, "$%d", n)
			continue
		}
		sb.WriteByte(ch)
	}
	return sb.String()
}
