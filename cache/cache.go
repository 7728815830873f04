// Package cache is a two-tier cache for the cache-aside pattern: an
// in-process tier (otter) over a remote tier (the embedded kv store,
// Redis or Redis Cluster), with the usual protections — one load per key
// however many callers miss together (a stampede), not-found placeholders
// and an optional Bloom filter (penetration), TTL jitter (avalanche),
// stale-while-revalidate, and a hot-key detector. Writers update the
// database first and then Delete the key: the key is deleted from the
// remote tier and dropped from every process's local tier (RESP3 client
// tracking, or pub/sub). A miss takes a lease in the key before reading
// the source and fills only if the lease survived, so a slow reader
// cannot put back a value a Delete has replaced; a second, delayed delete
// covers writers without leases. Docs: docs/cache.md.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/tangram-dev/tangram/internal/span"
)

// ErrNotFound is what a loader returns for a key that does not exist;
// Get returns it too (the absence is cached for NotFoundTTL).
var ErrNotFound = errors.New("cache: not found")

// Invalidation is how the local tiers of other processes learn of a
// change.
type Invalidation int

const (
	// InvalidateAuto: client tracking on a single server (kv, Redis 6+),
	// pub/sub on Redis Cluster.
	InvalidateAuto Invalidation = iota
	// InvalidateTracking: a RESP3 connection with CLIENT TRACKING BCAST
	// on the cache's key prefix — every change of a key, by anyone, drops
	// it from the local tier.
	InvalidateTracking
	// InvalidatePubSub: Delete and Set publish the key on a channel.
	InvalidatePubSub
	// InvalidateNone: local entries live out LocalTTL.
	InvalidateNone
)

// Config configures a Cache.
type Config[V any] struct {
	// Name is the cache's namespace: remote keys are Prefix + Name + ":"
	// + key (required).
	Name string
	// Remote is the remote tier (nil: local tier only).
	Remote redis.UniversalClient
	// Prefix of remote keys (default "tangram:cache:").
	Prefix string
	// Load reads a key from the source of truth (the database); it
	// returns ErrNotFound for a key that does not exist. Get uses it;
	// GetWith takes a loader per call.
	Load func(ctx context.Context, key string) (V, error)
	// Codec for the remote tier (default JSON).
	Codec Codec[V]
	// TTL in the remote tier (default 10 min).
	TTL time.Duration
	// LocalTTL in the local tier (default 1 min; negative: no local tier).
	LocalTTL time.Duration
	// LocalMaxBytes bounds the local tier by the encoded size of its
	// values plus their keys (default 64 MiB).
	LocalMaxBytes int64
	// Jitter spreads every TTL by ± this fraction so keys set together do
	// not expire together (default 0.05, go-zero's; negative: none).
	Jitter float64
	// NotFoundTTL caches an absence (default 1 min, in both tiers).
	NotFoundTTL time.Duration
	// RefreshAfter: a local entry older than this is returned and
	// reloaded in the background, once (stale-while-revalidate; default
	// off).
	RefreshAfter time.Duration
	// Bloom, optional: a key it has never seen is not found, without a
	// load.
	Bloom *Bloom
	// Invalidation mode (default InvalidateAuto).
	Invalidation Invalidation
	// DoubleDelete is the delay of the second delete after Delete
	// (default 500 ms: longer than a read of the database plus a fill of
	// the cache takes; negative: no second delete).
	DoubleDelete time.Duration
	// HotKeys is how many of the most read keys to track (default 32;
	// negative: off). Reads that miss the local tier are counted.
	HotKeys int
	// HotOnly keeps only hot keys (the tracked top) in the local tier:
	// the local tier then holds the few keys that carry most reads.
	HotOnly bool
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// TracerProvider, when set, records a span for each fill past the
	// local tier ("cache fill <name>": a remote hit, a load, an absence),
	// one for each call of the loader under it ("cache load <name>"), and
	// one for each Delete; local hits are not traced (a span would cost
	// a hundred times the hit). Nil records none.
	TracerProvider oteltrace.TracerProvider
}

