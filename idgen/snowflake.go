package idgen

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// Config configures a Snowflake generator.
type Config struct {
	// Layout (default Twitter()).
	Layout Layout
	// Fixed are the generator's constant fields: its worker, machine or
	// datacenter ID (from a lease: idgen's worker leases, or your own).
	// Every field but time, seq and the ones given per ID must be here.
	Fixed map[string]int64
	// PerID names the fields given with each ID, in NextFor's order
	// (the Seed layout's type, db, table).
	PerID []string
	// MaxBackward is how far back the clock may step and be bridged: IDs
	// go on from the last time used while its sequence lasts, then wait
	// for the clock to catch up. Further back, Next fails with
	// ErrClockBackwards until it has. Default 10 ms.
	MaxBackward time.Duration
	// NotBefore: no ID carries an earlier time (give the last time a
	// previous process of this worker used, so a restart after a clock
	// step back never repeats an ID).
	NotBefore time.Time
	// Now is the clock (default time.Now; tests inject one).
	Now func() time.Time
}

// Snowflake issues IDs without a lock: one atomic word holds the last
// time and sequence. Safe for concurrent use.
type Snowflake struct {
	l       Layout
	now     func() time.Time
	maxBack int64 // in units
	seqBits uint
	seqMax  int64
	timeMax int64
	timeSh  uint
	seqSh   uint
	fixed   int64 // the fixed fields, in place
	perID   []uint
	perMax  []int64
	state   atomic.Int64 // time<<seqBits | seq of the last ID
	unit    int64        // ns
	epochNs int64
	limit   atomic.Int64 // when > 0: no ID at this unit or later (a leased worker's deadline)
}

