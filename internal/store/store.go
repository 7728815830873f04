// Package store is Tangram's SQL store: one API over SQLite (embedded, the
// default), PostgreSQL and MySQL/MariaDB, with embedded versioned migrations
// that are applied when the store opens.
//
// Queries are written once with '?' placeholders and portable SQL; the store
// rewrites placeholders for PostgreSQL. Where the dialects differ (insert
// returning an id, upserts, column types in migrations) the store offers a
// helper instead of letting callers branch on the dialect.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tangram-dev/tangram/internal/errcode"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Dialect names the SQL database behind a Store.
type Dialect string

// The supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
	MySQL    Dialect = "mysql"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	ErrNotFound  = errcode.New(errcode.NotFound, "store: not found")
	ErrConflict  = errcode.New(errcode.Conflict, "store: conflict")
	ErrBadDSN    = errors.New("store: bad data source")
	ErrMigration = errors.New("store: migration failed")
)

// Config configures Open.
type Config struct {
	// DSN is sqlite://path/to/file.db, postgres://user@host:port/db?... or
	// mysql://user:pass@host:port/db. Required.
	DSN string
	// Logger receives store logs. Default: slog.Default().
	Logger *slog.Logger
	// Registerer receives store latency metrics. Default: none.
	Registerer prometheus.Registerer
	// MaxOpenConns bounds the pool. Default: 1 for SQLite writers is not
	// needed (WAL), so 8 for SQLite and 32 for the others.
	MaxOpenConns int
}

// Store is a SQL database with Tangram's schema.
type Store struct {
	db      *sql.DB
	dsn     string
	dialect Dialect
	log     *slog.Logger
	latency *prometheus.HistogramVec
}

// Open connects to the database named by cfg.DSN and applies pending migrations.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dialect, driver, dsn, err := parseDSN(cfg.DSN)
	if err != nil {
		return nil, err
	}
	maxOpen := cfg.MaxOpenConns
	if maxOpen == 0 {
		maxOpen = 32
		if dialect == SQLite {
			maxOpen = 8
		}
	}
	db, err := openDB(driver, dsn, maxOpen)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dialect, err)
	}
	if dialect == MySQL {
		if db, err = endIdleTransactions(ctx, db, dsn, maxOpen); err != nil {
			return nil, err
		}
	}
	s := &Store{db: db, dsn: cfg.DSN, dialect: dialect, log: cfg.Logger}
	if cfg.Registerer != nil {
		s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tangram_store_query_seconds",
			Help:    "Latency of SQL store operations.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"op"})
		if err := cfg.Registerer.Register(s.latency); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				s.latency = are.ExistingCollector.(*prometheus.HistogramVec)
			} else {
				db.Close()
				return nil, fmt.Errorf("store: register metrics: %w", err)
			}
		}
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", dialect, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func openDB(driver, dsn string, maxOpen int) (*sql.DB, error) {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// endIdleTransactions reopens db, on MariaDB, with sessions that the
// server ends after 2 s idle inside a transaction (idle_transaction_timeout,
// unless the DSN sets it) — what idle_in_transaction_session_timeout does
// on PostgreSQL (parseDSN): a server frozen mid-transaction must not hold
// its row locks past the 3 s job lease. MySQL has no such setting; db is
// returned as it is.
func endIdleTransactions(ctx context.Context, db *sql.DB, dsn string, maxOpen int) (*sql.DB, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %v", ErrBadDSN, err)
	}
	if _, set := mc.Params["idle_transaction_timeout"]; set {
		return db, nil
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var version string
	if err := db.QueryRowContext(pingCtx, `SELECT VERSION()`).Scan(&version); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to mysql: %w", err)
	}
	if !strings.Contains(strings.ToLower(version), "mariadb") {
		return db, nil
	}
	db.Close()
	if mc.Params == nil {
		mc.Params = map[string]string{}
	}
	mc.Params["idle_transaction_timeout"] = "2"
	return openDB("mysql", mc.FormatDSN(), maxOpen)
}

