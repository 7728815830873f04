package mq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Idempotent consumption: a message can arrive more than once (a producer
// retry, a consumer that died before committing, a rebalance), so a
// handler with effects that must happen once records the messages it
// processed — the seed's dedup table of message IDs — and skips repeats.

// Claim is what a DedupStore says about a message ID.
type Claim int

// The claims.
const (
	Claimed    Claim = iota // new: the caller processes it
	Duplicate               // processed already: skip it
	InProgress              // another consumer is processing it now: try later
)

// DedupStore records processed message IDs with an expiry.
type DedupStore interface {
	// Claim marks key as being processed for up to hold, unless it is
	// already processed or being processed.
	Claim(ctx context.Context, key string, hold time.Duration) (Claim, error)
	// Done marks key processed, remembered for keep.
	Done(ctx context.Context, key string, keep time.Duration) error
	// Release forgets a claim whose processing failed.
	Release(ctx context.Context, key string) error
}

// ErrInProgress is returned by an Idempotent handler for a message another
// consumer is processing; it comes back later through the retry topic.
var ErrInProgress = errors.New("mq: message being processed by another consumer")

// Idempotent wraps h so each message (by its producer ID) of group is
// handled once: a repeat within keep is skipped. A claim lasts 5 minutes,
// after which a consumer that died mid-way no longer blocks the message.
func Idempotent(st DedupStore, group string, keep time.Duration, h Handler) Handler {
	return func(ctx context.Context, m *Message) error {
		id := m.MsgID
		if id == "" {
			id = m.ID
		}
		key := group + "/" + id
		c, err := st.Claim(ctx, key, 5*time.Minute)
		if err != nil {
			return fmt.Errorf("mq: dedup: %w", err)
		}
		switch c {
		case Duplicate:
			return nil
		case InProgress:
			return ErrInProgress
		}
		if err := h(ctx, m); err != nil {
			if rerr := st.Release(context.WithoutCancel(ctx), key); rerr != nil {
				return errors.Join(err, fmt.Errorf("mq: dedup release: %w", rerr))
			}
			return err
		}
		return st.Done(context.WithoutCancel(ctx), key, keep)
	}
}

// RedisDedup keeps the table in Redis: one key per message ID, with a TTL.
type RedisDedup struct {
	Client redis.UniversalClient
	Prefix string // default "tangram:mq:dedup:"
}

func (r *RedisDedup) key(k string) string {
	if r.Prefix == "" {
		return "tangram:mq:dedup:" + k
	}
	return r.Prefix + k
}

// Claim implements DedupStore.
func (r *RedisDedup) Claim(ctx context.Context, key string, hold time.Duration) (Claim, error) {
	ok, err := r.Client.SetNX(ctx, r.key(key), "processing", hold).Result()
	if err != nil || ok {
		return Claimed, err
	}
	v, err := r.Client.Get(ctx, r.key(key)).Result()
	if errors.Is(err, redis.Nil) {
		return r.Claim(ctx, key, hold) // expired between the two calls
	}
	if err != nil {
		return Claimed, err
	}
	if v == "done" {
		return Duplicate, nil
	}
	return InProgress, nil
}

// Done implements DedupStore.
func (r *RedisDedup) Done(ctx context.Context, key string, keep time.Duration) error {
	return r.Client.Set(ctx, r.key(key), "done", keep).Err()
}

// Release implements DedupStore.
func (r *RedisDedup) Release(ctx context.Context, key string) error {
	return r.Client.Del(ctx, r.key(key)).Err()
}

// SQLDedup keeps the table in a SQL database (the one the handler writes
// to, ideally, so the effect and the record can share a transaction).
// Dialect is "postgres", "mysql" or "sqlite". Init creates the table.
type SQLDedup struct {
	DB      *sql.DB
	Dialect string
	Table   string // default "mq_dedup"
}

func (s *SQLDedup) table() string {
	if s.Table == "" {
		return "mq_dedup"
	}
	return s.Table
}

func (s *SQLDedup) q(query string) string {
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
func (s *SQLDedup) Init(ctx context.Context) error {
	switch s.Dialect {
	case "postgres", "mysql", "sqlite":
	default:
		return fmt.Errorf("mq: dedup dialect %q (want postgres, mysql or sqlite)", s.Dialect)
	}
	_, err := s.DB.ExecContext(ctx, s.q(`CREATE TABLE IF NOT EXISTS {t} (k VARCHAR(255) PRIMARY KEY, done SMALLINT NOT NULL, expires_at BIGINT NOT NULL)`))
	return err
}

// Claim implements DedupStore.
func (s *SQLDedup) Claim(ctx context.Context, key string, hold time.Duration) (Claim, error) {
	now := time.Now().UnixMilli()
	if _, err := s.DB.ExecContext(ctx, s.q(`DELETE FROM {t} WHERE k = ? AND expires_at < ?`), key, now); err != nil {
		return Claimed, err
	}
	ins := `INSERT INTO {t} (k, done, expires_at) VALUES (?, 0, ?) ON CONFLICT (k) DO NOTHING`
	if s.Dialect == "mysql" {
		ins = `INSERT IGNORE INTO {t} (k, done, expires_at) VALUES (?, 0, ?)`
	}
	res, err := s.DB.ExecContext(ctx, s.q(ins), key, now+hold.Milliseconds())
	if err != nil {
		return Claimed, err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return Claimed, nil
	}
	var done int
	err = s.DB.QueryRowContext(ctx, s.q(`SELECT done FROM {t} WHERE k = ?`), key).Scan(&done)
	if errors.Is(err, sql.ErrNoRows) {
		return s.Claim(ctx, key, hold)
	}
	if err != nil {
		return Claimed, err
	}
	if done == 1 {
		return Duplicate, nil
	}
	return InProgress, nil
}

// Done implements DedupStore.
func (s *SQLDedup) Done(ctx context.Context, key string, keep time.Duration) error {
	_, err := s.DB.ExecContext(ctx, s.q(`UPDATE {t} SET done = 1, expires_at = ? WHERE k = ?`), time.Now().Add(keep).UnixMilli(), key)
	return err
}

// Release implements DedupStore.
func (s *SQLDedup) Release(ctx context.Context, key string) error {
	_, err := s.DB.ExecContext(ctx, s.q(`DELETE FROM {t} WHERE k = ? AND done = 0`), key)
	return err
}

// Purge deletes expired records (run it now and then).
func (s *SQLDedup) Purge(ctx context.Context) (int64, error) {
	res, err := s.DB.ExecContext(ctx, s.q(`DELETE FROM {t} WHERE expires_at < ?`), time.Now().UnixMilli())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