// NewSnowflake validates cfg and returns a generator.
func NewSnowflake(cfg Config) (*Snowflake, error) {
	if cfg.Layout.Fields == nil {
		cfg.Layout = Twitter()
	}
	l := cfg.Layout
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBackward == 0 {
		cfg.MaxBackward = 10 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Snowflake{l: l, now: cfg.Now, unit: int64(l.Unit), epochNs: l.Epoch.UnixNano()}
	g.maxBack = int64(cfg.MaxBackward) / g.unit
	given := map[string]bool{}
	for _, name := range cfg.PerID {
		i := l.index(name)
		if i < 0 || name == FieldTime || name == FieldSeq {
			return nil, fmt.Errorf("%w: per-ID field %q is not a field of layout %q", ErrField, name, l.Name)
		}
		g.perID = append(g.perID, uint(l.shift(i)))
		g.perMax = append(g.perMax, 1<<l.Fields[i].Bits-1)
		given[name] = true
	}
	for i, f := range l.Fields {
		switch {
		case f.Name == FieldTime:
			g.timeSh, g.timeMax = uint(l.shift(i)), 1<<f.Bits-1
		case f.Name == FieldSeq:
			g.seqSh, g.seqBits, g.seqMax = uint(l.shift(i)), uint(f.Bits), 1<<f.Bits-1
		case given[f.Name]:
		default:
			v, ok := cfg.Fixed[f.Name]
			if !ok {
				return nil, fmt.Errorf("%w: layout %q needs a value for %q (Config.Fixed) or to be given per ID (Config.PerID)", ErrField, l.Name, f.Name)
			}
			if v < 0 || v > 1<<f.Bits-1 {
				return nil, fmt.Errorf("%w: %s = %d does not fit %d bits", ErrField, f.Name, v, f.Bits)
			}
			g.fixed |= v << l.shift(i)
		}
	}
	for name := range cfg.Fixed {
		if l.index(name) < 0 || given[name] || name == FieldTime || name == FieldSeq {
			return nil, fmt.Errorf("%w: fixed field %q is not a constant field of layout %q", ErrField, name, l.Name)
		}
	}
	if !cfg.NotBefore.IsZero() {
		t := (cfg.NotBefore.UnixNano() - g.epochNs) / g.unit
		if t > 0 {
			g.state.Store(t<<g.seqBits | g.seqMax) // the next ID is in a later unit
		}
	}
	return g, nil
}

// Layout is the generator's layout.
func (g *Snowflake) Layout() Layout { return g.l }

// tick is the current time in units since the epoch.
func (g *Snowflake) tick() int64 { return (g.now().UnixNano() - g.epochNs) / g.unit }

// Next issues an ID (per-ID fields, if any, are 0).
func (g *Snowflake) Next() (int64, error) { return g.NextFor() }

// NextFor issues an ID with the per-ID fields (Config.PerID's order).
func (g *Snowflake) NextFor(vals ...int64) (int64, error) {
	if len(vals) > len(g.perID) {
		return 0, fmt.Errorf("%w: %d per-ID values for %d fields", ErrField, len(vals), len(g.perID))
	}
	extra := int64(0)
	for i, v := range vals {
		if v < 0 || v > g.perMax[i] {
			return 0, fmt.Errorf("%w: value %d of per-ID field %d does not fit", ErrField, v, i)
		}
		extra |= v << g.perID[i]
	}
	t, seq, err := g.nextTS()
	if err != nil {
		return 0, err
	}
	return t<<g.timeSh | seq<<g.seqSh | g.fixed | extra, nil
}

// Last is the time of the last ID issued (persist it; a restart gives it
// back as NotBefore).
func (g *Snowflake) Last() time.Time {
	t := g.state.Load() >> g.seqBits
	return time.Unix(0, g.epochNs+t*g.unit)
}

// nextTS takes the next (time, sequence): a new unit starts the sequence
// at 0; within the last unit — or when the clock is behind it by no more
// than MaxBackward — the sequence goes on; when it is used up, wait for
// the next unit.
func (g *Snowflake) nextTS() (int64, int64, error) {
	for {
		// The state first, then the clock: read the other way round, a
		// caller preempted between the two (a GC pause, a busy machine)
		// would compare a stale reading with IDs issued since and take
		// the delay for the clock stepping back.
		old := g.state.Load()
		now := g.tick()
		ot, os := old>>g.seqBits, old&g.seqMax
		var nt, ns int64
		switch {
		case now > ot:
			nt, ns = now, 0
		case ot-now > g.maxBack:
			return 0, 0, fmt.Errorf("%w: %v behind the last ID's time (at most %v is bridged)", ErrClockBackwards,
				time.Duration((ot-now)*g.unit), time.Duration(g.maxBack*g.unit))
		case os < g.seqMax:
			nt, ns = ot, os+1
		default:
			g.waitPast(ot)
			continue
		}
		if lim := g.limit.Load(); lim > 0 && nt >= lim {
			return 0, 0, fmt.Errorf("%w: its deadline passed before a renewal", ErrLeaseLost)
		}
		if nt > g.timeMax {
			return 0, 0, fmt.Errorf("%w: layout %q's time field ends at %v", ErrExhausted, g.l.Name, g.l.Epoch.Add(time.Duration(g.timeMax*g.unit)))
		}
		if g.state.CompareAndSwap(old, nt<<g.seqBits|ns) {
			return nt, ns, nil
		}
	}
}

// setLimit stops IDs at time at and later (a lease's local deadline).
func (g *Snowflake) setLimit(at time.Time) {
	u := (at.UnixNano() - g.epochNs) / g.unit
	g.limit.Store(max(u, 1))
}

// waitPast waits until the clock is past unit t: it sleeps while the
// next unit is more than 2 ms away and yields the processor for the last
// stretch — a sleep overshoots by tens of microseconds to a millisecond,
// which on a 1 ms unit would leave part of every unit unused and the
// generator below its layout's cap.
func (g *Snowflake) waitPast(t int64) {
	for {
		now := g.tick()
		if now > t {
			return
		}
		// Until the next unit begins, by this generator's clock.
		d := time.Duration(g.epochNs + (t+1)*g.unit - g.now().UnixNano())
		if d > 2*time.Millisecond {
			time.Sleep(min(d-2*time.Millisecond, g.l.Unit))
		} else {
			runtime.Gosched()
		}
	}
}
