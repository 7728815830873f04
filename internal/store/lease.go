package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Lease is a named leader lease in the store: the single-writer work of a
// cluster (a trigger loop, a recovery scan) runs on the holder. Term grows
// by one each time the lease changes hands; work stamped with the term it
// was done under can be fenced off once a newer term exists, so a paused
// former holder cannot overwrite its successor.
type Lease struct {
	Name      string
	Holder    string // the holding process (Holder.ID)
	Node      string // its node (Holder.Node)
	Term      int64
	ExpiresAt time.Time
}

// Holder names who takes a lease. Node is the stable identity of a server
// (kept in its data dir, the same after a restart); ID is unique to one
// process of it (the node and an incarnation drawn at start). A new
// process of a node takes the leases of its dead predecessor at once
// instead of waiting out their TTL, while the term (and the ID) still
// fence the predecessor off should it only have been paused.
type Holder struct {
	Node string
	ID   string
}

// NewHolder returns a holder for node with a fresh incarnation: the start
// time in fixed-width hex, so that a later process of a node sorts after an
// earlier one and only the later can take the other's leases.
func NewHolder(node string) Holder {
	return Holder{Node: node, ID: fmt.Sprintf("%s#%016x", node, time.Now().UnixNano())}
}

// ErrLeaseLost is returned by RenewLease when the caller no longer holds
// the lease (it expired and was taken, or the term moved on).
var ErrLeaseLost = errors.New("store: lease lost")

// AcquireLease takes the lease for h for ttl if it is free, expired, held
// by an earlier process of h's node (a restart: a new term), or already
// held by h (then it is extended, same term). It reports whether h now
// holds it, and the lease as it stands.
//
// Expiry is judged by the caller's clock: servers sharing a store need
// clocks within a fraction of ttl of each other; the term, not the clock,
// is what keeps two holders' writes apart.
func (s *Store) AcquireLease(ctx context.Context, name string, h Holder, ttl time.Duration) (Lease, bool, error) {
	if name == "" || h.ID == "" || ttl <= 0 {
		return Lease{}, false, fmt.Errorf("store: lease needs a name, a holder and a positive ttl")
	}
	now := time.Now()
	exp := now.Add(ttl).UnixMilli()
	// Extend our own live lease.
	res, err := s.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND expires_at >= ?`, exp, name, h.ID, now.UnixMilli())
	if err != nil {
		return Lease{}, false, fmt.Errorf("store: lease %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// Take it over once expired (from anyone, ourselves included: a
		// new term), or at once from an earlier process of our node (an
		// earlier incarnation sorts lower; a later one is never displaced).
		res, err = s.ExecContext(ctx, `UPDATE leases SET holder = ?, node = ?, term = term + 1, expires_at = ?
			WHERE name = ? AND (expires_at < ? OR (node = ? AND node <> '' AND holder < ?))`,
			h.ID, h.Node, exp, name, now.UnixMilli(), h.Node, h.ID)
		if err != nil {
			return Lease{}, false, fmt.Errorf("store: lease %s: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Or create it.
			_, err = s.ExecContext(ctx, `INSERT INTO leases (name, holder, node, term, expires_at) VALUES (?, ?, ?, 1, ?)`, name, h.ID, h.Node, exp)
			if err != nil && !IsUniqueViolation(err) {
				return Lease{}, false, fmt.Errorf("store: lease %s: %w", name, err)
			}
		}
	}
	l, err := s.Lease(ctx, name)
	if err != nil {
		return Lease{}, false, err
	}
	return l, l.Holder == h.ID && l.ExpiresAt.After(now), nil
}

// RenewLeases extends every live lease holder (a Holder.ID) holds and
// returns how many. The caller reads its leases back (Leases) to learn which
// are still its own, under which term.
//
// On PostgreSQL and MySQL a lease whose row is locked — a write fenced by it
// is under way (FenceLease, which extends the lease itself when it commits)
// — is skipped, not waited for: waiting made a convoy, the renewal held the
// rows it had already extended while it waited on one busy row, and every
// other fenced write queued behind it (the scheduler's once-a-second
// lateness spikes of 100–600 ms). A lease skipped this round is renewed by
// the write that held it, or by the next round.
func (s *Store) RenewLeases(ctx context.Context, holder string, ttl time.Duration) (int64, error) {
	now := time.Now()
	exp, live := now.Add(ttl).UnixMilli(), now.UnixMilli()
	if s.dialect == SQLite { // one writer: nothing to skip
		res, err := s.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE holder = ? AND expires_at >= ?`, exp, holder, live)
		if err != nil {
			return 0, fmt.Errorf("store: renew the leases of %s: %w", holder, err)
		}
		n, _ := res.RowsAffected()
		return n, nil
	}
	var n int64
	err := s.InTx(ctx, func(tx *Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT name FROM leases WHERE holder = ? AND expires_at >= ? FOR UPDATE SKIP LOCKED`, holder, live)
		if err != nil {
			return err
		}
		var names []any
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return err
			}
			names = append(names, name)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(names) == 0 {
			return nil
		}
		res, err := tx.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE holder = ? AND name IN (?`+strings.Repeat(", ?", len(names)-1)+`)`,
			append([]any{exp, holder}, names...)...)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: renew the leases of %s: %w", holder, err)
	}
	return n, nil
}