// entry is a local-tier value: the decoded value, or an absence.
type entry[V any] struct {
	v     V
	nf    bool
	stale bool // its fill was voided by a change during the load: not kept
	size  uint32
	// Set when the entry goes into the local tier (Cache.keep): its key,
	// and when it expires there (the coarse clock's nanoseconds), which
	// the front checks too.
	key string
	exp int64
	// dead is set (to 1, atomically with its removal) when the local tier
	// drops the entry for any reason; the front then no longer serves it.
	// A plain word read with sync/atomic: entries are values until kept.
	dead uint32
}

// value is the entry as Get returns it.
func (e *entry[V]) value() (V, error) {
	if e.nf {
		var zero V
		return zero, ErrNotFound
	}
	return e.v, nil
}

// Stats counts what a Cache did. LocalHits is sampled (one hit in 16
// counted as 16, one front hit in 128 as 128): an estimate, exact only in
// expectation.
type Stats struct {
	LocalHits, RemoteHits, Loads, NotFound, Errors, Invalidations uint64
	// Voided counts fills dropped because the key was deleted (or
	// changed) while its value was loaded: stale values not stored.
	Voided uint64
}

// Cache is a two-tier cache. Safe for concurrent use.
type Cache[V any] struct {
	cfg    Config[V]
	codec  Codec[V]
	prefix string // Prefix + Name + ":"
	local  *otter.Cache[string, *entry[V]]
	front  *front[V] // in front of local (nil without it, or with RefreshAfter)
	clock  *otter.CoarseClock
	loader otter.Loader[string, *entry[V]]
	flight singleflight.Group // loads when there is no local tier
	hot    *hotKeys
	mode   Invalidation // resolved: tracking, pub/sub or none
	log    *slog.Logger
	span   span.Tracer

	localHits, remoteHits, loads, notFound, errs, invals, voided atomic.Uint64

	ownMu sync.Mutex
	own   map[string]ownWrites // tracking: this process's fill writes whose pushes are still to come

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  chan struct{} // closed when the invalidation listener is subscribed
	closed atomic.Bool
}

// New returns a Cache; with a remote tier and a local one it starts the
// invalidation listener (Close stops it).
func New[V any](cfg Config[V]) (*Cache[V], error) {
	if cfg.Name == "" || strings.ContainsAny(cfg.Name, " \r\n") {
		return nil, fmt.Errorf("cache: Config.Name %q: want a name without spaces", cfg.Name)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "tangram:cache:"
	}
	if cfg.Codec == nil {
		cfg.Codec = JSON[V]{}
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Minute
	}
	if cfg.LocalTTL == 0 {
		cfg.LocalTTL = time.Minute
	}
	if cfg.LocalMaxBytes <= 0 {
		cfg.LocalMaxBytes = 64 << 20
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.05
	}
	if cfg.Jitter >= 1 {
		return nil, fmt.Errorf("cache: Jitter %v: want below 1", cfg.Jitter)
	}
	if cfg.NotFoundTTL <= 0 {
		cfg.NotFoundTTL = time.Minute
	}
	if cfg.DoubleDelete == 0 {
		cfg.DoubleDelete = 500 * time.Millisecond
	}
	if cfg.HotKeys == 0 {
		cfg.HotKeys = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HotOnly && cfg.HotKeys < 0 {
		return nil, errors.New("cache: HotOnly needs the hot-key detector (HotKeys ≥ 0)")
	}
	c := &Cache[V]{cfg: cfg, codec: cfg.Codec, prefix: cfg.Prefix + cfg.Name + ":", log: cfg.Logger, span: span.New(cfg.TracerProvider, "github.com/tangram-dev/tangram/cache"), ready: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if cfg.HotKeys > 0 {
		c.hot = newHotKeys(cfg.HotKeys, 4096)
	}
	if cfg.LocalTTL > 0 {
		// A clock read once a millisecond by one goroutine: a precise
		// read on every hit was a third of the hit's time. Entries may
		// leave the local tier up to 1 ms early (TTLs are jittered by ±5%
		// anyway) — a reload, never a stale read.
		c.clock = otter.NewCoarseClock(time.Millisecond)
		opts := &otter.Options[string, *entry[V]]{
			Clock:         c.clock,
			MaximumWeight: uint64(cfg.LocalMaxBytes),
			Weigher:       func(k string, e *entry[V]) uint32 { return e.size + uint32(len(k)) + 48 },
			// The expiry was drawn when the entry was made (keep), so
			// the front can check it too.
			ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *entry[V]]) time.Duration {
				return time.Duration(max(e.Value.exp-c.clock.NowNano(), 1))
			}),
			OnAtomicDeletion: func(e otter.DeletionEvent[string, *entry[V]]) { atomic.StoreUint32(&e.Value.dead, 1) },
		}
		if cfg.RefreshAfter > 0 {
			opts.RefreshCalculator = otter.RefreshWriting[string, *entry[V]](cfg.RefreshAfter)
		} else {
			// A refreshing tier returns stale entries while it reloads
			// them: that is its Get's decision, so it has no front.
			c.front = newFront[V]()
		}
		local, err := otter.New(opts)
		if err != nil {
			c.clock.Stop()
			return nil, fmt.Errorf("cache: local tier: %w", err)
		}
		c.local = local
		c.loader = tierLoader[V]{c}
	}
	mode := cfg.Invalidation
	if mode == InvalidateAuto {
		mode = InvalidatePubSub
		if _, ok := cfg.Remote.(*redis.Client); ok {
			mode = InvalidateTracking
		}
	}
	if cfg.Remote == nil || c.local == nil {
		mode = InvalidateNone
	}
	c.mode = mode
	switch {
	case mode == InvalidateNone:
		close(c.ready)
	case mode == InvalidateTracking:
		rc, ok := cfg.Remote.(*redis.Client)
		if !ok {
			return nil, errors.New("cache: InvalidateTracking needs a single server (*redis.Client); use InvalidatePubSub with a cluster")
		}
		c.goFunc(func() { c.track(rc.Options()) })
	default:
		c.goFunc(c.subscribe)
	}
	return c, nil
}

