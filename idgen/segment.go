package idgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// SegmentSource hands out the next range of a tag, of about step IDs
// (Leaf's segment table: one UPDATE … SET max_id = max_id + step).
type SegmentSource func(ctx context.Context, tag string, step int64) (Segment, error)

// SegmentConfig configures a Segments allocator.
type SegmentConfig struct {
	// Source fetches ranges (required): Client.Segment over RPC, or the
	// server's store.
	Source SegmentSource
	// Target is how long one range should last: a range used up sooner
	// doubles the next request's step, one lasting over twice as long
	// halves it (Leaf's dynamic step; default 15 min).
	Target time.Duration
	// MaxStep caps the step asked for (default 1,000,000, Leaf's).
	MaxStep int64
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// ErrSegmentsClosed is returned after Close.
var ErrSegmentsClosed = errors.New("idgen: segments closed")

// Segments hands out IDs from ranges of tags with Leaf's double buffer:
// IDs come from the current range by one atomic add; once a tenth of it
// is used the next range is fetched in the background, so a switch
// normally finds it ready. IDs of a tag are unique across every process
// drawing from the same source and ascending within a process; a restart
// skips the rest of its ranges. Safe for concurrent use.
type Segments struct {
	cfg  SegmentConfig
	mu   sync.Mutex
	tags map[string]*tagAlloc

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// NewSegments returns an allocator over cfg.Source.
func NewSegments(cfg SegmentConfig) (*Segments, error) {
	if cfg.Source == nil {
		return nil, errors.New("idgen: SegmentConfig.Source is required")
	}
	if cfg.Target <= 0 {
		cfg.Target = 15 * time.Minute
	}
	if cfg.MaxStep <= 0 {
		cfg.MaxStep = 1_000_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Segments{cfg: cfg, tags: map[string]*tagAlloc{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close stops background fetches and waits for them; Next hands out what
// is left of the current ranges, then fails with ErrSegmentsClosed.
func (s *Segments) Close() error {
	s.closed.Store(true)
	s.cancel()
	s.wg.Wait()
	return nil
}

// segBuf is one range: IDs [start, end); next is taken by atomic add and
// may run past end (those adds find the range used up).
type segBuf struct {
	next       atomic.Int64
	start, end int64
	prefetchAt int64
}

func newBuf(sg Segment) *segBuf {
	b := &segBuf{start: sg.Start, end: sg.End, prefetchAt: sg.Start + (sg.End-sg.Start)/10}
	b.next.Store(sg.Start)
	return b
}

type tagAlloc struct {
	s   *Segments
	tag string
	cur atomic.Pointer[segBuf]

	mu        sync.Mutex
	spare     *segBuf       // the prefetched next range
	loading   chan struct{} // closed when the fetch in flight ends; nil when none
	loadErr   error
	step      int64 // the step to ask for next (0: the tag's own)
	minStep   int64
	lastFetch time.Time
}

func (s *Segments) alloc(tag string) *tagAlloc {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.tags[tag]
	if a == nil {
		a = &tagAlloc{s: s, tag: tag}
		s.tags[tag] = a
	}
	return a
}

// Next returns the next ID of tag.
func (s *Segments) Next(ctx context.Context, tag string) (int64, error) {
	return s.alloc(tag).next(ctx)
}

// Alloc returns tag's allocator for repeated use without the map lookup.
func (s *Segments) Alloc(tag string) *TagAllocator { return &TagAllocator{a: s.alloc(tag)} }

// TagAllocator hands out the IDs of one tag.
type TagAllocator struct{ a *tagAlloc }

// Next returns the tag's next ID.
func (t *TagAllocator) Next(ctx context.Context) (int64, error) { return t.a.next(ctx) }

// next takes an ID from the current range by one atomic add.
func (a *tagAlloc) next(ctx context.Context) (int64, error) {
	if b := a.cur.Load(); b != nil {
		v := b.next.Add(1) - 1
		if v < b.end {
			if v == b.prefetchAt {
				a.prefetch()
			}
			return v, nil
		}
	}
	return a.slow(ctx)
}

// State is a tag's buffers as an allocator sees them.
type State struct {
	Tag string `json:"tag"`
	// Current range [Start, End) and the next ID it gives.
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	Next  int64 `json:"next"`
	// Spare is whether the next range is fetched and waiting.
	Spare bool `json:"spare"`
	// Step is the size asked for next.
	Step int64 `json:"step"`
}

// States reports every tag's buffers (the console's segments page).
func (s *Segments) States() []State {
	s.mu.Lock()
	as := make([]*tagAlloc, 0, len(s.tags))
	for _, a := range s.tags {
		as = append(as, a)
	}
	s.mu.Unlock()
	out := make([]State, 0, len(as))
	for _, a := range as {
		st := State{Tag: a.tag}
		if b := a.cur.Load(); b != nil {
			st.Start, st.End, st.Next = b.start, b.end, min(b.next.Load(), b.end)
		}
		a.mu.Lock()
		st.Spare, st.Step = a.spare != nil, a.step
		a.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// prefetch starts fetching the next range unless one is there or coming.
func (a *tagAlloc) prefetch() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.spare != nil || a.loading != nil || a.s.closed.Load() {
		return
	}
	a.startLoad()
}

// startLoad fetches the next range in the background; a.mu held.
func (a *tagAlloc) startLoad() {
	done := make(chan struct{})
	a.loading, a.loadErr = done, nil
	a.s.wg.Add(1)
	go func() {
		defer a.s.wg.Done()
		defer close(done)
		sg, err := a.s.cfg.Source(a.s.ctx, a.tag, a.nextStep())
		a.mu.Lock()
		defer a.mu.Unlock()
		a.loading = nil
		if err != nil {
			a.loadErr = fmt.Errorf("idgen: fetch a range of %s: %w", a.tag, err)
			a.s.cfg.Logger.Warn("idgen: fetching the next range failed; retried when needed", "tag", a.tag, "err", err)
			return
		}
		if sg.End <= sg.Start {
			a.loadErr = fmt.Errorf("idgen: source gave %s an empty range [%d, %d)", a.tag, sg.Start, sg.End)
			return
		}
		a.minStep = sg.Step
		a.spare = newBuf(sg)
	}()
}

// nextStep is the step to ask for: Leaf's rule from how long the last
// range lasted.
func (a *tagAlloc) nextStep() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.step == 0 || a.lastFetch.IsZero() {
		a.lastFetch = now
		return a.step
	}
	took := now.Sub(a.lastFetch)
	a.lastFetch = now
	switch {
	case took < a.s.cfg.Target:
		a.step = min(a.step*2, a.s.cfg.MaxStep)
	case took >= 2*a.s.cfg.Target:
		a.step = max(a.step/2, a.minStep, 1)
	}
	return a.step
}

// slow switches to the spare range, or waits for one.
func (a *tagAlloc) slow(ctx context.Context) (int64, error) {
	for {
		if a.s.closed.Load() {
			return 0, ErrSegmentsClosed
		}
		a.mu.Lock()
		if b := a.cur.Load(); b != nil {
			if v := b.next.Add(1) - 1; v < b.end { // another caller switched already
				a.mu.Unlock()
				return v, nil
			}
		}
		if a.spare != nil {
			b := a.spare
			a.spare = nil
			if a.step == 0 {
				a.step = max(b.end-b.start, 1)
			}
			v := b.next.Add(1) - 1
			a.cur.Store(b)
			if v >= b.prefetchAt && a.loading == nil { // a range of fewer than ten IDs
				a.startLoad()
			}
			a.mu.Unlock()
			return v, nil
		}
		if a.loading == nil { // none in flight (or the last one failed): fetch now
			a.startLoad()
		}
		done := a.loading
		a.mu.Unlock()
		select {
		case <-done:
			a.mu.Lock()
			err := a.loadErr
			if err != nil && a.spare == nil {
				a.loadErr = nil
				a.mu.Unlock()
				return 0, err
			}
			a.mu.Unlock()
		case <-ctx.Done():
			return 0, fmt.Errorf("idgen: waiting for a range of %s: %w", a.tag, ctx.Err())
		}
	}
}
