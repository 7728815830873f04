// Package sqldriver traces database/sql: it wraps a driver so that every
// statement a program runs is a client span — named by the operation and
// carrying the SQL text (with its placeholders, never the arguments) — in
// the trace of the context it runs under. It works with any driver (pgx's
// stdlib, go-sql-driver/mysql, modernc SQLite) and adds nothing when the
// context holds no sampled span's trace.
//
//	db, err := sqldriver.Open("pgx", dsn, sqldriver.Config{TracerProvider: tp, System: "postgresql"})
//	db.QueryContext(ctx, "SELECT …") // a span under ctx's
package sqldriver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// Config says how statements are traced.
type Config struct {
	// TracerProvider records the spans (required).
	TracerProvider oteltrace.TracerProvider
	// System is db.system.name ("postgresql", "mysql", "mariadb", "sqlite").
	System string
	// Namespace is db.namespace: the database's name, for the map.
	Namespace string
	// MaxQueryText bounds the SQL kept on a span (default 2,048 bytes).
	MaxQueryText int
}

const tracerName = "github.com/tangram-dev/tangram/trace/sqldriver"

// Open opens a *sql.DB through the named driver (registered by its
// package, as sql.Open wants), traced.
func Open(driverName, dsn string, cfg Config) (*sql.DB, error) {
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, err
	}
	d := db.Driver()
	db.Close()
	w, err := Wrap(d, cfg)
	if err != nil {
		return nil, err
	}
	if dc, ok := w.(driver.DriverContext); ok {
		c, err := dc.OpenConnector(dsn)
		if err != nil {
			return nil, err
		}
		return sql.OpenDB(c), nil
	}
	return sql.OpenDB(dsnConnector{dsn: dsn, d: w}), nil
}

// Wrap returns d traced.
func Wrap(d driver.Driver, cfg Config) (driver.Driver, error) {
	if cfg.TracerProvider == nil {
		return nil, errors.New("trace/sqldriver: Config.TracerProvider is required")
	}
	if cfg.MaxQueryText <= 0 {
		cfg.MaxQueryText = 2048
	}
	t := &tracer{cfg: cfg, tr: cfg.TracerProvider.Tracer(tracerName)}
	if _, ok := d.(driver.DriverContext); ok {
		return &driverCtx{drv{d: d, t: t}}, nil
	}
	return &drv{d: d, t: t}, nil
}

type tracer struct {
	cfg Config
	tr  oteltrace.Tracer
}

// start begins a statement's span when ctx is in a recording trace.
func (t *tracer) start(ctx context.Context, query string) (context.Context, oteltrace.Span) {
	if !oteltrace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil // statements outside a trace do not start one
	}
	op := operation(query)
	name := op
	if name == "" {
		name = "sql"
	}
	if t.cfg.Namespace != "" {
		name += " " + t.cfg.Namespace
	}
	if len(query) > t.cfg.MaxQueryText {
		query = query[:t.cfg.MaxQueryText]
	}
	attrs := []attribute.KeyValue{attribute.String("db.query.text", query)}
	if op != "" {
		attrs = append(attrs, attribute.String("db.operation.name", op))
	}
	if t.cfg.System != "" {
		attrs = append(attrs, attribute.String("db.system.name", t.cfg.System))
	}
	if t.cfg.Namespace != "" {
		attrs = append(attrs, attribute.String("db.namespace", t.cfg.Namespace))
	}
	return t.tr.Start(ctx, name, oteltrace.WithSpanKind(oteltrace.SpanKindClient), oteltrace.WithAttributes(attrs...))
}

func end(span oteltrace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil && !errors.Is(err, driver.ErrSkip) && !errors.Is(err, io.EOF) {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// operation is the statement's first keyword, upper-cased.
func operation(q string) string {
	q = strings.TrimLeft(q, " \t\r\n(")
	i := strings.IndexFunc(q, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '(' || r == ';' })
	if i < 0 {
		i = len(q)
	}
	if i > 16 {
		return ""
	}
	return strings.ToUpper(q[:i])
}

type drv struct {
	d driver.Driver
	t *tracer
}

func (d *drv) Open(name string) (driver.Conn, error) {
	c, err := d.d.Open(name)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, t: d.t}, nil
}

type driverCtx struct{ drv }

func (d *driverCtx) OpenConnector(name string) (driver.Connector, error) {
	c, err := d.d.(driver.DriverContext).OpenConnector(name)
	if err != nil {
		return nil, err
	}
	return &connector{c: c, d: d}, nil
}

type connector struct {
	c driver.Connector
	d *driverCtx
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := c.c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: cn, t: c.d.t}, nil
}

func (c *connector) Driver() driver.Driver { return c.d }

type dsnConnector struct {
	dsn string
	d   driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.d.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.d }

// conn passes everything to the driver's connection, tracing statements.
type conn struct {
	driver.Conn
	t *tracer
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	ex, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip // database/sql prepares it instead
	}
	ctx, span := c.t.start(ctx, query)
	r, err := ex.ExecContext(ctx, query, args)
	end(span, err)
	return r, err
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	ctx, span := c.t.start(ctx, query)
	r, err := q.QueryContext(ctx, query, args)
	end(span, err)
	return r, err
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	var s driver.Stmt
	var err error
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		s, err = p.PrepareContext(ctx, query)
	} else {
		s, err = c.Conn.Prepare(query)
	}
	if err != nil {
		return nil, err
	}
	return &stmt{Stmt: s, t: c.t, query: query}, nil
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	if opts.Isolation != 0 || opts.ReadOnly {
		return nil, fmt.Errorf("trace/sqldriver: the driver takes no transaction options")
	}
	return c.Conn.Begin() //nolint:staticcheck // the driver has nothing newer
}

func (c *conn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *conn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *conn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.Conn.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// stmt traces a prepared statement's executions.
type stmt struct {
	driver.Stmt
	t     *tracer
	query string
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	ctx, span := s.t.start(ctx, s.query)
	var r driver.Result
	var err error
	if e, ok := s.Stmt.(driver.StmtExecContext); ok {
		r, err = e.ExecContext(ctx, args)
	} else {
		var vals []driver.Value
		if vals, err = values(args); err == nil {
			r, err = s.Stmt.Exec(vals) //nolint:staticcheck // the driver has nothing newer
		}
	}
	end(span, err)
	return r, err
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	ctx, span := s.t.start(ctx, s.query)
	var r driver.Rows
	var err error
	if q, ok := s.Stmt.(driver.StmtQueryContext); ok {
		r, err = q.QueryContext(ctx, args)
	} else {
		var vals []driver.Value
		if vals, err = values(args); err == nil {
			r, err = s.Stmt.Query(vals) //nolint:staticcheck // the driver has nothing newer
		}
	}
	end(span, err)
	return r, err
}

func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := s.Stmt.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

func values(args []driver.NamedValue) ([]driver.Value, error) {
	out := make([]driver.Value, len(args))
	for i, a := range args {
		if a.Name != "" {
			return nil, fmt.Errorf("trace/sqldriver: the driver takes no named parameters (%q)", a.Name)
		}
		out[i] = a.Value
	}
	return out, nil
}
