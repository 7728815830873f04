// Package redislock is the lock SDK's Redis backend: fenced, reentrant
// mutexes (plain and fair) and read-write locks on Tangram's kv, Redis or
// Redis Cluster, renewed by a watchdog while held and handed over by
// pub/sub on release; Redlock across independent nodes as an option.
//
// Keys (one lock name, one hash slot: the name is the hash tag):
//
//	<prefix>{name}          the lock: a hash (owner, holds, token), its lease as expiry
//	<prefix>{name}:fence    the fencing counter (never expires)
//	<prefix>{name}:q, :qt   the fair lock's queue and its waiters' deadlines
//	<prefix>{name}:ch       the channel a release is published on
//
// Lock order: a handle's mu before its hold's mu; the hub's mu is taken
// alone.
package redislock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/lock/lease"
)

// Options configure a Client. The zero value works.
type Options struct {
	// TTL is the lease: how long a lock outlives a holder that stops
	// renewing it (crashed, paused, partitioned). The watchdog renews it
	// every TTL/3 while the lock is held. Default 10 s.
	TTL time.Duration
	// Prefix of every key (default "tangram:lock:").
	Prefix string
	// MaxWait is the longest a waiter sleeps between attempts when no
	// release is heard (a release is published, so this only matters
	// when the holder died or a message was lost). Default 1 s.
	MaxWait time.Duration
	// QueueTTL: a fair lock's waiter that has not retried for this long
	// loses its place in the queue (default 4 × MaxWait).
	QueueTTL time.Duration
	// Pipelines: how many batches of concurrent callers' scripts may be
	// in flight at once (see batcher; default 4).
	Pipelines int
	// Logger: a *slog.Logger, or anything with its Debug and Warn
	// (default: warnings through the standard log package).
	Logger Logger
}

// Logger is what a Client logs through; *slog.Logger is one. It is an
// interface rather than *slog.Logger so that a program which does not use
// log/slog does not link it: an SDK program must stay under 10 MB, and
// go-redis alone is most of that.
type Logger interface {
	Debug(msg string, args ...any)
	Warn(msg string, args ...any)
}

// stdLogger writes warnings through the standard log package, as
// slog.Default does until a program sets its own; debug lines are dropped.
type stdLogger struct{}

func (stdLogger) Debug(string, ...any) {}

func (stdLogger) Warn(msg string, args ...any) {
	var b strings.Builder
	b.WriteString("WARN ")
	b.WriteString(msg)
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&b, " %v=%v", args[i], args[i+1])
	}
	log.Print(b.String())
}

// Client makes locks on one Redis deployment (a *redis.Client, a
// *redis.ClusterClient or a failover client; Tangram's kv is a
// *redis.Client). It owns the watchdogs of the locks it hands out and one
// pub/sub connection for waiters. Close it when done.
type Client struct {
	rdb   redis.UniversalClient
	opts  Options
	hub   *hub
	gates gates
	batch batcher
	group
}

// group owns the holds (and their watchdogs) and goroutines of a Client
// or a Redlock.
type group struct {
	mu     sync.Mutex
	closed bool
	holds  map[*hold]struct{}
	wg     sync.WaitGroup
}

func (g *group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// watch registers hd and starts its watchdog; false once closed.
func (g *group) watch(hd *hold) bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		close(hd.done)
		return false
	}
	if g.holds == nil {
		g.holds = map[*hold]struct{}{}
	}
	g.holds[hd] = struct{}{}
	g.mu.Unlock()
	if !g.goFunc(hd.watch) {
		g.forget(hd)
		close(hd.done)
		return false
	}
	return true
}

func (g *group) forget(hd *hold) {
	g.mu.Lock()
	delete(g.holds, hd)
	g.mu.Unlock()
}