func (c *Cache[V]) goFunc(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// Ready is closed once the invalidation listener is subscribed (at once
// without one): a change made after it reaches this cache.
func (c *Cache[V]) Ready() <-chan struct{} { return c.ready }

// Close stops the listener and the pending second deletes (which are
// done at once).
func (c *Cache[V]) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.cancel()
	c.wg.Wait()
	if c.local != nil {
		c.local.StopAllGoroutines()
		c.clock.Stop()
	}
	return nil
}

func (c *Cache[V]) jitter(d time.Duration) time.Duration {
	if c.cfg.Jitter <= 0 {
		return d
	}
	f := 1 + c.cfg.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// Get returns key's value: from the local tier, else the remote tier,
// else Config.Load (one load per key at a time in this process; the
// result is stored in both tiers). A missing key is ErrNotFound.
func (c *Cache[V]) Get(ctx context.Context, key string) (V, error) {
	if c.front != nil {
		if e, ok := c.localGet(key, true); ok {
			return e.value()
		}
	}
	return c.miss(ctx, key)
}

// localGet is a hit in the front or the local tier (with the front: not
// in RefreshAfter mode). Hits are counted one in hitSample (front hits one
// in frontSample), with that weight: a counter every core writes on each
// hit would cost more than the hit. The sampled hits also feed the hot-key
// detector (observe), promote the key into the front, and — for a front
// hit, which the local tier does not see — tell the local tier's eviction
// policy the key is in use (a key hot enough to stay in the front is read
// there thousands of times between its evictions' decisions).
func (c *Cache[V]) localGet(key string, observe bool) (*entry[V], bool) {
	if e, ok := c.front.get(key, c.clock.NowNano()); ok {
		if rand.Uint32()&(frontSample-1) == 0 {
			c.sampledHit(key, observe, frontSample)
			c.local.GetIfPresent(key)
		}
		return e, true
	}
	e, ok := c.local.GetIfPresent(key)
	if ok && rand.Uint32()&(hitSample-1) == 0 {
		c.sampledHit(key, observe, hitSample)
		c.front.promote(key, e)
	}
	return e, ok
}

func (c *Cache[V]) sampledHit(key string, observe bool, weight uint32) {
	c.localHits.Add(uint64(weight))
	if observe && c.hot != nil {
		c.hot.observe(key, weight)
	}
}

// keep makes the entry the local tier stores for key, its expiry drawn
// now (jittered).
func (c *Cache[V]) keep(key string, e entry[V]) *entry[V] {
	e.key = key
	now := c.clock.NowNano()
	switch {
	case e.stale:
		e.exp = now // returned to its caller, kept by no one
	case e.nf:
		e.exp = now + int64(c.jitter(min(c.cfg.NotFoundTTL, c.cfg.LocalTTL)))
	default:
		e.exp = now + int64(c.jitter(c.cfg.LocalTTL))
	}
	return &e
}

// miss is Get past the local tier.
func (c *Cache[V]) miss(ctx context.Context, key string) (V, error) {
	var zero V
	if c.cfg.Load == nil {
		return zero, errors.New("cache: no Config.Load; use GetWith")
	}
	var e *entry[V]
	var err error
	switch {
	case c.local != nil && c.cfg.RefreshAfter > 0:
		// otter's Get returns a fresh entry, or a stale one while it
		// reloads it once in the background (tierLoader.Reload).
		e, err = c.local.Get(ctx, key, c.loader)
	case c.local != nil && (!c.cfg.HotOnly || c.hot.isHot(key)):
		e, err = c.local.Get(ctx, key, c.loader)
	default:
		var v any
		v, err, _ = c.flight.Do(key, func() (any, error) { return c.fill(ctx, key) })
		if err == nil {
			x := v.(entry[V])
			e = &x
		}
	}
	if err != nil {
		c.errs.Add(1)
		return zero, err
	}
	return e.value()
}

// GetWith is Get with a loader for this call (it runs only on a miss).
func (c *Cache[V]) GetWith(ctx context.Context, key string, load func(ctx context.Context, key string) (V, error)) (V, error) {
	if c.front != nil {
		if e, ok := c.localGet(key, false); ok {
			return e.value()
		}
	} else if c.local != nil {
		if e, ok := c.local.GetIfPresent(key); ok {
			if rand.Uint32()&(hitSample-1) == 0 {
				c.localHits.Add(hitSample)
			}
			return e.value()
		}
	}
	var zero V
	v, err, _ := c.flight.Do(key, func() (any, error) { return c.fillWith(ctx, key, load) })
	if err != nil {
		c.errs.Add(1)
		return zero, err
	}
	e := v.(entry[V])
	if c.local != nil && !e.stale && (!c.cfg.HotOnly || c.hot.isHot(key)) {
		c.local.SetIfAbsent(key, c.keep(key, e))
	}
	if e.nf {
		return zero, ErrNotFound
	}
	return e.v, nil
}

// fill loads key past the local tier with Config.Load.
func (c *Cache[V]) fill(ctx context.Context, key string) (entry[V], error) {
	return c.fillWith(ctx, key, c.cfg.Load)
}

// Placeholders in the remote tier: a value is stored after a 'v', an
// absence as "*" (go-zero's placeholder).
// A miss's lease is "~" + a random token, there while its holder loads.
const (
	tagValue    = 'v'
	tagLease    = '~'
	placeholder = "*"
)

// fillWith is fillTiers, traced when the cache has a TracerProvider.
func (c *Cache[V]) fillWith(ctx context.Context, key string, load func(ctx context.Context, key string) (V, error)) (entry[V], error) {
	if !c.span.On() {
		return c.fillTiers(ctx, key, load)
	}
	name := attribute.String("cache.name", c.cfg.Name)
	ctx, s := c.span.Start(ctx, "cache fill "+c.cfg.Name, oteltrace.SpanKindInternal, name)
	loaded := false
	e, err := c.fillTiers(ctx, key, func(ctx context.Context, key string) (V, error) {
		loaded = true
		ctx, ls := c.span.Start(ctx, "cache load "+c.cfg.Name, oteltrace.SpanKindInternal, name)
		v, err := load(ctx, key)
		if errors.Is(err, ErrNotFound) {
			ls.SetAttributes(attribute.Bool("cache.not_found", true))
			span.End(ls, nil)
		} else {
			span.End(ls, err)
		}
		return v, err
	})
	result := "remote_hit"
	switch {
	case err != nil:
		result = "error"
	case loaded:
		result = "loaded"
	}
	s.SetAttributes(attribute.String("cache.result", result), attribute.Bool("cache.not_found", err == nil && e.nf))
	span.End(s, err)
	return e, err
}

// fillTiers reads the remote tier, then the loader, storing what the
// loader found (or its absence) in the remote tier under a lease.
func (c *Cache[V]) fillTiers(ctx context.Context, key string, load func(ctx context.Context, key string) (V, error)) (entry[V], error) {
	if c.hot != nil {
		c.hot.observe(key, 1)
	}
	if c.cfg.Remote == nil {
		return c.fillSource(ctx, key, load, nil)
	}
	rkey := c.prefix + key
	b, err := c.cfg.Remote.Get(ctx, rkey).Bytes()
	switch {
	case err == nil && string(b) == placeholder:
		c.remoteHits.Add(1)
		c.notFound.Add(1)
		return entry[V]{nf: true}, nil
	case err == nil && len(b) > 0 && b[0] == tagValue:
		v, derr := c.codec.Unmarshal(b[1:])
		if derr == nil {
			c.remoteHits.Add(1)
			return entry[V]{v: v, size: uint32(len(b))}, nil
		}
		c.log.Warn("cache: a remote value does not decode; loading it again", "key", rkey, "err", derr)
		return c.fillSource(ctx, key, load, b)
	case err == nil && len(b) > 0 && b[0] == tagLease:
		// Another process is loading it: load too, but leave the remote
		// tier to the lease holder.
		return c.fillSource(ctx, key, load, nil)
	case err == nil:
		c.log.Warn("cache: a remote value is not this cache's; loading it again", "key", rkey)
		return c.fillSource(ctx, key, load, b)
	case !errors.Is(err, redis.Nil):
		// The remote tier is down: the source of truth still answers,
		// and the local tier keeps what it loads.
		c.log.Warn("cache: remote tier read failed; loading from the source", "key", rkey, "err", err)
		return c.fillSource(ctx, key, load, nil)
	}
	// A miss: take the lease (a marker in the key itself) before reading
	// the source, so a Delete in between — which deletes the marker —
	// voids this fill.
	lease := append([]byte{tagLease}, randToken()...)
	c.expectOwn(key, 1)
	ok, err := c.cfg.Remote.SetNX(ctx, rkey, lease, leaseTTL).Result()
	if err != nil || !ok {
		c.expectOwn(key, -1)
		return c.fillSource(ctx, key, load, nil)
	}
	return c.fillSource(ctx, key, load, lease)
}

// ownWrites counts a key's fill writes not yet pushed back.
type ownWrites struct {
	n  int
	at time.Time
}

// expectOwn notes (d = 1) or takes back (d = -1) a fill write of key
// whose tracking push is to be ignored: it would drop the very load it
// comes from. Ignoring it is safe because the fill is a compare-and-set
// on its lease: a Delete by anyone voids the fill whatever pushes this
// process heeds. Tracking mode only.
func (c *Cache[V]) expectOwn(key string, d int) {
	if c.mode != InvalidateTracking {
		return
	}
	c.ownMu.Lock()
	defer c.ownMu.Unlock()
	if c.own == nil {
		c.own = map[string]ownWrites{}
	}
	now := time.Now()
	if len(c.own) > 1024 { // pushes lost with a dropped connection: forget old notes
		for k, w := range c.own {
			if now.Sub(w.at) > 10*time.Second {
				delete(c.own, k)
			}
		}
	}
	w := c.own[key]
	w.n += d
	w.at = now
	if w.n <= 0 {
		delete(c.own, key)
		return
	}
	c.own[key] = w
}

// ownPush reports whether a push of key is one of this process's fill
// writes coming back (and counts it off).
func (c *Cache[V]) ownPush(key string) bool {
	c.ownMu.Lock()
	defer c.ownMu.Unlock()
	w, ok := c.own[key]
	if !ok {
		return false
	}
	if w.n--; w.n <= 0 {
		delete(c.own, key)
	} else {
		c.own[key] = w
	}
	return true
}

// leaseTTL bounds a fill: a load slower than this fills nothing.
const leaseTTL = 10 * time.Second

func randToken() []byte {
	const hex = "0123456789abcdef"
	b := make([]byte, 16)
	for i := range b {
		b[i] = hex[rand.IntN(16)]
	}
	return b
}

// hitSample: one local hit in this many is counted by the hot-key
// detector, with this weight (the hit path stays a few ns); frontSample
// the same for hits in the front, whose hit costs a few ns less again.
const (
	hitSample   = 16
	frontSample = 128
)

// tierLoader loads into the local tier: Load past it (remote tier, then
// source); Reload — a stale-while-revalidate refresh — from the source,
// since the remote tier may hold the same old value.
type tierLoader[V any] struct{ c *Cache[V] }

func (l tierLoader[V]) Load(ctx context.Context, key string) (*entry[V], error) {
	e, err := l.c.fill(ctx, key)
	if err != nil {
		return nil, err
	}
	return l.c.keep(key, e), nil
}

func (l tierLoader[V]) Reload(ctx context.Context, key string, _ *entry[V]) (*entry[V], error) {
	c := l.c
	var expect []byte
	if c.cfg.Remote != nil {
		// The value now in the remote tier is what the refresh may
		// replace: a Delete meanwhile (or a newer fill) voids it.
		b, err := c.cfg.Remote.Get(ctx, c.prefix+key).Bytes()
		if err == nil && len(b) > 0 && b[0] != tagLease {
			expect = b
		}
	}
	e, err := c.fillSource(ctx, key, c.cfg.Load, expect)
	if err != nil {
		return nil, err
	}
	return c.keep(key, e), nil
}

// fillSource loads key from the source. With expect (the lease, or the
// value a refresh replaces), it stores the result (or its absence) in
// the remote tier only if the key still holds expect: a Delete after the
// source was read leaves nothing stale behind, and the entry is then
// returned to the caller but not kept in the local tier either.
func (c *Cache[V]) fillSource(ctx context.Context, key string, load func(ctx context.Context, key string) (V, error), expect []byte) (entry[V], error) {
	rkey := c.prefix + key
	if c.cfg.Bloom != nil && !c.cfg.Bloom.MayContain(key) {
		c.notFound.Add(1)
		return entry[V]{nf: true}, nil
	}
	if load == nil {
		return entry[V]{}, errors.New("cache: no loader")
	}
	c.loads.Add(1)
	v, err := load(ctx, key)
	var e entry[V]
	var b []byte
	ttl := c.jitter(c.cfg.TTL)
	switch {
	case errors.Is(err, ErrNotFound):
		c.notFound.Add(1)
		e, b, ttl = entry[V]{nf: true}, []byte(placeholder), c.jitter(c.cfg.NotFoundTTL)
	case err != nil:
		if expect != nil && expect[0] == tagLease {
			c.releaseLease(ctx, rkey, expect)
		}
		return entry[V]{}, fmt.Errorf("cache: load %s: %w", key, err)
	default:
		if b, err = c.encode(v); err != nil {
			return entry[V]{}, err
		}
		e = entry[V]{v: v, size: uint32(len(b))}
	}
	if expect != nil {
		c.expectOwn(key, 1)
		stored, err := c.condSet(ctx, rkey, expect, b, ttl)
		if !stored {
			c.expectOwn(key, -1)
		}
		if err != nil {
			c.log.Warn("cache: remote tier write failed", "key", rkey, "err", err)
		}
		if err == nil && !stored {
			c.voided.Add(1)
			e.stale = true
		}
	}
	return e, nil
}

// condSet sets key to val if it still holds expect (WATCH, compare, then
// MULTI/EXEC: a change between the compare and the write aborts it).
func (c *Cache[V]) condSet(ctx context.Context, key string, expect, val []byte, ttl time.Duration) (bool, error) {
	stored := false
	err := c.cfg.Remote.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := tx.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) || err == nil && string(cur) != string(expect) {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, val, ttl)
			return nil
		})
		if err == nil {
			stored = true
		}
		return err
	}, key)
	if errors.Is(err, redis.TxFailedErr) {
		return false, nil
	}
	return stored, err
}

