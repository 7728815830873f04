// Package lease is what every lock of Tangram hands out and how a
// protected resource checks it: the Locker interface, the Lease with its
// fencing token, and the fence checks (Fenced for SQL, Guard in process).
// Package lock re-exports all of it; lock/redislock uses it directly so
// that a program locking on Redis does not link Tangram's RPC.
package lease

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// Errors. Match with errors.Is; they keep their meaning across the wire.
var (
	// ErrNotAcquired: TryLock found the lock held by another owner.
	ErrNotAcquired = errcode.New(errcode.Conflict, "lock/lease: held by another owner")
	// ErrLockLost: the lease ended while the holder believed it held the
	// lock (renewal failed or found the lock taken over). Work protected
	// by the lock must stop; Unlock then returns it too.
	ErrLockLost = errcode.New(errcode.Conflict, "lock/lease: lost")
	// ErrNotHeld: Unlock or Extend on a lock this handle does not hold.
	ErrNotHeld = errcode.New(errcode.BadRequest, "lock/lease: not held")
	// ErrStaleFence: a protected resource refused a write carrying an
	// older fencing token than one it has already accepted.
	ErrStaleFence = errcode.New(errcode.Conflict, "lock/lease: stale fencing token")
)

// Locker is one named lock as seen by one owner. Every backend's locks
// implement it.
type Locker interface {
	// Lock waits until the lock is acquired or ctx ends.
	Lock(ctx context.Context) (*Lease, error)
	// TryLock acquires the lock if it is free (or already held by this
	// owner) and returns ErrNotAcquired otherwise, without waiting.
	TryLock(ctx context.Context) (*Lease, error)
	// Unlock gives up one hold (a reentrant lock is released when its last
	// hold is). It never releases a lock another owner holds: after the
	// lease was lost it returns ErrLockLost.
	Unlock(ctx context.Context) error
	// Extend renews the lease now (the watchdog does so on its own while
	// the lock is held); ErrLockLost when the lock was lost.
	Extend(ctx context.Context) error
}

// Lease is one acquisition: its fencing token, and a signal that ends
// when the lock is released or lost.
type Lease struct {
	// Fence is the fencing token: it grows with every acquisition of the
	// lock's name (re-entering a held lock gives the same token).
	Fence uint64

	ctx    context.Context
	cancel context.CancelCauseFunc
}

// errReleased is the cause a lease ends with on a clean release.
var errReleased = errors.New("lock/lease: released")

// NewLease returns a held lease with the token; backends call it.
func NewLease(fence uint64) *Lease {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Lease{Fence: fence, ctx: ctx, cancel: cancel}
}

// Done is closed when the lease ends: released by Unlock, or lost.
func (l *Lease) Done() <-chan struct{} { return l.ctx.Done() }

// Err is nil while the lease holds and after a clean release;
// ErrLockLost (wrapped with the cause) once it was lost.
func (l *Lease) Err() error {
	if c := context.Cause(l.ctx); c != errReleased {
		return c
	}
	return nil
}

// End ends the lease with err (nil: released); the first call wins.
// Backends call it.
func (l *Lease) End(err error) {
	if err == nil {
		err = errReleased
	}
	l.cancel(err)
}

// Context returns a context that ends when the lease ends (with
// ErrLockLost as its cause when lost) or when parent ends: run the
// protected work under it.
func (l *Lease) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	if l.ctx.Err() != nil {
		cancel(context.Cause(l.ctx))
		return ctx, func() { cancel(context.Canceled) }
	}
	stop := context.AfterFunc(l.ctx, func() { cancel(context.Cause(l.ctx)) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// Guard is an in-process protected resource's fence check: it remembers
// the highest token accepted per resource and refuses older ones.
type Guard struct {
	mu   sync.Mutex
	last map[string]uint64
}

// Admit accepts token for resource when no larger one was accepted
// before (an equal one is the same holder writing again).
func (g *Guard) Admit(resource string, token uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[string]uint64{}
	}
	if last := g.last[resource]; token < last {
		return fmt.Errorf("%w: %s accepted token %d, got %d", ErrStaleFence, resource, last, token)
	}
	g.last[resource] = token
	return nil
}

// Execer is what Fenced runs its statement on (*sql.DB, *sql.Tx, *sql.Conn).
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Fenced runs an UPDATE that carries its own fence check and reports
// ErrStaleFence when it changed no row. The statement must set the row's
// fence column to the token and match only rows whose fence is not
// larger, for example:
//
//	UPDATE account SET balance = $1, fence = $2 WHERE id = $3 AND fence <= $2
//
// so the check and the write are one atomic statement in the database.
func Fenced(ctx context.Context, db Execer, token uint64, query string, args ...any) error {
	res, err := db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("lock/lease: fenced update: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("lock/lease: fenced update: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: token %d changed no row", ErrStaleFence, token)
	}
	return nil
}