// close stops every watchdog, gives every hold up (best effort, a second
// each) and ends its lease as lost; then waits for the goroutines after
// stop has run.
func (g *group) close(stop func()) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	holds := make([]*hold, 0, len(g.holds))
	for h := range g.holds {
		holds = append(holds, h)
	}
	g.mu.Unlock()
	for _, h := range holds {
		h.stopWatch()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = h.giveUp(ctx)
		cancel()
		h.lease.End(fmt.Errorf("%w: %s: the client closed", lease.ErrLockLost, h.name))
	}
	if stop != nil {
		stop()
	}
	g.wg.Wait()
}

func (g *group) goFunc(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// New returns a Client on rdb.
func New(rdb redis.UniversalClient, opts Options) *Client {
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
	}
	if opts.Prefix == "" {
		opts.Prefix = "tangram:lock:"
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = time.Second
	}
	if opts.QueueTTL <= 0 {
		opts.QueueTTL = 4 * opts.MaxWait
	}
	if opts.Logger == nil {
		opts.Logger = stdLogger{}
	}
	if opts.Pipelines <= 0 {
		opts.Pipelines = 4
	}
	c := &Client{rdb: rdb, opts: opts}
	c.batch = batcher{rdb: rdb, senders: opts.Pipelines}
	c.hub = &hub{c: c, subs: map[string]*sub{}}
	return c
}

// ErrClosed is returned by a closed Client's locks.
var ErrClosed = errors.New("redislock: client closed")

// Close stops every watchdog and the pub/sub connection. Locks still
// held are given up on a best-effort basis (released if Redis answers
// within a second; else they expire after their lease); their leases end
// with ErrLockLost.
func (c *Client) Close() error {
	c.close(c.hub.close)
	c.batch.wait()
	return nil
}

// An Option changes one lock handle.
type Option func(*handle)

// Owner sets the owner identity: handles with the same owner and name
// share the lock's holds (re-entering it), as Redisson's thread identity
// does. Default: a random identity per handle.
func Owner(owner string) Option { return func(h *handle) { h.owner = owner } }

