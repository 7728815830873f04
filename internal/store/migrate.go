package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("store: read migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(name, "_")
		if !ok || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("%w: migration file %q is not NNNN_name.sql", ErrMigration, name)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("%w: migration file %q: %v", ErrMigration, name, err)
		}
		body, err := migrationFS.ReadFile("migrations/" + name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(rest, ".sql"), SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("%w: two migrations numbered %d", ErrMigration, out[i].Version)
		}
	}
	return out, nil
}

// translate turns a migration's portable tokens into the dialect's types.
func translate(d Dialect, sqlText string) string {
	var id, text, key, longKey string
	switch d {
	case Postgres:
		id, text, key, longKey = "BIGSERIAL PRIMARY KEY", "TEXT", "VARCHAR(191)", "VARCHAR(512)"
	case MySQL:
		id, text, key, longKey = "BIGINT AUTO_INCREMENT PRIMARY KEY", "LONGTEXT", "VARCHAR(191)", "VARCHAR(512)"
	default:
		id, text, key, longKey = "INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "TEXT", "TEXT"
	}
	r := strings.NewReplacer("{{ID}}", id, "{{TEXT}}", text, "{{KEY}}", key, "{{LONGKEY}}", longKey)
	return r.Replace(sqlText)
}

// statements splits a migration into statements on ';' at line ends and
// drops comment lines.
func statements(sqlText string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sqlText, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// migrate applies pending migrations under a database-wide lock so that
// several servers starting together on one database migrate it once.
func (s *Store) migrate(ctx context.Context) error {
	migs, err := Migrations()
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%w: acquire connection: %v", ErrMigration, err)
	}
	defer conn.Close()
	unlock, err := lockMigrations(ctx, s.dialect, conn)
	if err != nil {
		return err
	}
	defer unlock()

	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT NOT NULL PRIMARY KEY, name VARCHAR(191) NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("%w: create schema_migrations: %v", ErrMigration, err)
	}
	applied := map[int]bool{}
	rows, err := conn.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("%w: read schema_migrations: %v", ErrMigration, err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("%w: %v", ErrMigration, err)
		}
		applied[v] = true
	}
	rows.Close()
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		if err := s.apply(ctx, conn, m); err != nil {
			return err
		}
		s.log.Info("store migration applied", "version", m.Version, "name", m.Name, "dialect", s.dialect)
	}
	return nil
}

func (s *Store) apply(ctx context.Context, conn *sql.Conn, m Migration) error {
	// PostgreSQL and SQLite run DDL transactionally: a failed migration leaves
	// nothing behind. MySQL commits each DDL statement implicitly; there the
	// statements are written to be safe to re-run only as a whole migration.
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: begin %d: %v", ErrMigration, m.Version, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	for _, stmt := range statements(translate(s.dialect, m.SQL)) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%w: %04d_%s: %v\nstatement: %s", ErrMigration, m.Version, m.Name, err, stmt)
		}
	}
	if _, err := tx.ExecContext(ctx, rebind(s.dialect, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
		m.Version, m.Name, NowMillis()); err != nil {
		return fmt.Errorf("%w: record %d: %v", ErrMigration, m.Version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: commit %d: %v", ErrMigration, m.Version, err)
	}
	return nil
}

func lockMigrations(ctx context.Context, d Dialect, conn *sql.Conn) (func(), error) {
	switch d {
	case Postgres:
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(74657261)`); err != nil {
			return nil, fmt.Errorf("%w: lock: %v", ErrMigration, err)
		}
		return func() { _, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(74657261)`) }, nil
	case MySQL:
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK('tangram_migrate', 60)`).Scan(&got); err != nil || got.Int64 != 1 {
			return nil, fmt.Errorf("%w: lock: %v (got %v)", ErrMigration, err, got.Int64)
		}
		return func() { _, _ = conn.ExecContext(context.Background(), `SELECT RELEASE_LOCK('tangram_migrate')`) }, nil
	default:
		return func() {}, nil // SQLite: one file, transactions with _txlock=immediate serialise writers
	}
}

// SchemaVersion returns the highest applied migration version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := s.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
}