// releaseLease drops a lease whose load failed, if it is still there.
func (c *Cache[V]) releaseLease(ctx context.Context, key string, lease []byte) {
	_ = c.cfg.Remote.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := tx.Get(ctx, key).Bytes()
		if err != nil || string(cur) != string(lease) {
			return nil
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key)
			return nil
		})
		return err
	}, key)
}

func (c *Cache[V]) encode(v V) ([]byte, error) {
	b, err := c.codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cache: encode: %w", err)
	}
	out := make([]byte, 0, len(b)+1)
	return append(append(out, tagValue), b...), nil
}

// Set stores v under key in both tiers (write-through users; cache-aside
// writers Delete instead) and tells the other processes to drop theirs.
func (c *Cache[V]) Set(ctx context.Context, key string, v V) error {
	b, err := c.encode(v)
	if err != nil {
		return err
	}
	if c.cfg.Remote != nil {
		if err := c.cfg.Remote.Set(ctx, c.prefix+key, b, c.jitter(c.cfg.TTL)).Err(); err != nil {
			return fmt.Errorf("cache: set %s: %w", key, err)
		}
		c.publish(ctx, key)
	}
	if c.local != nil {
		c.local.Set(key, c.keep(key, entry[V]{v: v, size: uint32(len(b))}))
	}
	return nil
}

