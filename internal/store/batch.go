package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Write is one statement of a Batch: its text ('?' placeholders) and
// arguments.
type Write struct {
	Query string
	Args  []any
	// Scan, when set, makes the statement a query: its first row is
	// scanned into Scan's pointers, and the count Batch returns for it is
	// 1, or 0 when it found no row (not an error: the batch's other
	// statements stand).
	Scan []any
	// Each, when set (and Scan is not), makes the statement a query whose
	// rows are each passed to Each, which reads the row with scan; the
	// count Batch returns for it is the number of rows. An error from
	// Each fails the batch. Each is first called with a nil scan at the
	// start of every run of the batch (a batch is run again after a
	// deadlock): the rows read so far are to be forgotten.
	Each func(scan func(dest ...any) error) error
}

// Batch runs writes as one transaction and returns the rows each
// affected. On PostgreSQL the statements go to the server together — one
// round trip, in one implicit transaction (pgx's batch protocol) — where
// Begin, each statement and Commit are a round trip each through InTx;
// on the other dialects they run one after another inside InTx.
//
// A statement cannot see the rows affected by the ones before it: where a
// write must only happen if an earlier one matched (a fence), say so in
// its own WHERE clause. An error from any statement rolls back them all.
// relaxed is Tx.Relaxed: on PostgreSQL the commit does not wait for the
// log flush.
//
// A batch the database chose as a deadlock victim (or, on PostgreSQL, a
// serialization failure) was rolled back whole; it is run again, up to
// three times in all.
func (s *Store) Batch(ctx context.Context, relaxed bool, writes ...Write) ([]int64, error) {
	defer s.observe("batch", time.Now())
	for attempt := 1; ; attempt++ {
		n, err := s.batch(ctx, relaxed, writes)
		if err == nil || attempt == 3 || !IsDeadlock(err) || ctx.Err() != nil {
			return n, err
		}
		s.log.Debug("store: batch retried after a deadlock", "attempt", attempt, "err", err)
	}
}

// IsDeadlock reports whether err is the database rolling a transaction
// back to break a deadlock or a serialization conflict (running it again
// is safe and likely to succeed).
func IsDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40P01" || pgErr.Code == "40001"
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Number == 1213
	}
	return false
}

func (s *Store) batch(ctx context.Context, relaxed bool, writes []Write) ([]int64, error) {
	for _, w := range writes {
		if w.Scan == nil && w.Each != nil {
			if err := w.Each(nil); err != nil {
				return nil, err
			}
		}
	}
	if s.dialect != Postgres && len(writes) == 1 && writes[0].Scan == nil && writes[0].Each == nil {
		// A statement alone is its own transaction.
		res, err := s.db.ExecContext(ctx, writes[0].Query, writes[0].Args...)
		if err != nil {
			return nil, err
		}
		n, err := res.RowsAffected()
		return []int64{n}, err
	}
	if s.dialect != Postgres {
		n := make([]int64, len(writes))
		err := s.InTx(ctx, func(tx *Tx) error {
			for i, w := range writes {
				if w.Scan == nil && w.Each != nil {
					rows, err := tx.QueryContext(ctx, w.Query, w.Args...)
					if err != nil {
						return err
					}
					if n[i], err = eachRow(rows, func() { _ = rows.Close() }, w.Each); err != nil {
						return err
					}
					continue
				}
				if w.Scan != nil {
					err := tx.QueryRowContext(ctx, w.Query, w.Args...).Scan(w.Scan...)
					if errors.Is(err, sql.ErrNoRows) {
						continue
					}
					if err != nil {
						return err
					}
					n[i] = 1
					continue
				}
				res, err := tx.ExecContext(ctx, w.Query, w.Args...)
				if err != nil {
					return err
				}
				if n[i], err = res.RowsAffected(); err != nil {
					return err
				}
			}
			return nil
		})
		return n, err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: batch: %w", err)
	}
	defer conn.Close()
	n := make([]int64, len(writes))
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: batch: driver connection %T is not pgx's", dc)
		}
		b := &pgx.Batch{}
		if relaxed {
			// Local to the implicit transaction the batch runs in.
			b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
		}
		for _, w := range writes {
			b.Queue(s.Rebind(w.Query), w.Args...)
		}
		br := c.Conn().SendBatch(ctx, b)
		if relaxed {
			if _, err := br.Exec(); err != nil {
				return errors.Join(err, br.Close())
			}
		}
		for i, w := range writes {
			if w.Scan == nil && w.Each != nil {
				rows, err := br.Query()
				if err == nil {
					n[i], err = eachRow(rows, rows.Close, w.Each)
				}
				if err != nil {
					return errors.Join(err, br.Close())
				}
				continue
			}
			if w.Scan != nil {
				err := br.QueryRow().Scan(w.Scan...)
				if errors.Is(err, pgx.ErrNoRows) {
					continue
				}
				if err != nil {
					return errors.Join(err, br.Close())
				}
				n[i] = 1
				continue
			}
			tag, err := br.Exec()
			if err != nil {
				return errors.Join(err, br.Close())
			}
			n[i] = tag.RowsAffected()
		}
		return br.Close()
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// rowIter is what database/sql's and pgx's rows have in common.
type rowIter interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// eachRow passes every row of rows to each, closes rows (done) and
// returns how many there were.
func eachRow(rows rowIter, done func(), each func(scan func(dest ...any) error) error) (int64, error) {
	defer done()
	var n int64
	for rows.Next() {
		if err := each(rows.Scan); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}
