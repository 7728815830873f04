package redislock

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/lock/lease"
)

// Redlock is the Redlock algorithm over N independent Redis (or kv)
// nodes — not replicas of each other, not a cluster: a lock is held when
// a majority granted it within its lease, less the time the attempt took
// and the clock drift. It survives the loss of a minority of nodes where
// one node would not; it is no safer than that against pauses or clock
// jumps (docs/lock.md says when it is safe). Its fencing token is the
// largest of the majority's counters: it grows across acquisitions only
// while the nodes keep their counters — a node restarted without its data,
// or a minority with higher counters left out of the next majority, can
// make it go back. Where a fence matters, use one node or the server
// backend.
type Redlock struct {
	nodes []*Client
	opts  Options
	group
}

// NewRedlock returns a Redlock over the nodes (an odd number, 3 or 5, is
// usual).
func NewRedlock(nodes []redis.UniversalClient, opts Options) *Redlock {
	r := &Redlock{}
	for _, n := range nodes {
		r.nodes = append(r.nodes, New(n, opts))
	}
	if len(r.nodes) > 0 {
		r.opts = r.nodes[0].opts
	}
	return r
}

// Close stops the watchdogs (giving held locks up on a best-effort basis)
// and the nodes' pub/sub connections.
func (r *Redlock) Close() error {
	r.close(func() {
		for _, n := range r.nodes {
			_ = n.Close()
		}
	})
	return nil
}

// Mutex returns a handle on the reentrant mutex name held on a majority.
func (r *Redlock) Mutex(name string, opts ...Option) lease.Locker {
	m := &redMutex{r: r, name: name}
	owner := randomOwner()
	for _, n := range r.nodes {
		h := n.newHandle(name, kindMutex, append([]Option{Owner(owner)}, opts...))
		m.on = append(m.on, h)
	}
	return m
}

type redMutex struct {
	r    *Redlock
	name string
	on   []*handle // one per node, the same owner

	held
}

func (m *redMutex) quorum() int { return len(m.on)/2 + 1 }

// each runs f on every node at once, each under its own timeout, and
// returns the results in node order.
func each[T any](ctx context.Context, m *redMutex, f func(ctx context.Context, h *handle) (T, error)) ([]T, []error) {
	out, errs := make([]T, len(m.on)), make([]error, len(m.on))
	timeout := max(m.r.opts.TTL/10, 5*time.Millisecond)
	var wg sync.WaitGroup
	for i, h := range m.on {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out[i], errs[i] = f(c, h)
		}()
	}
	wg.Wait()
	return out, errs
}

type attempt struct {
	granted bool
	fence   uint64
	wait    time.Duration
}

// try makes one round: granted when a majority granted it with lease time
// left; else every grant is given back.
func (m *redMutex) try(ctx context.Context) (bool, uint64, time.Duration, error) {
	sent := time.Now()
	res, errs := each(ctx, m, func(ctx context.Context, h *handle) (attempt, error) {
		g, f, w, err := h.try(ctx)
		return attempt{g, f, w}, err
	})
	n, fence, wait := 0, uint64(0), time.Duration(0)
	var firstErr error
	for i, a := range res {
		if errs[i] != nil {
			firstErr = errs[i]
			continue
		}
		if a.granted {
			n++
			fence = max(fence, a.fence)
		} else {
			wait = max(wait, a.wait)
		}
	}
	validity := m.r.opts.TTL - time.Since(sent) - drift(m.r.opts.TTL)
	if n >= m.quorum() && validity > 0 {
		return true, fence, 0, nil
	}
	if n > 0 {
		each(context.WithoutCancel(ctx), m, func(ctx context.Context, h *handle) (int64, error) {
			if !res[indexOf(m.on, h)].granted {
				return 0, nil
			}
			return h.release(ctx)
		})
	}
	if n == 0 && firstErr != nil && len(errs) > 0 && countErrs(errs) >= m.quorum() {
		return false, 0, 0, fmt.Errorf("redislock: redlock %s: a majority of nodes failed: %w", m.name, firstErr)
	}
	return false, 0, wait, nil
}

func indexOf(hs []*handle, h *handle) int {
	for i, x := range hs {
		if x == h {
			return i
		}
	}
	return -1
}

func countErrs(errs []error) int {
	n := 0
	for _, e := range errs {
		if e != nil {
			n++
		}
	}
	return n
}