// Delete is the cache-aside write path's second step (after the database
// write committed): the keys leave the remote tier and every process's
// local tier. Deleting a key also deletes a loading reader's lease, which
// voids its fill; the keys are deleted once more after
// Config.DoubleDelete for fills that take no lease (other programs).
func (c *Cache[V]) Delete(ctx context.Context, keys ...string) error {
	var s oteltrace.Span
	if c.span.On() {
		ctx, s = c.span.Start(ctx, "cache delete "+c.cfg.Name, oteltrace.SpanKindClient,
			attribute.String("cache.name", c.cfg.Name), attribute.Int("cache.keys", len(keys)))
	}
	err := c.deleteNow(ctx, keys)
	if s != nil {
		span.End(s, err)
	}
	if err != nil {
		return err
	}
	if c.cfg.DoubleDelete > 0 && !c.closed.Load() {
		ks := append([]string(nil), keys...)
		c.goFunc(func() {
			t := time.NewTimer(c.cfg.DoubleDelete)
			defer t.Stop()
			select {
			case <-t.C:
			case <-c.ctx.Done(): // closing: delete now rather than never
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.deleteNow(ctx, ks); err != nil {
				c.log.Warn("cache: the second delete failed", "keys", ks, "err", err)
			}
		})
	}
	return nil
}

func (c *Cache[V]) deleteNow(ctx context.Context, keys []string) error {
	if c.local != nil {
		for _, k := range keys {
			c.local.Invalidate(k)
		}
	}
	if c.cfg.Remote == nil || len(keys) == 0 {
		return nil
	}
	for _, k := range keys { // one by one: a cluster's keys live in different slots
		if err := c.cfg.Remote.Del(ctx, c.prefix+k).Err(); err != nil {
			return fmt.Errorf("cache: delete %s: %w", k, err)
		}
	}
	for _, k := range keys {
		c.publish(ctx, k)
	}
	return nil
}

// Stats returns the counters.
func (c *Cache[V]) Stats() Stats {
	return Stats{LocalHits: c.localHits.Load(), RemoteHits: c.remoteHits.Load(), Loads: c.loads.Load(),
		NotFound: c.notFound.Load(), Errors: c.errs.Load(), Invalidations: c.invals.Load(), Voided: c.voided.Load()}
}

// HotKeys returns the most read keys of Get (reads past the local tier,
// and local hits sampled and weighted), most read first.
func (c *Cache[V]) HotKeys() []HotKey {
	if c.hot == nil {
		return nil
	}
	return c.hot.list()
}

// LocalBytes is the local tier's weight (encoded values and keys).
func (c *Cache[V]) LocalBytes() uint64 {
	if c.local == nil {
		return 0
	}
	return c.local.WeightedSize()
}

// invalidate drops a key from the local tier (a change elsewhere).
func (c *Cache[V]) invalidate(key string) {
	c.invals.Add(1)
	if c.local != nil {
		c.local.Invalidate(key)
	}
}

// flushLocal drops the whole local tier (the listener lost its
// connection: changes may have been missed).
func (c *Cache[V]) flushLocal() {
	if c.local != nil {
		c.local.InvalidateAll()
	}
}