func randomOwner() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (c *Client) newHandle(name, kind string, opts []Option) *handle {
	base := c.opts.Prefix + "{" + name + "}"
	h := &handle{c: c, name: name, kind: kind, key: base, fenceKey: base + ":fence", channel: base + ":ch",
		qKey: base + ":q", qtKey: base + ":qt", owner: randomOwner()}
	if kind == kindRead || kind == kindWrite {
		h.key = base + ":rw"
	}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Mutex returns a handle on the reentrant mutex name: SET-NX semantics
// with an owner, a lease the watchdog renews, a fencing token per
// acquisition.
func (c *Client) Mutex(name string, opts ...Option) lease.Locker {
	return c.newHandle(name, kindMutex, opts)
}

// FairMutex returns a handle on a mutex granted in the order waiters
// asked for it (a FIFO queue in Redis; a waiter silent for QueueTTL
// loses its place).
func (c *Client) FairMutex(name string, opts ...Option) lease.Locker {
	return c.newHandle(name, kindFair, opts)
}

// RWMutex is a read-write lock: many readers or one writer. The writer
// may also take read holds (and keeps them after releasing the write
// hold: a downgrade); a reader cannot upgrade.
type RWMutex struct{ r, w *handle }

// RWMutex returns a handle on the read-write lock name. It is not the
// same lock as Mutex(name).
func (c *Client) RWMutex(name string, opts ...Option) *RWMutex {
	r := c.newHandle(name, kindRead, opts)
	w := c.newHandle(name, kindWrite, opts)
	w.owner = r.owner
	w.reader = r
	return &RWMutex{r: r, w: w}
}

// Reader is the read side.
func (m *RWMutex) Reader() lease.Locker { return m.r }

// Writer is the write side.
func (m *RWMutex) Writer() lease.Locker { return m.w }

const (
	kindMutex = "mutex"
	kindFair  = "fair"
	kindRead  = "read"
	kindWrite = "write"
)

// handle is one owner's view of one lock.
type handle struct {
	c                                   *Client
	name, kind                          string
	key, fenceKey, channel, qKey, qtKey string
	owner                               string
	reader                              *handle // a write handle's read side (no upgrade)

	held
}

// hold is one acquisition until release or loss; its watchdog renews it.
type hold struct {
	name   string
	ttl    time.Duration
	logger Logger
	lease  *lease.Lease
	// extend renews the lease: false when the lock is no longer held.
	extend func(ctx context.Context) (bool, error)
	// giveUp releases every hold (when the client closes).
	giveUp func(ctx context.Context) error
	// leave lets the next local contender through the gate (idempotent;
	// nil when there is no gate); called when the hold ends.
	leave func()

	mu        sync.Mutex
	renewedAt time.Time // when the last successful renewal (or the acquisition) was sent
	stopCtx   context.Context
	stop      context.CancelFunc
	done      chan struct{}
}

// drift is how much earlier than the server's expiry a holder considers
// its lease ended: clocks run at slightly different rates (Redlock's
// 1% plus 2 ms).
func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

func (h *handle) ttlMs() int64 { return h.c.opts.TTL.Milliseconds() }

// try makes one attempt: the token when acquired, else the lock's
// remaining lease (0 when unknown).
func (h *handle) try(ctx context.Context) (granted bool, fence uint64, wait time.Duration, err error) {
	var script *redis.Script
	keys := []string{h.key, h.fenceKey}
	args := []any{h.owner, h.ttlMs()}
	switch h.kind {
	case kindMutex:
		script = luaAcquire
	case kindFair:
		script = luaFairAcquire
		keys = append(keys, h.qKey, h.qtKey)
		args = append(args, h.c.opts.QueueTTL.Milliseconds())
	case kindRead:
		script = luaReadAcquire
	case kindWrite:
		script = luaWriteAcquire
	}
	v, err := h.c.batch.run(ctx, script, keys, args...).Int64Slice()
	if err != nil {
		return false, 0, 0, fmt.Errorf("redislock: acquire %s: %w", h.name, err)
	}
	if len(v) != 2 {
		return false, 0, 0, fmt.Errorf("redislock: acquire %s: unexpected reply %v", h.name, v)
	}
	if v[0] == 1 {
		return true, uint64(v[1]), 0, nil
	}
	return false, 0, time.Duration(max(v[1], 0)) * time.Millisecond, nil
}

func (h *handle) check() error {
	if h.c.isClosed() {
		return ErrClosed
	}
	if h.reader != nil {
		h.reader.mu.Lock()
		n := h.reader.holds
		h.reader.mu.Unlock()
		if n > 0 {
			return fmt.Errorf("redislock: %s: a reader cannot upgrade to the write lock (release the read holds first)", h.name)
		}
	}
	return nil
}

// resetLost forgets a hold whose lease was lost; h.mu held.
func (h *handle) resetLost() { h.dropLost(&h.c.group) }

// gated reports whether the handle's kind queues local contenders.
func (h *handle) gated() bool { return h.kind == kindMutex || h.kind == kindFair }

// acquired records a successful attempt; h.mu held. leave is the gate's
// (nil when re-entering or ungated).
func (h *handle) acquired(fence uint64, sent time.Time, leave func()) (*lease.Lease, error) {
	if l := h.again(sent); l != nil {
		return l, nil
	}
	hd := newHold(h.name, h.c.opts, fence, sent, h.extend, h.releaseAll)
	hd.leave = leave
	if !h.begin(&h.c.group, hd) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = h.releaseAll(ctx)
		cancel()
		hd.leaveGate()
		return nil, ErrClosed
	}
	return hd.lease, nil
}

