// Package sqldedup keeps mq's table of processed message IDs in a SQL
// database (PostgreSQL, MySQL/MariaDB or SQLite through database/sql; the
// caller opens the *sql.DB with its own driver), for mq.Idempotent.
package sqldedup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/mq"
)

var _ mq.DedupStore = (*Store)(nil)

// Store keeps the table in a SQL database (the one the handler writes
// to, ideally, so the effect and the record can share a transaction).
// Dialect is "postgres", "mysql" or "sqlite". Init creates the table.
type Store struct {
	DB      *sql.DB
	Dialect string
	Table   string // default "mq_dedup"
}

func (s *Store) table() string {
	if s.Table == "" {
		return "mq_dedup"
	}
	return s.Table
}

func (s *Store) q(query string) string {
	query = strings.ReplaceAll(query, "{t}", s.table())
	if s.Dialect != "postgres" {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Init creates the table if it does not exist.
func (s *Store) Init(ctx context.Context) error {
	switch s.Dialect {
	case "postgres", "mysql", "sqlite":
	default:
		return fmt.Errorf("sqldedup: dialect %q (want postgres, mysql or sqlite)", s.Dialect)
	}
	_, err := s.DB.ExecContext(ctx, s.q(`CREATE TABLE IF NOT EXISTS {t} (k VARCHAR(255) PRIMARY KEY, done SMALLINT NOT NULL, expires_at BIGINT NOT NULL)`))
	return err
}

// Claim implements mq.DedupStore.
func (s *Store) Claim(ctx context.Context, key string, hold time.Duration) (mq.Claim, error) {
	now := time.Now().UnixMilli()
	if _, err := s.DB.ExecContext(ctx, s.q(`DELETE FROM {t} WHERE k = ? AND expires_at < ?`), key, now); err != nil {
		return mq.Claimed, err
	}
	ins := `INSERT INTO {t} (k, done, expires_at) VALUES (?, 0, ?) ON CONFLICT (k) DO NOTHING`
	if s.Dialect == "mysql" {
		ins = `INSERT IGNORE INTO {t} (k, done, expires_at) VALUES (?, 0, ?)`
	}
	res, err := s.DB.ExecContext(ctx, s.q(ins), key, now+hold.Milliseconds())
	if err != nil {
		return mq.Claimed, err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return mq.Claimed, nil
	}
	var done int
	err = s.DB.QueryRowContext(ctx, s.q(`SELECT done FROM {t} WHERE k = ?`), key).Scan(&done)
	if errors.Is(err, sql.ErrNoRows) {
		return s.Claim(ctx, key, hold)
	}
	if err != nil {
		return mq.Claimed, err
	}
	if done == 1 {
		return mq.Duplicate, nil
	}
	return mq.InProgress, nil
}

// Done implements mq.DedupStore.
func (s *Store) Done(ctx context.Context, key string, keep time.Duration) error {
	_, err := s.DB.ExecContext(ctx, s.q(`UPDATE {t} SET done = 1, expires_at = ? WHERE k = ?`), time.Now().Add(keep).UnixMilli(), key)
	return err
}

// Release implements mq.DedupStore.
func (s *Store) Release(ctx context.Context, key string) error {
	_, err := s.DB.ExecContext(ctx, s.q(`DELETE FROM {t} WHERE k = ? AND done = 0`), key)
	return err
}

// Purge deletes expired records (run it now and then).
func (s *Store) Purge(ctx context.Context) (int64, error) {
	res, err := s.DB.ExecContext(ctx, s.q(`DELETE FROM {t} WHERE expires_at < ?`), time.Now().UnixMilli())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
