package redislock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/lock/lease"
)

// held is one lock handle's acquisition state — a Redis handle's or a
// Redlock mutex's: the current hold (nil when none) and how many times it
// was entered. mu guards it; the methods below run with mu held, except
// renewNow.
type held struct {
	mu    sync.Mutex
	holds int
	cur   *hold
}

// end stops the current hold's watchdog, ends its lease with err (nil: a
// clean release; a lease already lost keeps its cause) and forgets it.
func (s *held) end(g *group, err error) {
	hd := s.cur
	hd.stopWatch()
	hd.lease.End(err)
	g.forget(hd)
	s.cur, s.holds = nil, 0
}

// dropLost forgets a hold whose lease was lost.
func (s *held) dropLost(g *group) {
	if s.cur != nil && s.cur.lease.Err() != nil {
		s.end(g, nil)
	}
}

// again is one more entry of the current hold (sent: when the attempt
// that renewed its lease was sent); nil when there is none.
func (s *held) again(sent time.Time) *lease.Lease {
	if s.cur == nil {
		return nil
	}
	s.holds++
	s.cur.mu.Lock()
	if sent.After(s.cur.renewedAt) {
		s.cur.renewedAt = sent
	}
	s.cur.mu.Unlock()
	return s.cur.lease
}

// begin makes hd the current hold and starts its watchdog; false when the
// group has closed (then the caller gives the lock back).
func (s *held) begin(g *group, hd *hold) bool {
	if !g.watch(hd) {
		return false
	}
	s.cur, s.holds = hd, 1
	return true
}

// current is the hold to release, or the error Unlock returns when there
// is none or its lease was lost.
func (s *held) current(g *group, name string) (*hold, error) {
	if s.cur == nil {
		return nil, fmt.Errorf("%w: %s", lease.ErrNotHeld, name)
	}
	if err := s.cur.lease.Err(); err != nil {
		s.dropLost(g)
		return nil, err
	}
	return s.cur, nil
}

// released records a release: lost (the lock was no longer ours), done
// (the store has no hold left), or one entry less.
func (s *held) released(g *group, lost error, done bool) error {
	switch {
	case lost != nil:
		s.end(g, lost)
		return lost
	case done || s.holds <= 1:
		s.end(g, nil)
	default:
		s.holds--
	}
	return nil
}

// renewNow renews the current hold's lease (Extend).
func (s *held) renewNow(ctx context.Context, name string) error {
	s.mu.Lock()
	hd := s.cur
	s.mu.Unlock()
	if hd == nil {
		return fmt.Errorf("%w: %s", lease.ErrNotHeld, name)
	}
	return hd.renew(ctx)
}
