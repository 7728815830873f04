// Package sqldriver is the sharding layer as a database/sql driver, the
// way ShardingSphere-JDBC is a JDBC driver: open it with the rules and
// use the *sql.DB as if it were one MariaDB/MySQL database.
//
//	db, err := sql.Open("tangram-shard", "/etc/shop/sharding.yaml")
//
// or, with rules already parsed, sql.OpenDB(sqldriver.NewConnector(rules)).
// Each data source the rules name is opened with go-sql-driver/mysql;
// statements are routed, run and merged by shard.Executor, and a
// transaction is one local transaction per data source it touches
// (docs/shard.md).
package sqldriver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tangram-dev/tangram/shard"
)

// DriverName is the name the driver registers under.
const DriverName = "tangram-shard"

func init() { sql.Register(DriverName, Driver{}) }

// Driver opens sharded databases; its data source name is the path of a
// rules file (YAML).
type Driver struct{}

// Open connects through a connector of its own (prefer sql.Open, which
// keeps one connector per *sql.DB).
func (d Driver) Open(name string) (driver.Conn, error) {
	c, err := d.OpenConnector(name)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

// OpenConnector reads the rules file and opens its data sources.
func (Driver) OpenConnector(name string) (driver.Connector, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("shard/sqldriver: rules: %w", err)
	}
	r, err := shard.ParseRules(b)
	if err != nil {
		return nil, err
	}
	return NewConnector(r, Config{})
}

// Config configures NewConnector.
type Config struct {
	// Executor's settings (MaxParallel: a statement's units at once).
	Executor shard.ExecutorConfig
	// MaxOpenConns bounds each data source's pool (default 32).
	MaxOpenConns int
}

// Connector connects *sql.DB handles to the sharded databases; closing
// the *sql.DB closes the data sources' pools. Update switches it to new
// rules while it runs.
type Connector struct {
	cfg   Config
	pools *Pools
	ex    atomic.Pointer[shard.Executor]
	mu    sync.Mutex // serialises Update
	close sync.Once
}

var _ io.Closer = (*Connector)(nil)

// NewConnector opens every data source of r (go-sql-driver/mysql).
func NewConnector(r *shard.Rules, cfg Config) (*Connector, error) {
	c := &Connector{cfg: cfg, pools: NewPools(cfg.MaxOpenConns)}
	if err := c.Update(r); err != nil {
		c.pools.Close()
		return nil, err
	}
	return c, nil
}

// Update switches the connector to rules r: data sources r adds are
// opened, those it keeps (by URL) keep their pools, and statements from
// now on are routed by r. A transaction already open finishes on the
// rules it began with; the pools of data sources r dropped are closed a
// grace period later (see Pools.Keep).
func (c *Connector) Update(r *shard.Rules) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	dbs, err := c.pools.Open(r)
	if err != nil {
		return err
	}
	ex, err := shard.NewExecutor(r, dbs, c.cfg.Executor)
	if err != nil {
		return err
	}
	if old := c.ex.Swap(ex); old != nil {
		// Statements that started on the old rules end before the
		// switch counts as done (a migration's copy relies on it).
		old.Drain(10 * time.Second)
		old.Close()
	}
	c.pools.Keep(r)
	return nil
}

// Pools opens data sources with go-sql-driver/mysql, one pool per URL,
// and keeps them across rule changes.
type Pools struct {
	maxOpen int
	grace   time.Duration
	mu      sync.Mutex
	byURL   map[string]*sql.DB
	timers  map[string]*time.Timer // pools to close once their grace ends
	closed  bool
}

// NewPools returns pools of at most maxOpen connections each (default
// 32).
func NewPools(maxOpen int) *Pools {
	if maxOpen <= 0 {
		maxOpen = 32
	}
	return &Pools{maxOpen: maxOpen, grace: time.Minute, byURL: map[string]*sql.DB{}, timers: map[string]*time.Timer{}}
}