// TryLock implements lease.Locker.
func (h *handle) TryLock(ctx context.Context) (*lease.Lease, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resetLost()
	leave, err := h.enterGate(ctx, true)
	if err != nil {
		return nil, err
	}
	sent := time.Now()
	granted, fence, _, err := h.try(ctx)
	if err == nil && !granted {
		if h.kind == kindFair {
			h.leaveQueue()
		}
		err = fmt.Errorf("%w: %s", lease.ErrNotAcquired, h.name)
	}
	if err != nil {
		if leave != nil {
			leave()
		}
		return nil, err
	}
	return h.acquired(fence, sent, leave)
}

// Lock implements lease.Locker: attempts, and between them waits for a
// release to be published (or the holder's lease to end, or MaxWait).
func (h *handle) Lock(ctx context.Context) (*lease.Lease, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resetLost()
	leave, err := h.enterGate(ctx, false)
	if err != nil {
		return nil, err
	}
	var wake chan struct{}
	granted := false
	defer func() {
		if wake != nil {
			h.c.hub.leave(h.channel, wake)
		}
		if !granted && leave != nil {
			leave()
		}
	}()
	for {
		sent := time.Now()
		var fence uint64
		var wait time.Duration
		granted, fence, wait, err = h.try(ctx)
		if err != nil {
			granted = false
			if h.kind == kindFair {
				h.leaveQueue()
			}
			return nil, err
		}
		if granted {
			l, err := h.acquired(fence, sent, leave)
			if err != nil {
				granted = false // acquired left the gate already; leaving twice is safe
			}
			return l, err
		}
		if wake == nil {
			// Listen before the next attempt, so a release between the
			// failed attempt and the subscription is not missed.
			if wake, err = h.c.hub.join(ctx, h.channel); err != nil {
				if h.kind == kindFair {
					h.leaveQueue()
				}
				return nil, err
			}
			continue
		}
		if wait <= 0 || wait > h.c.opts.MaxWait {
			wait = h.c.opts.MaxWait
		}
		t := time.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if h.kind == kindFair {
				h.leaveQueue()
			}
			return nil, fmt.Errorf("redislock: lock %s: %w", h.name, context.Cause(ctx))
		}
		t.Stop()
	}
}

// enterGate passes the local gate when the handle holds nothing yet
// (a re-entry needs none); nil leave when none was entered.
func (h *handle) enterGate(ctx context.Context, try bool) (func(), error) {
	if !h.gated() || h.holds > 0 {
		return nil, nil
	}
	return h.c.gates.enter(ctx, h.name, h.owner, try)
}

// leaveQueue takes a fair waiter that gives up out of the queue (best
// effort: else its place expires after QueueTTL).
func (h *handle) leaveQueue() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := luaFairLeave.Run(ctx, h.c.rdb, []string{h.key, h.fenceKey, h.qKey, h.qtKey}, h.owner).Err(); err != nil {
		h.c.opts.Logger.Debug("redislock: leaving the fair queue", "lock", h.name, "err", err)
	}
}

func (h *handle) releaseScript() *redis.Script {
	switch h.kind {
	case kindRead:
		return luaReadRelease
	case kindWrite:
		return luaWriteRelease
	}
	return luaRelease
}

// release gives up one hold: the holds left, 0 when released, -1 when
// not held.
func (h *handle) release(ctx context.Context) (int64, error) {
	n, err := h.c.batch.run(ctx, h.releaseScript(), []string{h.key}, h.owner, h.ttlMs(), h.channel).Int64()
	if err != nil {
		return 0, fmt.Errorf("redislock: release %s: %w", h.name, err)
	}
	return n, nil
}

// releaseAll gives up every hold this handle has.
func (h *handle) releaseAll(ctx context.Context) error {
	for range 1 << 16 {
		n, err := h.release(ctx)
		if err != nil || n <= 0 {
			return err
		}
	}
	return nil
}