// FenceLeases is FenceLease for several leases of one holder in one
// statement (name → the term it must still hold). It returns the names
// that failed the check (expired, taken, another term); the others are
// locked and extended.
func FenceLeases(ctx context.Context, tx *Tx, holder string, terms map[string]int64, ttl time.Duration) ([]string, error) {
	if len(terms) == 0 {
		return nil, nil
	}
	now := time.Now()
	names := make([]string, 0, len(terms))
	for n := range terms {
		names = append(names, n)
	}
	slices.Sort(names)
	args := []any{now.Add(ttl).UnixMilli(), holder, now.UnixMilli()}
	var cond []string
	for _, n := range names {
		cond = append(cond, "(name = ? AND term = ?)")
		args = append(args, n, terms[n])
	}
	res, err := tx.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE holder = ? AND expires_at >= ? AND (`+strings.Join(cond, " OR ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: fence on %d leases: %w", len(names), err)
	}
	if n, _ := res.RowsAffected(); n == int64(len(names)) {
		return nil, nil
	}
	// Some failed: find which (the ones that passed now carry the new expiry).
	exp := now.Add(ttl).UnixMilli()
	var lost []string
	for _, n := range names {
		var h string
		var t, e int64
		err := tx.QueryRowContext(ctx, `SELECT holder, term, expires_at FROM leases WHERE name = ?`, n).Scan(&h, &t, &e)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("store: fence on lease %s: %w", n, err)
		}
		if err != nil || h != holder || t != terms[n] || e != exp {
			lost = append(lost, n)
		}
	}
	return lost, nil
}

// FenceLease checks, inside tx, that holder still holds the lease name under
// term, and extends it by ttl from now. The write locks the lease's row
// until tx ends: a takeover (AcquireLease) waits for tx, so nothing tx
// writes can land after another holder took over. ErrLeaseLost when the
// lease has expired, moved to another term or holder, or never existed.
// On SQLite, which has one writer, the write takes the database's write
// lock; a transaction whose snapshot went stale fails on it.
func FenceLease(ctx context.Context, tx *Tx, name, holder string, term int64, ttl time.Duration) error {
	now := time.Now()
	res, err := tx.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND term = ? AND expires_at >= ?`,
		now.Add(ttl).UnixMilli(), name, holder, term, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("store: fence on lease %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: %s (term %d, holder %s)", ErrLeaseLost, name, term, holder)
	}
	return nil
}

// RenewLease extends a lease held by holder under term; ErrLeaseLost when
// it is no longer theirs (expired or taken).
func (s *Store) RenewLease(ctx context.Context, name, holder string, term int64, ttl time.Duration) error {
	now := time.Now()
	res, err := s.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND term = ? AND expires_at >= ?`,
		now.Add(ttl).UnixMilli(), name, holder, term, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("store: renew lease %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: %s (term %d, holder %s)", ErrLeaseLost, name, term, holder)
	}
	return nil
}

// ReleaseLease gives the lease up at once (if holder still holds term), so
// another server can take it without waiting for the expiry.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string, term int64) error {
	_, err := s.ExecContext(ctx, `UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ? AND term = ?`, name, holder, term)
	if err != nil {
		return fmt.Errorf("store: release lease %s: %w", name, err)
	}
	return nil
}

// Lease reads a lease; ErrNotFound when it was never taken.
func (s *Store) Lease(ctx context.Context, name string) (Lease, error) {
	l := Lease{Name: name}
	var exp int64
	err := s.QueryRowContext(ctx, `SELECT holder, node, term, expires_at FROM leases WHERE name = ?`, name).Scan(&l.Holder, &l.Node, &l.Term, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("%w: lease %s", ErrNotFound, name)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("store: read lease %s: %w", name, err)
	}
	l.ExpiresAt = time.UnixMilli(exp)
	return l, nil
}

// Leases lists the leases whose names start with prefix, expired ones
// included.
func (s *Store) Leases(ctx context.Context, prefix string) ([]Lease, error) {
	rows, err := s.QueryContext(ctx, `SELECT name, holder, node, term, expires_at FROM leases WHERE name LIKE ? ORDER BY name`, prefix+"%")
	if err != nil {
		return nil, fmt.Errorf("store: list leases %s*: %w", prefix, err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var l Lease
		var exp int64
		if err := rows.Scan(&l.Name, &l.Holder, &l.Node, &l.Term, &exp); err != nil {
			return nil, fmt.Errorf("store: list leases: %w", err)
		}
		l.ExpiresAt = time.UnixMilli(exp)
		if strings.HasPrefix(l.Name, prefix) { // LIKE's _ and % match more
			out = append(out, l)
		}
	}
	return out, rows.Err()
}