// parseDSN turns a Tangram store URL into a driver name and driver DSN.
func parseDSN(raw string) (Dialect, string, string, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", "", "", fmt.Errorf("%w: %q has no scheme (want sqlite://, postgres:// or mysql://)", ErrBadDSN, raw)
	}
	switch scheme {
	case "sqlite", "sqlite3", "file":
		path, query, _ := strings.Cut(rest, "?")
		if path == "" {
			return "", "", "", fmt.Errorf("%w: sqlite:// needs a file path", ErrBadDSN)
		}
		if path != ":memory:" {
			// The database holds password hashes, token hashes and
			// encrypted secrets: only its owner may read it. SQLite gives
			// its -wal and -shm files the database file's mode.
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return "", "", "", fmt.Errorf("store: create data directory: %w", err)
			}
			f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
			if err != nil {
				return "", "", "", fmt.Errorf("store: create database file: %w", err)
			}
			f.Close()
		}
		q, err := url.ParseQuery(query)
		if err != nil {
			return "", "", "", fmt.Errorf("%w: %v", ErrBadDSN, err)
		}
		for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(FULL)"} {
			q.Add("_pragma", p)
		}
		q.Set("_txlock", "immediate")
		return SQLite, "sqlite", "file:" + path + "?" + q.Encode(), nil
	case "postgres", "postgresql":
		// A session idle inside a transaction for 2 s is ended by the
		// server, its locks released: no transaction of the store waits
		// on its client that long, but a process frozen mid-transaction
		// (SIGSTOP, a paused VM, a GC stall) would otherwise hold its row
		// locks until it wakes — and its job partitions' rows, say,
		// would stay locked past their 3 s lease, stalling the server
		// that takes them over. A value in the DSN is kept.
		u, err := url.Parse(raw)
		if err != nil {
			return "", "", "", fmt.Errorf("%w: %v", ErrBadDSN, err)
		}
		q := u.Query()
		if !q.Has("idle_in_transaction_session_timeout") {
			q.Set("idle_in_transaction_session_timeout", "2000")
			u.RawQuery = q.Encode()
		}
		return Postgres, "pgx", u.String(), nil
	case "mysql", "mariadb":
		u, err := url.Parse("mysql://" + rest)
		if err != nil {
			return "", "", "", fmt.Errorf("%w: %v", ErrBadDSN, err)
		}
		mc := mysql.NewConfig()
		mc.Net = "tcp"
		mc.Addr = u.Host
		if !strings.Contains(mc.Addr, ":") {
			mc.Addr += ":3306"
		}
		if u.User != nil {
			mc.User = u.User.Username()
			mc.Passwd, _ = u.User.Password()
		}
		mc.DBName = strings.TrimPrefix(u.Path, "/")
		if mc.DBName == "" {
			return "", "", "", fmt.Errorf("%w: mysql:// needs a database name", ErrBadDSN)
		}
		mc.ParseTime = false
		mc.MultiStatements = true
		// An UPDATE reports the rows it matched, as on PostgreSQL and
		// SQLite — not only those it changed: a guarded write (WHERE term
		// = ?) that sets a value it already has still counts as done.
		mc.ClientFoundRows = true
		// Arguments are put into the statement text by the driver (safe
		// with utf8mb4; the driver refuses the multibyte charsets where it
		// would not be): one round trip a statement, where the server-side
		// prepare the driver does otherwise costs a prepare, an execute
		// and a close for every statement with arguments. The hot
		// statements that are worth keeping parsed are prepared (Stmt).
		mc.InterpolateParams = true
		mc.Params = map[string]string{"charset": "utf8mb4"}
		for k, v := range u.Query() {
			mc.Params[k] = v[0]
		}
		return MySQL, "mysql", mc.FormatDSN(), nil
	default:
		return "", "", "", fmt.Errorf("%w: unknown scheme %q (want sqlite, postgres or mysql)", ErrBadDSN, scheme)
	}
}

// Dialect reports which database the store talks to.
func (s *Store) Dialect() Dialect { return s.dialect }