// Unlock implements lease.Locker.
func (h *handle) Unlock(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.current(&h.c.group, h.name); err != nil {
		return err
	}
	n, err := h.release(ctx)
	if err != nil {
		return err
	}
	var lost error
	if n < 0 {
		lost = fmt.Errorf("%w: %s: the lease had expired or another owner held the lock at release", lease.ErrLockLost, h.name)
	}
	return h.released(&h.c.group, lost, n == 0)
}

// Extend implements lease.Locker.
func (h *handle) Extend(ctx context.Context) error { return h.renewNow(ctx, h.name) }

func newHold(name string, opts Options, fence uint64, sent time.Time, extend func(context.Context) (bool, error), giveUp func(context.Context) error) *hold {
	hd := &hold{name: name, ttl: opts.TTL, logger: opts.Logger, lease: lease.NewLease(fence), extend: extend, giveUp: giveUp,
		renewedAt: sent, done: make(chan struct{})}
	hd.stopCtx, hd.stop = context.WithCancel(context.Background())
	return hd
}

// extend renews the lease on Redis: false when the owner no longer holds it.
func (h *handle) extend(ctx context.Context) (bool, error) {
	ok, err := h.c.batch.run(ctx, luaExtend, []string{h.key}, h.owner, h.ttlMs()).Int64()
	if err != nil {
		return false, fmt.Errorf("redislock: extend %s: %w", h.name, err)
	}
	return ok == 1, nil
}

// renew sends one renewal; ends the lease when the lock is found lost.
func (hd *hold) renew(ctx context.Context) error {
	if err := hd.lease.Err(); err != nil {
		return err
	}
	sent := time.Now()
	ok, err := hd.extend(ctx)
	if err != nil {
		return err
	}
	if !ok {
		lost := fmt.Errorf("%w: %s: the lease had expired or another owner took the lock", lease.ErrLockLost, hd.name)
		hd.lease.End(lost)
		return lost
	}
	hd.mu.Lock()
	if sent.After(hd.renewedAt) {
		hd.renewedAt = sent
	}
	hd.mu.Unlock()
	return nil
}

func (hd *hold) deadline() time.Time {
	ttl := hd.ttl
	hd.mu.Lock()
	defer hd.mu.Unlock()
	return hd.renewedAt.Add(ttl - drift(ttl))
}

func (hd *hold) stopWatch() {
	hd.stop()
	<-hd.done
	hd.leaveGate()
}

func (hd *hold) leaveGate() {
	if hd.leave != nil {
		hd.leave()
	}
}

// watch is the watchdog: it renews the lease every TTL/3 and ends it
// with ErrLockLost when the lock was taken over, or when renewals kept
// failing until the lease's local deadline (which is before Redis's:
// measured from when the last renewal was sent, less the drift).
func (hd *hold) watch() {
	defer close(hd.done)
	defer func() {
		if hd.lease.Err() != nil {
			hd.leaveGate() // lost: the next local contender may try
		}
	}()
	every := hd.ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-hd.stopCtx.Done():
			return
		case <-hd.lease.Done():
			return
		case <-t.C:
		}
		deadline := hd.deadline()
		if !time.Now().Before(deadline) {
			hd.lease.End(fmt.Errorf("%w: %s: not renewed before its lease ended (the process was paused or Redis unreachable)", lease.ErrLockLost, hd.name))
			return
		}
		ctx, cancel := context.WithDeadline(hd.stopCtx, deadline)
		err := hd.renew(ctx)
		cancel()
		switch {
		case err == nil:
			t.Reset(every)
		case errors.Is(err, lease.ErrLockLost):
			return
		default:
			if !time.Now().Before(hd.deadline()) {
				hd.lease.End(fmt.Errorf("%w: %s: renewal failed until the lease ended: %v", lease.ErrLockLost, hd.name, err))
				return
			}
			hd.logger.Warn("redislock: renewal failed; retrying", "lock", hd.name, "err", err)
			t.Reset(min(every/4, time.Until(hd.deadline())))
		}
	}
}
