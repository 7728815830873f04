package server

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/tangram-dev/tangram/trace/store"
)

// TailSampling keeps whole traces chosen after they are seen: every trace
// with an error, every trace with a span at least Slow long, and Ratio of
// the others (chosen by trace ID, so every collector and every late span
// agrees). The RED figures and the dependency map still count every span.
type TailSampling struct {
	// Enabled turns it on; off, every span is stored.
	Enabled bool
	// Ratio of the ordinary traces kept, 0 to 1.
	Ratio float64
	// Slow keeps traces with a span at least this long (0: none for
	// being slow).
	Slow time.Duration
	// Wait is how long a trace's spans are held for its decision after
	// its first span arrives (default 5 s): spans arriving later follow
	// the decision, remembered for ten times as long.
	Wait time.Duration
	// MaxHeld bounds the spans held (default 100,000): past it, the
	// oldest traces are decided early.
	MaxHeld int
}

// tail is the sampler; it lives in the writer goroutine (no locks).
type tail struct {
	cfg       TailSampling
	threshold uint64 // trace IDs whose first 8 bytes are below are kept

	held  map[store.TraceID]*heldTrace
	order []store.TraceID // by first arrival
	spans int
	// decided remembers recent decisions, for late spans (two generations).
	decided  [2]map[store.TraceID]bool
	rotateAt time.Time
}

type heldTrace struct {
	first time.Time
	keep  bool
	spans []store.Span
}

func newTail(cfg TailSampling) *tail {
	if cfg.Wait <= 0 {
		cfg.Wait = 5 * time.Second
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 100000
	}
	t := &tail{cfg: cfg, held: map[store.TraceID]*heldTrace{}}
	switch {
	case cfg.Ratio >= 1:
		t.threshold = math.MaxUint64
	case cfg.Ratio > 0:
		t.threshold = uint64(cfg.Ratio * (1 << 63) * 2)
	}
	t.decided[0], t.decided[1] = map[store.TraceID]bool{}, map[store.TraceID]bool{}
	return t
}

func (t *tail) interesting(s *store.Span) bool {
	return s.Status == store.StatusError || (t.cfg.Slow > 0 && s.DurationNano >= uint64(t.cfg.Slow))
}

// add takes spans in; kept spans of decided traces are appended to out.
func (t *tail) add(spans []store.Span, now time.Time, out []store.Span) (kept []store.Span, dropped int) {
	kept = out
	for i := range spans {
		s := &spans[i]
		if keep, ok := t.decision(s.TraceID); ok {
			if keep {
				kept = append(kept, *s)
			} else {
				dropped++
			}
			continue
		}
		h := t.held[s.TraceID]
		if h == nil {
			h = &heldTrace{first: now}
			t.held[s.TraceID] = h
			t.order = append(t.order, s.TraceID)
		}
		h.spans = append(h.spans, *s)
		h.keep = h.keep || t.interesting(s)
		t.spans++
	}
	return kept, dropped
}

func (t *tail) decision(id store.TraceID) (keep, ok bool) {
	for g := range 2 {
		if k, ok := t.decided[g][id]; ok {
			return k, true
		}
	}
	return false, false
}

// decide settles the traces held for Wait (all of them when flush), and
// the oldest while more than MaxHeld spans are held.
func (t *tail) decide(now time.Time, flush bool, out []store.Span) (kept []store.Span, dropped int) {
	kept = out
	if now.After(t.rotateAt) {
		t.decided[1], t.decided[0] = t.decided[0], map[store.TraceID]bool{}
		t.rotateAt = now.Add(10 * t.cfg.Wait)
	}
	n := 0
	for ; n < len(t.order); n++ {
		id := t.order[n]
		h := t.held[id]
		if !flush && now.Sub(h.first) < t.cfg.Wait && t.spans <= t.cfg.MaxHeld {
			break
		}
		keep := h.keep || binary.BigEndian.Uint64(id[:8]) < t.threshold
		if keep {
			kept = append(kept, h.spans...)
		} else {
			dropped += len(h.spans)
		}
		t.spans -= len(h.spans)
		t.decided[0][id] = keep
		delete(t.held, id)
	}
	t.order = append(t.order[:0], t.order[n:]...)
	return kept, dropped
}
