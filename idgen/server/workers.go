package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/store"
)

// maxPool bounds a pool's numbers (a layout field of up to 22 bits).
const maxPool = 1<<22 - 1

func (s *Server) leaseTTL(ms int64) (int64, error) {
	d := time.Duration(ms) * time.Millisecond
	if ms == 0 {
		d = 10 * time.Second
	}
	if d < s.cfg.MinTTL || d > s.cfg.MaxTTL {
		return 0, errcode.New(errcode.BadRequest, fmt.Sprintf("idgen: lease TTL %v: want %v–%v", d, s.cfg.MinTTL, s.cfg.MaxTTL))
	}
	return d.Milliseconds(), nil
}

type workerRow struct {
	worker, term, expires, notBefore, last int64
}

// Lease leases the lowest free number of req.Pool in [0, req.Max]: one
// never leased, or one whose lease expired — preferring numbers the next
// holder may use at once (not_before passed). The reply's NotBeforeMs is
// the earliest time the new holder may put in an ID.
func (s *Server) Lease(ctx context.Context, holder string, req idgen.LeaseRequest) (idgen.WorkerLease, error) {
	if err := idgen.ValidName("pool", req.Pool); err != nil {
		return idgen.WorkerLease{}, err
	}
	if req.Max < 0 || req.Max > maxPool {
		return idgen.WorkerLease{}, errcode.New(errcode.BadRequest, fmt.Sprintf("idgen: pool max %d: want 0–%d", req.Max, maxPool))
	}
	ttl, err := s.leaseTTL(req.TTLMs)
	if err != nil {
		return idgen.WorkerLease{}, err
	}
	if len(holder) > 128 {
		holder = holder[:128]
	}
	for attempt := 0; attempt < 20; attempt++ {
		now := store.NowMillis()
		var wl idgen.WorkerLease
		err := s.st.InTx(ctx, func(tx *store.Tx) error {
			rows, err := tx.QueryContext(ctx, `SELECT worker, term, expires_at, not_before, last_ms FROM id_workers WHERE pool = ? ORDER BY worker`, req.Pool)
			if err != nil {
				return err
			}
			var all []workerRow
			for rows.Next() {
				var r workerRow
				if err := rows.Scan(&r.worker, &r.term, &r.expires, &r.notBefore, &r.last); err != nil {
					rows.Close()
					return err
				}
				all = append(all, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			// Candidates: expired rows, and the lowest number never used.
			var free []workerRow
			next := int64(0)
			for _, r := range all {
				if r.worker == next {
					next++
				}
				if r.expires < now && r.worker <= req.Max {
					free = append(free, r)
				}
			}
			if next <= req.Max {
				free = append(free, workerRow{worker: next, term: 0})
			}
			if len(free) == 0 {
				return fmt.Errorf("%w: all %d numbers of %s are leased", idgen.ErrNoWorker, req.Max+1, req.Pool)
			}
			slices.SortFunc(free, func(a, b workerRow) int {
				ar, br := a.notBefore <= now, b.notBefore <= now
				if ar != br {
					if ar {
						return -1
					}
					return 1
				}
				return int(a.worker - b.worker)
			})
			c := free[0]
			nb := max(c.notBefore, c.last+1)
			if c.term == 0 {
				nb = 0
				_, err = tx.ExecContext(ctx, `INSERT INTO id_workers (pool, worker, holder, term, ttl_ms, expires_at, not_before, last_ms) VALUES (?, ?, ?, 1, ?, ?, ?, 0)`,
					req.Pool, c.worker, holder, ttl, now+ttl, req.NowMs+ttl)
				if err != nil {
					return err
				}
			} else {
				res, err := tx.ExecContext(ctx, `UPDATE id_workers SET holder = ?, term = term + 1, ttl_ms = ?, expires_at = ?, not_before = ?, last_ms = ?
					WHERE pool = ? AND worker = ? AND term = ? AND expires_at < ?`,
					holder, ttl, now+ttl, max(req.NowMs+ttl, nb), c.last, req.Pool, c.worker, c.term, now)
				if err != nil {
					return err
				}
				if n, err := res.RowsAffected(); err != nil {
					return err
				} else if n == 0 {
					return errRace
				}
			}
			wl = idgen.WorkerLease{Pool: req.Pool, Worker: c.worker, Term: c.term + 1, Holder: holder, TTLMs: ttl, ExpiresAt: now + ttl,
				NotBeforeMs: nb, LastMs: c.last}
			return nil
		})
		if err == nil {
			s.log.Info("idgen: worker number leased", "pool", wl.Pool, "worker", wl.Worker, "term", wl.Term, "holder", holder)
			return wl, nil
		}
		if err != errRace && !store.IsUniqueViolation(err) {
			if errors.Is(err, idgen.ErrNoWorker) {
				return idgen.WorkerLease{}, err
			}
			return idgen.WorkerLease{}, fmt.Errorf("idgen/server: lease a number of %s: %w", req.Pool, err)
		}
	}
	return idgen.WorkerLease{}, fmt.Errorf("idgen/server: lease a number of %s: too many concurrent leases, try again", req.Pool)
}

var errRace = errors.New("idgen/server: lost a race for a number")

// Renew extends a lease held by (Worker, Term) that has not expired, and
// records the holder's clock: the next holder starts after NowMs + TTL.
func (s *Server) Renew(ctx context.Context, req idgen.LeaseRequest) (idgen.WorkerLease, error) {
	if err := idgen.ValidName("pool", req.Pool); err != nil {
		return idgen.WorkerLease{}, err
	}
	ttl, err := s.leaseTTL(req.TTLMs)
	if err != nil {
		return idgen.WorkerLease{}, err
	}
	now := store.NowMillis()
	nb := req.NowMs + ttl
	res, err := s.st.ExecContext(ctx, `UPDATE id_workers SET ttl_ms = ?, expires_at = ?,
		not_before = (CASE WHEN not_before > ? THEN not_before ELSE ? END), last_ms = (CASE WHEN last_ms > ? THEN last_ms ELSE ? END)
		WHERE pool = ? AND worker = ? AND term = ? AND expires_at >= ?`,
		ttl, now+ttl, nb, nb, req.LastMs, req.LastMs, req.Pool, req.Worker, req.Term, now)
	if err != nil {
		return idgen.WorkerLease{}, fmt.Errorf("idgen/server: renew %s/%d: %w", req.Pool, req.Worker, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return idgen.WorkerLease{}, fmt.Errorf("idgen/server: renew %s/%d: %w", req.Pool, req.Worker, err)
	} else if n == 0 {
		return idgen.WorkerLease{}, fmt.Errorf("%w: %s number %d term %d", idgen.ErrNoLease, req.Pool, req.Worker, req.Term)
	}
	return idgen.WorkerLease{Pool: req.Pool, Worker: req.Worker, Term: req.Term, TTLMs: ttl, ExpiresAt: now + ttl}, nil
}

// Release frees a number at once: its holder has stopped, its last ID
// at LastMs, so the next holder may start just after that.
func (s *Server) Release(ctx context.Context, req idgen.LeaseRequest) error {
	if err := idgen.ValidName("pool", req.Pool); err != nil {
		return err
	}
	nb := max(req.LastMs, req.NowMs) + 1
	if req.NowMs == 0 && req.LastMs == 0 { // nothing said: keep the bound the renewals set
		nb = 0
	}
	q, args := `UPDATE id_workers SET expires_at = 0, last_ms = (CASE WHEN last_ms > ? THEN last_ms ELSE ? END)
		WHERE pool = ? AND worker = ? AND term = ? AND expires_at > 0`, []any{req.LastMs, req.LastMs, req.Pool, req.Worker, req.Term}
	if nb > 0 {
		q = strings.Replace(q, "expires_at = 0,", "expires_at = 0, not_before = ?,", 1)
		args = append([]any{nb}, args...)
	}
	res, err := s.st.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("idgen/server: release %s/%d: %w", req.Pool, req.Worker, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("idgen/server: release %s/%d: %w", req.Pool, req.Worker, err)
	} else if n == 0 {
		return fmt.Errorf("%w: %s number %d term %d", idgen.ErrNoLease, req.Pool, req.Worker, req.Term)
	}
	s.log.Info("idgen: worker number released", "pool", req.Pool, "worker", req.Worker, "term", req.Term)
	return nil
}

// Workers lists every number ever leased, live or not.
func (s *Server) Workers(ctx context.Context) ([]idgen.WorkerLease, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT pool, worker, term, holder, ttl_ms, expires_at, not_before, last_ms FROM id_workers ORDER BY pool, worker`)
	if err != nil {
		return nil, fmt.Errorf("idgen/server: list workers: %w", err)
	}
	defer rows.Close()
	var out []idgen.WorkerLease
	for rows.Next() {
		var w idgen.WorkerLease
		if err := rows.Scan(&w.Pool, &w.Worker, &w.Term, &w.Holder, &w.TTLMs, &w.ExpiresAt, &w.NotBeforeMs, &w.LastMs); err != nil {
			return nil, fmt.Errorf("idgen/server: list workers: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}