// Open returns a database for every data source of r, opening those not
// open yet.
func (p *Pools) Open(r *shard.Rules) (map[string]*sql.DB, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("shard/sqldriver: pools closed")
	}
	dbs := map[string]*sql.DB{}
	for name, u := range r.AllDataSources() {
		if db := p.byURL[u]; db != nil {
			if t := p.timers[u]; t != nil {
				t.Stop() // named again: not dropped after all
				delete(p.timers, u)
			}
			dbs[name] = db
			continue
		}
		db, err := openMySQL(u, p.maxOpen)
		if err != nil {
			return nil, fmt.Errorf("shard/sqldriver: data source %s: %w", name, err)
		}
		p.byURL[u] = db
		dbs[name] = db
	}
	return dbs, nil
}

// Keep closes, after a grace period (a minute: transactions begun on
// the earlier rules finish on their pools), every pool that none of rs
// names.
func (p *Pools) Keep(rs ...*shard.Rules) {
	p.mu.Lock()
	defer p.mu.Unlock()
	used := map[string]bool{}
	for _, r := range rs {
		for _, u := range r.AllDataSources() {
			used[u] = true
		}
	}
	for u, db := range p.byURL {
		if used[u] || p.timers[u] != nil {
			continue
		}
		p.timers[u] = time.AfterFunc(p.grace, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.timers[u] == nil || p.byURL[u] != db {
				return
			}
			delete(p.timers, u)
			delete(p.byURL, u)
			db.Close()
		})
	}
}

// Close closes every pool now.
func (p *Pools) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for u, db := range p.byURL {
		if t := p.timers[u]; t != nil {
			t.Stop()
		}
		errs = append(errs, db.Close())
	}
	clear(p.byURL)
	clear(p.timers)
	return errors.Join(errs...)
}

// OpenDataSources opens a pool for every data source of r with
// go-sql-driver/mysql (times as time.Time), each of at most maxOpen
// connections (default 32). The caller closes them.
func OpenDataSources(r *shard.Rules, maxOpen int) (map[string]*sql.DB, error) {
	if maxOpen <= 0 {
		maxOpen = 32
	}
	dbs := map[string]*sql.DB{}
	for name, u := range r.AllDataSources() {
		db, err := openMySQL(u, maxOpen)
		if err != nil {
			for _, db := range dbs {
				db.Close()
			}
			return nil, fmt.Errorf("shard/sqldriver: data source %s: %w", name, err)
		}
		dbs[name] = db
	}
	return dbs, nil
}

// openMySQL opens a pool for a mysql:// URL.
func openMySQL(u string, maxOpen int) (*sql.DB, error) {
	dsn, err := mysqlDSN(u)
	if err != nil {
		return nil, err
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	c, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	return db, nil
}

// mysqlDSN turns mysql://user:password@host:port/database?params into
// go-sql-driver's form.
func mysqlDSN(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "mysql" {
		return "", errors.New("a data source URL is not mysql://user[:password]@host:port/database (its text is left out: it may hold a password)")
	}
	// The query's parameters are go-sql-driver's: its options
	// (readTimeout, timeout, tls, …) and, for any other name, a session
	// variable to set.
	q := u.Query()
	if !q.Has("parseTime") {
		q.Set("parseTime", "true")
	}
	mc, err := mysql.ParseDSN("tcp(" + u.Host + ")/" + strings.TrimPrefix(u.Path, "/") + "?" + q.Encode())
	if err != nil {
		return "", fmt.Errorf("%s: %w", u.Redacted(), err)
	}
	mc.User = u.User.Username()
	mc.Passwd, _ = u.User.Password()
	return mc.FormatDSN(), nil
}

// Executor is the connector's executor now (to see a statement's route).
func (c *Connector) Executor() *shard.Executor { return c.ex.Load() }

// Connect returns a connection: statements go through the executor; the
// data sources' pools are shared.
func (c *Connector) Connect(context.Context) (driver.Conn, error) { return &conn{c: c}, nil }

// Driver returns the driver.
func (c *Connector) Driver() driver.Driver { return Driver{} }

// Close closes the data sources' pools (sql.DB.Close calls it).
func (c *Connector) Close() error {
	var err error
	c.close.Do(func() {
		c.ex.Load().Close()
		err = c.pools.Close()
	})
	return err
}

type conn struct {
	c  *Connector
	tx *shard.Tx
}

var (
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
)

func (c *conn) Prepare(q string) (driver.Stmt, error) { return &stmt{c: c, q: q}, nil }
func (c *conn) PrepareContext(_ context.Context, q string) (driver.Stmt, error) {
	return &stmt{c: c, q: q}, nil
}
func (c *conn) Close() error { return nil }

func (c *conn) Begin() (driver.Tx, error) { return c.BeginTx(context.Background(), driver.TxOptions{}) }

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if c.tx != nil {
		return nil, errors.New("shard/sqldriver: a transaction is already open on this connection")
	}
	tx, err := c.c.ex.Load().Begin(ctx, &sql.TxOptions{Isolation: sql.IsolationLevel(opts.Isolation), ReadOnly: opts.ReadOnly})
	if err != nil {
		return nil, err
	}
	c.tx = tx
	return &txn{c: c}, nil
}

