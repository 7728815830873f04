package lock

import "github.com/tangram-dev/tangram/lock/lease"

// The interface, leases and fence checks every backend shares (defined in
// lock/lease, which lock/redislock uses without linking this package's
// RPC client).
type (
	// Locker is one named lock as seen by one owner.
	Locker = lease.Locker
	// Lease is one acquisition: its fencing token and when it ends.
	Lease = lease.Lease
	// Guard is an in-process protected resource's fence check.
	Guard = lease.Guard
	// Execer is what Fenced runs its statement on.
	Execer = lease.Execer
)

// Errors shared by every backend.
var (
	ErrNotAcquired = lease.ErrNotAcquired
	ErrLockLost    = lease.ErrLockLost
	ErrNotHeld     = lease.ErrNotHeld
	ErrStaleFence  = lease.ErrStaleFence
)

// NewLease returns a held lease with the token; backends call it.
func NewLease(fence uint64) *Lease { return lease.NewLease(fence) }

// Fenced runs an UPDATE that carries its own fence check (see
// lease.Fenced).
var Fenced = lease.Fenced