// DSN is the store URL the store was opened with (it may hold a password:
// do not log it). PostgreSQL LISTEN connections use it.
func (s *Store) DSN() string { return s.dsn }

// DB exposes the pool for callers that need database/sql directly (tests, LISTEN).
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the pool.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Rebind rewrites '?' placeholders into the dialect's form.
func (s *Store) Rebind(q string) string { return rebind(s.dialect, q) }

func rebind(d Dialect, q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	inStr := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '\'' {
			inStr = !inStr
		}
		if c == '?' && !inStr {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func (s *Store) observe(op string, start time.Time) {
	if s.latency != nil {
		s.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
}

// Querier is what both *Store and *Tx offer for reading and writing.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	// InsertID runs an INSERT and returns the id of the new row.
	InsertID(ctx context.Context, query string, args ...any) (int64, error)
	Dialect() Dialect
}

// ExecContext runs a statement.
func (s *Store) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	defer s.observe("exec", time.Now())
	return s.db.ExecContext(ctx, s.Rebind(q), args...)
}

// QueryContext runs a query.
func (s *Store) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	defer s.observe("query", time.Now())
	return s.db.QueryContext(ctx, s.Rebind(q), args...)
}

// QueryRowContext runs a query expected to return at most one row.
func (s *Store) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	defer s.observe("query", time.Now())
	return s.db.QueryRowContext(ctx, s.Rebind(q), args...)
}

// InsertID runs an INSERT into a table whose primary key is "id".
func (s *Store) InsertID(ctx context.Context, q string, args ...any) (int64, error) {
	defer s.observe("insert", time.Now())
	return insertID(ctx, s.dialect, s.db, q, args...)
}

type execQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func insertID(ctx context.Context, d Dialect, db execQuerier, q string, args ...any) (int64, error) {
	if d == Postgres {
		var id int64
		err := db.QueryRowContext(ctx, rebind(d, q)+" RETURNING id", args...).Scan(&id)
		return id, err
	}
	res, err := db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// Tx is a transaction with the store's placeholder handling.
type Tx struct {
	tx *sql.Tx
	s  *Store
}

// Dialect reports the store's dialect.
func (t *Tx) Dialect() Dialect { return t.s.dialect }

// Relaxed lets this transaction's commit return before its log is
// flushed to disk, on PostgreSQL (SET LOCAL synchronous_commit = off: a
// crash within the next fraction of a second may lose it, never corrupt
// it or reorder it with later transactions). Only for writes that are
// derived again after a crash — an end record whose outcome is already
// durable elsewhere, a timeline. A no-op on MySQL and SQLite, whose
// flushing is set for the whole server or file.
func (t *Tx) Relaxed(ctx context.Context) error {
	if t.s.dialect != Postgres {
		return nil
	}
	_, err := t.tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`)
	return err
}

// ExecContext runs a statement inside the transaction.
func (t *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.s.Rebind(q), args...)
}

// QueryContext runs a query inside the transaction.
func (t *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.s.Rebind(q), args...)
}

// QueryRowContext runs a single-row query inside the transaction.
func (t *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.s.Rebind(q), args...)
}

// InsertID runs an INSERT inside the transaction and returns the new id.
func (t *Tx) InsertID(ctx context.Context, q string, args ...any) (int64, error) {
	return insertID(ctx, t.s.dialect, t.tx, q, args...)
}

// InTx runs fn in a transaction, committing if fn returns nil and rolling back
// otherwise. All of fn's writes land together or not at all.
func (s *Store) InTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	defer s.observe("tx", time.Now())
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	tx := &Tx{tx: sqlTx, s: s}
	defer func() {
		if p := recover(); p != nil {
			_ = sqlTx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = sqlTx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = sqlTx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a duplicate-key error on any dialect.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Number == 1062
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "constraint failed: UNIQUE")
}

// NowMillis is the store's clock: Unix milliseconds, the portable timestamp
// used by every table.
func NowMillis() int64 { return time.Now().UnixMilli() }