// CheckNamedValue passes every argument through: the data sources' driver
// converts them.
func (c *conn) CheckNamedValue(*driver.NamedValue) error { return nil }

func args(nv []driver.NamedValue) ([]any, error) {
	out := make([]any, len(nv))
	for i, v := range nv {
		if v.Name != "" {
			return nil, fmt.Errorf("shard/sqldriver: named argument %s: use ? markers", v.Name)
		}
		out[i] = v.Value
	}
	return out, nil
}

func (c *conn) ExecContext(ctx context.Context, q string, nv []driver.NamedValue) (driver.Result, error) {
	a, err := args(nv)
	if err != nil {
		return nil, err
	}
	var r shard.Result
	if c.tx != nil {
		r, err = c.tx.Exec(ctx, q, a...)
	} else {
		r, err = c.c.ex.Load().Exec(ctx, q, a...)
	}
	if err != nil {
		return nil, err
	}
	return result{r}, nil
}

func (c *conn) QueryContext(ctx context.Context, q string, nv []driver.NamedValue) (driver.Rows, error) {
	a, err := args(nv)
	if err != nil {
		return nil, err
	}
	var cur *shard.Cursor
	if c.tx != nil {
		cur, err = c.tx.Cursor(ctx, q, a...)
	} else {
		cur, err = c.c.ex.Load().Cursor(ctx, q, a...)
	}
	if err != nil {
		return nil, err
	}
	return &rows{c: cur}, nil
}

type result struct{ r shard.Result }

func (r result) LastInsertId() (int64, error) { return r.r.LastInsertID, nil }
func (r result) RowsAffected() (int64, error) { return r.r.RowsAffected, nil }

type txn struct{ c *conn }

func (t *txn) Commit() error {
	tx := t.c.tx
	t.c.tx = nil
	return tx.Commit()
}

func (t *txn) Rollback() error {
	tx := t.c.tx
	t.c.tx = nil
	return tx.Rollback()
}

type stmt struct {
	c *conn
	q string
}

func (s *stmt) Close() error  { return nil }
func (s *stmt) NumInput() int { return -1 }
func (s *stmt) Exec(a []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(a))
}
func (s *stmt) Query(a []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(a))
}
func (s *stmt) ExecContext(ctx context.Context, nv []driver.NamedValue) (driver.Result, error) {
	return s.c.ExecContext(ctx, s.q, nv)
}
func (s *stmt) QueryContext(ctx context.Context, nv []driver.NamedValue) (driver.Rows, error) {
	return s.c.QueryContext(ctx, s.q, nv)
}

func named(a []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(a))
	for i, v := range a {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}

// rows are a query's rows: streamed from the data source when one data
// node answers it whole outside a transaction, merged first otherwise.
type rows struct {
	c   *shard.Cursor
	buf []any
}

func (r *rows) Columns() []string { return r.c.Columns }
func (r *rows) Close() error      { return r.c.Close() }
func (r *rows) Next(dest []driver.Value) error {
	if r.buf == nil {
		r.buf = make([]any, len(dest))
	}
	if err := r.c.Next(r.buf); err != nil {
		return err
	}
	for i, v := range r.buf {
		dest[i] = v
	}
	return nil
}
