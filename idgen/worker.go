package idgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/rpc"
)

// LeaseConfig configures a snowflake generator whose worker number is
// leased from the ID service.
type LeaseConfig struct {
	// Layout (default Twitter()).
	Layout Layout
	// Field is the layout field the leased number fills (default
	// "worker", or "machine" for layouts without one).
	Field string
	// Pool names the set of numbers leased from (default
	// "<layout>/<field>"); generators sharing a pool never hold the same
	// number at once.
	Pool string
	// Max is the largest number to lease (default: the field's largest
	// value).
	Max int64
	// Fixed and PerID are as in Config (the leased field is added to
	// Fixed; other constant fields not in Fixed are 0).
	Fixed map[string]int64
	PerID []string
	// TTL of the lease (default 10 s): renewed every TTL/3; a generator
	// not renewed by its deadline issues nothing more.
	TTL time.Duration
	// Holder names this process in the lease list (default host/pid).
	Holder string
}

// Leased is a snowflake generator whose worker number is leased: it
// issues IDs only while its lease is renewed, and an ID's time is never
// at or past the lease's local deadline (the last renewal sent + TTL,
// less a drift allowance) — before the server can give the number to
// another process, whose IDs then start after that deadline. When the
// lease is lost it leases a number again (maybe another) and goes on.
type Leased struct {
	c   *Client
	cfg LeaseConfig
	gen atomic.Pointer[Snowflake]

	mu    sync.Mutex
	lease WorkerLease
	lost  chan struct{} // closed when the current lease is lost

	stopCtx context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// LeaseSnowflake leases a worker number and returns a generator using it.
func (c *Client) LeaseSnowflake(ctx context.Context, cfg LeaseConfig) (*Leased, error) {
	if cfg.Layout.Fields == nil {
		cfg.Layout = Twitter()
	}
	if err := cfg.Layout.Validate(); err != nil {
		return nil, err
	}
	if cfg.Field == "" {
		cfg.Field = "worker"
		if cfg.Layout.index("worker") < 0 {
			cfg.Field = "machine"
		}
	}
	if i := cfg.Layout.index(cfg.Field); i < 0 || cfg.Field == FieldTime || cfg.Field == FieldSeq {
		return nil, fmt.Errorf("%w: layout %q has no field %q to lease", ErrField, cfg.Layout.Name, cfg.Field)
	}
	if cfg.Pool == "" {
		cfg.Pool = cfg.Layout.Name + "/" + cfg.Field
	}
	if fm := cfg.Layout.Max(cfg.Field); cfg.Max <= 0 || cfg.Max > fm {
		if cfg.Max > fm {
			return nil, fmt.Errorf("%w: Max %d does not fit field %q (%d)", ErrField, cfg.Max, cfg.Field, fm)
		}
		cfg.Max = fm
	}
	if err := ValidName("pool", cfg.Pool); err != nil {
		return nil, err
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.TTL < 300*time.Millisecond {
		return nil, fmt.Errorf("idgen: lease TTL %v: at least 300ms", cfg.TTL)
	}
	if cfg.Holder == "" {
		cfg.Holder = defaultHolder()
	}
	l := &Leased{c: c, cfg: cfg}
	l.stopCtx, l.stop = context.WithCancel(context.Background())
	if err := l.acquire(ctx, time.Time{}); err != nil {
		return nil, err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.keep()
	}()
	return l, nil
}

// drift is the allowance for the server's clock running faster than ours
// over a TTL (1%) plus scheduling.
func (l *Leased) drift() time.Duration { return l.cfg.TTL/100 + 2*time.Millisecond }

// acquire leases a number and installs a generator for it; prevLast is
// the last time the previous generator used (zero for none).
func (l *Leased) acquire(ctx context.Context, prevLast time.Time) error {
	sent := time.Now()
	req := &LeaseRequest{Pool: l.cfg.Pool, Max: l.cfg.Max, Holder: l.cfg.Holder,
		TTLMs: l.cfg.TTL.Milliseconds(), NowMs: sent.UnixMilli()}
	wl, err := rpc.Call[WorkerLease](ctx, l.c.rpc, MethodLease, req)
	if err != nil {
		return fmt.Errorf("idgen: lease a number of %s: %w", l.cfg.Pool, err)
	}
	fixed := map[string]int64{l.cfg.Field: wl.Worker}
	for _, f := range l.cfg.Layout.Fields { // constants not given are 0
		if f.Name != FieldTime && f.Name != FieldSeq && f.Name != l.cfg.Field && !slices.Contains(l.cfg.PerID, f.Name) {
			fixed[f.Name] = l.cfg.Fixed[f.Name]
		}
	}
	notBefore := time.UnixMilli(wl.NotBeforeMs)
	if prevLast.After(notBefore) {
		notBefore = prevLast
	}
	g, err := NewSnowflake(Config{Layout: l.cfg.Layout, Fixed: fixed, PerID: l.cfg.PerID, NotBefore: notBefore})
	if err != nil {
		_, _ = rpc.Call[Empty](context.WithoutCancel(ctx), l.c.rpc, MethodRelease, &LeaseRequest{Pool: wl.Pool, Worker: wl.Worker, Term: wl.Term})
		return err
	}
	g.setLimit(sent.Add(l.cfg.TTL - l.drift()))
	l.mu.Lock()
	l.lease, l.lost = *wl, make(chan struct{})
	l.mu.Unlock()
	l.gen.Store(g)
	return nil
}

// keep renews the lease every TTL/3; at the local deadline without a
// renewal the lease is lost (the generator has already stopped) and a new
// one is taken.
func (l *Leased) keep() {
	ttl := l.cfg.TTL
	t := time.NewTimer(ttl / 3)
	defer t.Stop()
	sent := time.Now() // of the last renewal that succeeded
	for {
		select {
		case <-l.stopCtx.Done():
			return
		case <-t.C:
		}
		g := l.gen.Load()
		l.mu.Lock()
		wl := l.lease
		l.mu.Unlock()
		deadline := sent.Add(ttl - l.drift())
		try := time.Now()
		if try.Before(deadline) {
			ctx, cancel := context.WithDeadline(l.stopCtx, deadline)
			_, err := rpc.Call[WorkerLease](ctx, l.c.rpc, MethodRenew, &LeaseRequest{Pool: wl.Pool, Worker: wl.Worker, Term: wl.Term,
				TTLMs: ttl.Milliseconds(), NowMs: try.UnixMilli(), LastMs: g.Last().Add(g.l.Unit).UnixMilli() + 1})
			cancel()
			if err == nil {
				sent = try
				g.setLimit(sent.Add(ttl - l.drift()))
				t.Reset(ttl / 3)
				continue
			}
			if l.stopCtx.Err() != nil {
				return
			}
			if !errors.Is(err, ErrNoLease) && time.Now().Before(deadline) { // try again soon
				l.c.cfg.Logger.Warn("idgen: renewing a worker lease failed; retrying", "pool", wl.Pool, "worker", wl.Worker, "err", err)
				t.Reset(min(ttl/10, time.Until(deadline)+time.Millisecond))
				continue
			}
		}
		// Lost: the generator stops by itself at the deadline; make sure.
		g.setLimit(time.Unix(0, g.epochNs))
		l.mu.Lock()
		close(l.lost)
		l.mu.Unlock()
		l.c.cfg.Logger.Warn("idgen: worker lease lost; leasing again", "pool", wl.Pool, "worker", wl.Worker, "term", wl.Term)
		for {
			ctx, cancel := context.WithTimeout(l.stopCtx, ttl)
			err := l.acquire(ctx, g.Last())
			cancel()
			if err == nil {
				sent = time.Now() // acquire set the limit from its own send time, a little earlier
				break
			}
			if l.stopCtx.Err() != nil {
				return
			}
			l.c.cfg.Logger.Warn("idgen: leasing a worker number failed; retrying", "pool", wl.Pool, "err", err)
			select {
			case <-l.stopCtx.Done():
				return
			case <-time.After(ttl / 3):
			}
		}
		t.Reset(ttl / 3)
	}
}

// Next issues an ID; ErrLeaseLost while no lease is held.
func (l *Leased) Next() (int64, error) { return l.gen.Load().NextFor() }

// NextFor issues an ID with per-ID fields (LeaseConfig.PerID's order).
func (l *Leased) NextFor(vals ...int64) (int64, error) { return l.gen.Load().NextFor(vals...) }

// Lease is the lease currently held.
func (l *Leased) Lease() WorkerLease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease
}

// Lost is closed when the current lease is lost.
func (l *Leased) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Layout is the generator's layout.
func (l *Leased) Layout() Layout { return l.cfg.Layout }

// Close stops renewing and releases the number, recording the last time
// used so the next holder starts after it.
func (l *Leased) Close() error {
	l.stop()
	l.wg.Wait()
	g := l.gen.Load()
	g.setLimit(time.Unix(0, g.epochNs))
	l.mu.Lock()
	wl := l.lease
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Both times past the end of the unit the last ID is in.
	_, err := rpc.Call[Empty](ctx, l.c.rpc, MethodRelease, &LeaseRequest{Pool: wl.Pool, Worker: wl.Worker, Term: wl.Term,
		NowMs: time.Now().Add(g.l.Unit).UnixMilli() + 1, LastMs: g.Last().Add(g.l.Unit).UnixMilli() + 1})
	if err != nil && !errors.Is(err, ErrNoLease) {
		return fmt.Errorf("idgen: release worker %d of %s: %w", wl.Worker, wl.Pool, err)
	}
	return nil
}
