package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
)

func partLease(p int) string { return "job/p/" + strconv.Itoa(p) }

func memberLease(n string) string { return "job/m/" + n }

func partOf(id int64, n int) int { return int(uint64(id) % uint64(n)) }

// leaseLoop keeps this server's membership and its fair share of the
// partitions: ceil(partitions / live servers). A server joining takes free
// partitions; one holding too many gives the excess up, so a cluster of N
// servers splits the work N ways. Each round costs two statements when
// nothing changes: one renews everything this process holds, one reads the
// leases back.
func (s *Scheduler) leaseLoop() {
	every := s.cfg.LeaseTTL / 3
	for {
		// The next round comes at the renewal interval, or sooner: just
		// after another holder's lease runs out, so a dead server's
		// partitions are taken the moment they are free, not up to an
		// interval later.
		wait := min(every, s.balance())
		select {
		case <-s.stop:
			return
		case <-time.After(max(wait, 5*time.Millisecond)):
		}
	}
}

// balance renews, gives up and takes partitions; it returns how long until
// the earliest lease held by another process runs out (a partition may be
// free then).
func (s *Scheduler) balance() time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaseTTL/2)
	defer cancel()
	next := s.cfg.LeaseTTL
	if _, err := s.st.RenewLeases(ctx, s.holder.ID, s.cfg.LeaseTTL); err != nil {
		s.log.Warn("job: renewing leases failed", "err", err)
		return next
	}
	now := time.Now()
	all, err := s.st.Leases(ctx, "job/")
	if err != nil {
		s.log.Warn("job: listing leases failed", "err", err)
		return next
	}
	for _, l := range all {
		if l.Holder != s.holder.ID && l.ExpiresAt.After(now) {
			next = min(next, l.ExpiresAt.Sub(now)+time.Millisecond)
		}
	}
	live := 0
	mine := false
	rows := map[int]store.Lease{}
	for _, l := range all {
		switch {
		case l.Name == memberLease(s.cfg.NodeName):
			mine = l.Holder == s.holder.ID && l.ExpiresAt.After(now)
		case strings.HasPrefix(l.Name, "job/m/"):
			if l.ExpiresAt.After(now) {
				live++
			}
		case strings.HasPrefix(l.Name, "job/p/"):
			if p, err := strconv.Atoi(strings.TrimPrefix(l.Name, "job/p/")); err == nil {
				rows[p] = l
			}
		}
	}
	if !mine {
		ml, ok, err := s.st.AcquireLease(ctx, memberLease(s.cfg.NodeName), s.holder, s.cfg.LeaseTTL)
		if err != nil || !ok {
			s.log.Warn("job: taking membership failed", "err", err)
			return next
		}
		s.mu.Lock()
		s.member = ml.Term
		s.mu.Unlock()
	}
	live++ // this server
	fair := (s.cfg.Partitions + max(live, 1) - 1) / max(live, 1)
	// Keep what the renewal kept.
	s.mu.Lock()
	owned := make(map[int]int64, len(s.owned))
	for p, t := range s.owned {
		owned[p] = t
	}
	s.mu.Unlock()
	for p, term := range owned {
		if l, ok := rows[p]; !ok || l.Holder != s.holder.ID || l.Term != term || !l.ExpiresAt.After(now) {
			s.log.Warn("job: lost a partition", "partition", p, "term", term, "holder", l.Holder)
			s.drop(p)
			delete(owned, p)
		}
	}
	// Give up the excess, highest partitions first.
	if len(owned) > fair {
		ps := make([]int, 0, len(owned))
		for p := range owned {
			ps = append(ps, p)
		}
		sort.Sort(sort.Reverse(sort.IntSlice(ps)))
		for _, p := range ps[:len(owned)-fair] {
			s.drop(p)
			_ = s.st.ReleaseLease(ctx, partLease(p), s.holder.ID, owned[p])
			delete(owned, p)
			s.log.Info("job: gave a partition up to rebalance", "partition", p, "servers", live)
		}
		return next
	}
	if len(owned) >= fair {
		return next
	}
	// Free: never taken, expired, or held by an earlier process of this
	// node (a restart: taken at once, not after the TTL).
	free := func(p int) bool {
		l, ok := rows[p]
		return !ok || !l.ExpiresAt.After(now) || (l.Node == s.holder.Node && l.Holder < s.holder.ID)
	}
	start := rand.IntN(s.cfg.Partitions)
	for i := range s.cfg.Partitions {
		if len(owned) >= fair {
			break
		}
		p := (start + i) % s.cfg.Partitions
		if _, ok := owned[p]; ok || !free(p) {
			continue
		}
		l, ok, err := s.st.AcquireLease(ctx, partLease(p), s.holder, s.cfg.LeaseTTL)
		if err != nil || !ok {
			continue
		}
		owned[p] = l.Term
		s.mu.Lock()
		s.owned[p] = l.Term
		s.mu.Unlock()
		s.log.Info("job: took a partition", "partition", p, "term", l.Term)
		s.wakeLoader()
	}
	return next
}

// drop forgets a partition (its timers fire nowhere: fire checks the
// lease, and the new holder loads the jobs).
func (s *Scheduler) drop(p int) {
	s.mu.Lock()
	delete(s.owned, p)
	s.mu.Unlock()
}

func (s *Scheduler) term(p int) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.owned[p]
	return t, ok
}

// errFenced means this server no longer holds the partition.
var errFenced = errors.New("job: partition lease lost")

// fenceTx checks, inside tx, that this server still holds partition p
// under term, and extends the lease (store.FenceLease): a takeover waits
// for tx to end, and a partition busy with fires is renewed by them when the
// renewal round skips its locked row.
func (s *Scheduler) fenceTx(ctx context.Context, tx *store.Tx, p int, term int64) error {
	err := store.FenceLease(ctx, tx, partLease(p), s.holder.ID, term, s.cfg.LeaseTTL)
	if errors.Is(err, store.ErrLeaseLost) {
		return errFenced
	}
	if err != nil {
		return fmt.Errorf("job: fence: %w", err)
	}
	return nil
}
