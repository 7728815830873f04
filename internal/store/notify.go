package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tangram-dev/tangram/internal/backoff"
)

// Cross-server wake-ups. A component that writes a change other servers
// must act on (a config release, a lease hand-over) calls tx.Notify in the
// transaction; its servers run Listen and act when woken. On PostgreSQL
// this is LISTEN/NOTIFY, delivered at commit in milliseconds. SQLite has one
// process and MySQL has no equivalent, so there Notify does nothing and
// Listen returns at once: callers keep a periodic scan, which Listen only
// makes faster, never replaces.

// CanListen reports whether Listen delivers wake-ups (PostgreSQL).
func (s *Store) CanListen() bool { return s.dialect == Postgres }

// Notify wakes the servers listening on channel when the transaction
// commits (nothing on a rollback). Channel is a lower-case identifier.
func (t *Tx) Notify(ctx context.Context, channel string) error {
	if t.s.dialect != Postgres {
		return nil
	}
	if err := checkChannel(channel); err != nil {
		return err
	}
	if _, err := t.ExecContext(ctx, `SELECT pg_notify(?, '')`, channel); err != nil {
		return fmt.Errorf("store: notify %s: %w", channel, err)
	}
	return nil
}

// Listen holds a connection listening on channel until ctx ends, calling
// wake for every notification and once after each (re)connection, so that
// nothing committed while it was not listening is missed. A lost
// connection is logged and re-made with backoff. It returns at once where
// CanListen is false.
func (s *Store) Listen(ctx context.Context, channel string, wake func(), log *slog.Logger) error {
	if !s.CanListen() {
		return nil
	}
	if err := checkChannel(channel); err != nil {
		return err
	}
	bo := backoff.New(100*time.Millisecond, 10*time.Second)
	for {
		err := s.listenOnce(ctx, channel, wake, bo)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("store: LISTEN connection lost; callers fall back to scanning until it is back", "channel", channel, "err", err, "retry_in", bo.Current())
		if !bo.Sleep(ctx.Done()) {
			return nil
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, channel string, wake func(), bo *backoff.Backoff) error {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	bo.Reset()
	wake() // catch anything committed while not listening
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wake()
	}
}

func checkChannel(channel string) error {
	if channel == "" || len(channel) > 63 {
		return fmt.Errorf("store: channel %q: want 1–63 characters", channel)
	}
	for _, r := range channel {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("store: channel %q: want lower-case letters, digits and '_'", channel)
		}
	}
	return nil
}