func (m *redMutex) resetLost() { m.dropLost(&m.r.group) }

func (m *redMutex) acquired(fence uint64, sent time.Time) (*lease.Lease, error) {
	if l := m.again(sent); l != nil {
		return l, nil
	}
	hd := newHold(m.name, m.r.opts, fence, sent, m.extend, m.releaseAll)
	if !m.begin(&m.r.group, hd) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = m.releaseAll(ctx)
		cancel()
		return nil, ErrClosed
	}
	return hd.lease, nil
}

func (m *redMutex) TryLock(ctx context.Context) (*lease.Lease, error) {
	if m.r.isClosed() {
		return nil, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resetLost()
	sent := time.Now()
	ok, fence, _, err := m.try(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s (no majority)", lease.ErrNotAcquired, m.name)
	}
	return m.acquired(fence, sent)
}

// Lock retries after a random delay (so that contenders do not split the
// nodes between them again), sooner when a release is heard on a node.
func (m *redMutex) Lock(ctx context.Context) (*lease.Lease, error) {
	if m.r.isClosed() {
		return nil, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resetLost()
	var wakes []chan struct{}
	wake := make(chan struct{}, 1)
	var fwd sync.WaitGroup
	stopFwd := make(chan struct{})
	defer func() {
		close(stopFwd)
		fwd.Wait()
		for i, w := range wakes {
			if w != nil {
				m.on[i].c.hub.leave(m.on[i].channel, w)
			}
		}
	}()
	for {
		sent := time.Now()
		ok, fence, wait, err := m.try(ctx)
		if err != nil {
			return nil, err
		}
		if ok {
			return m.acquired(fence, sent)
		}
		if wakes == nil {
			wakes = make([]chan struct{}, len(m.on))
			for i, h := range m.on {
				w, err := h.c.hub.join(ctx, h.channel)
				if err != nil {
					continue // that node is down: its releases are not heard
				}
				wakes[i] = w
				fwd.Add(1)
				go func() {
					defer fwd.Done()
					for {
						select {
						case <-w:
							select {
							case wake <- struct{}{}:
							default:
							}
						case <-stopFwd:
							return
						}
					}
				}()
			}
			continue
		}
		if wait <= 0 || wait > m.r.opts.MaxWait {
			wait = m.r.opts.MaxWait
		}
		t := time.NewTimer(time.Duration(rand.Int64N(int64(wait)/2+1)) + wait/2)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("redislock: redlock %s: %w", m.name, context.Cause(ctx))
		}
		t.Stop()
	}
}

// extend renews on every node: held while a majority renewed it.
func (m *redMutex) extend(ctx context.Context) (bool, error) {
	res, errs := each(ctx, m, func(ctx context.Context, h *handle) (bool, error) { return h.extend(ctx) })
	ok, no := 0, 0
	var firstErr error
	for i, r := range res {
		switch {
		case errs[i] != nil:
			firstErr = errs[i]
		case r:
			ok++
		default:
			no++
		}
	}
	if ok >= m.quorum() {
		return true, nil
	}
	if no >= m.quorum() || firstErr == nil {
		return false, nil
	}
	return false, fmt.Errorf("redislock: redlock %s: renewed on %d of %d nodes: %w", m.name, ok, len(m.on), firstErr)
}

func (m *redMutex) releaseAll(ctx context.Context) error {
	_, errs := each(ctx, m, func(ctx context.Context, h *handle) (struct{}, error) { return struct{}{}, h.releaseAll(ctx) })
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func (m *redMutex) Unlock(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.current(&m.r.group, m.name); err != nil {
		return err
	}
	res, errs := each(ctx, m, func(ctx context.Context, h *handle) (int64, error) { return h.release(ctx) })
	lost, released := 0, 0
	for i, n := range res {
		switch {
		case errs[i] != nil:
		case n < 0:
			lost++
		case n == 0:
			released++
		}
	}
	var lostErr error
	if lost >= m.quorum() {
		lostErr = fmt.Errorf("%w: %s: a majority no longer held it at release", lease.ErrLockLost, m.name)
	}
	return m.released(&m.r.group, lostErr, released > 0)
}

func (m *redMutex) Extend(ctx context.Context) error { return m.renewNow(ctx, m.name) }
