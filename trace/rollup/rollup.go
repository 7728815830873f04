// Package rollup keeps what the collector learns from spans as they
// arrive, so that no batch job ever has to: RED figures (rate, errors,
// duration percentiles) per service and per operation, minute by minute,
// and the service dependency map — an edge from a service to another for
// every span whose parent belongs to the other, whichever of the two
// arrives first.
//
// Everything is in memory and bounded: a ring of minutes per series (the
// window), a cap on the number of series, and two generations of recent
// span IDs for matching children with parents.
package rollup

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/trace/store"
)

// Config bounds a Rollup.
type Config struct {
	// Window is how many minutes of figures are kept (default 60).
	Window int
	// MaxSeries caps the (service, operation) and edge series kept
	// (default 10,000); spans of new ones past it are counted under the
	// operation "(other)".
	MaxSeries int
	// Recent is how many span IDs each of the two generations remembers
	// for parent matching (default 200,000): a child whose parent comes
	// more than about that many spans later is not matched.
	Recent int
	// Now is the clock (default time.Now; tests move it).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Window <= 0 {
		c.Window = 60
	}
	if c.MaxSeries <= 0 {
		c.MaxSeries = 10000
	}
	if c.Recent <= 0 {
		c.Recent = 200000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Other is the operation that spans of series past MaxSeries count under.
const Other = "(other)"

// OpKey names an operation's series. Service-level figures are the
// service's entry spans (server and consumer spans, and roots) under the
// operation "" and the kind ServiceKind.
type OpKey struct {
	Service, Operation string
	Kind               store.Kind
}

// ServiceKind marks a service-level series.
const ServiceKind store.Kind = 255

// EdgeKey names a dependency: From calls To.
type EdgeKey struct{ From, To string }

// series is a ring of minutes, and the series' totals since the start
// (for Prometheus, whose counters only grow).
type series struct {
	minutes []int64 // the minute each slot holds (unix minutes)
	stats   []*Stats
	total   Stats
}

func newSeries(window int) *series {
	return &series{minutes: make([]int64, window), stats: make([]*Stats, window)}
}

func (s *series) add(minute int64, durNano uint64, failed bool) {
	i := int(minute % int64(len(s.minutes)))
	st := s.stats[i]
	if st == nil {
		st = &Stats{}
		s.stats[i] = st
	} else if s.minutes[i] != minute {
		*st = Stats{}
	}
	s.minutes[i] = minute
	st.add(durNano, failed)
}

// count adds to the totals only.
func (s *series) count(durNano uint64, failed bool) { s.total.add(durNano, failed) }

// sum merges the minutes in [from, to] into out.
func (s *series) sum(from, to int64, out *Stats) {
	for i, m := range s.minutes {
		if s.stats[i] != nil && m >= from && m <= to {
			out.Merge(s.stats[i])
		}
	}
}

// point is one minute's figures.
func (s *series) point(minute int64) *Stats {
	i := int(minute % int64(len(s.minutes)))
	if s.stats[i] == nil || s.minutes[i] != minute {
		return nil
	}
	return s.stats[i]
}

// child is a span waiting for its parent's service.
type child struct {
	service string
	minute  int64
	dur     uint64
	failed  bool
}

// Rollup is safe for concurrent use.
type Rollup struct {
	cfg Config
	now func() time.Time

	mu     sync.Mutex
	ops    map[OpKey]*series
	edges  map[EdgeKey]*series
	last   map[string]int64 // service -> last minute seen
	recent [2]map[store.SpanID]string
	wait   [2]map[store.SpanID][]child
	// names interns service names: spans' strings may share their
	// request's bytes, which a remembered name must not keep alive.
	names map[string]string
}

// New makes an empty Rollup.
func New(cfg Config) *Rollup {
	cfg = cfg.withDefaults()
	r := &Rollup{cfg: cfg, now: cfg.Now, ops: map[OpKey]*series{}, edges: map[EdgeKey]*series{}, last: map[string]int64{},
		names: map[string]string{}}
	for i := range 2 {
		r.recent[i] = map[store.SpanID]string{}
		r.wait[i] = map[store.SpanID][]child{}
	}
	return r
}

func minuteOf(unixNano uint64) int64 { return int64(unixNano / uint64(time.Minute)) }

// isEntry says whether a span is where a request enters its service.
func isEntry(s *store.Span) bool {
	return s.Kind == store.KindServer || s.Kind == store.KindConsumer || s.ParentID == (store.SpanID{})
}

// Add folds spans in. Spans older than the window are not counted (their
// parentage still is); spans from the future count in the current minute.
func (r *Rollup) Add(spans []store.Span) { r.add(spans, true) }

// Replay folds in spans that were stored before this process started (a
// collector's restart): into the minutes of the window and the service
// map, not into the totals since the start — counters exported as such
// must begin again at zero, or a restart would count the window twice.
func (r *Rollup) Replay(spans []store.Span) { r.add(spans, false) }

func (r *Rollup) add(spans []store.Span, totals bool) {
	nowMin := minuteOf(uint64(r.now().UnixNano()))
	oldest := nowMin - int64(r.cfg.Window) + 1
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range spans {
		s := &spans[i]
		if s.Kind == store.KindLog {
			continue // a log record, not a call
		}
		service := r.intern(s.Service)
		m := min(minuteOf(s.StartUnixNano), nowMin)
		failed := s.Status == store.StatusError
		op := r.opSeries(OpKey{s.Service, s.Name, s.Kind})
		if totals {
			op.count(s.DurationNano, failed)
		}
		if m >= oldest {
			op.add(m, s.DurationNano, failed)
			if isEntry(s) {
				r.opSeries(OpKey{Service: s.Service, Kind: ServiceKind}).add(m, s.DurationNano, failed)
			}
			if m > r.last[service] {
				r.last[service] = m
			}
		}
		// Parentage: this span may be the parent children wait for.
		r.remember(s.SpanID, service)
		for g := range 2 {
			if kids, ok := r.wait[g][s.SpanID]; ok {
				delete(r.wait[g], s.SpanID)
				for _, k := range kids {
					r.edge(s.Service, k, oldest)
				}
			}
		}
		if s.ParentID == (store.SpanID{}) {
			continue
		}
		c := child{service: service, minute: m, dur: s.DurationNano, failed: failed}
		if ps, ok := r.lookup(s.ParentID); ok {
			r.edge(ps, c, oldest)
			continue
		}
		r.wait[0][s.ParentID] = append(r.wait[0][s.ParentID], c)
		if len(r.wait[0]) > r.cfg.Recent {
			r.wait[1], r.wait[0] = r.wait[0], map[store.SpanID][]child{}
		}
	}
}

// intern returns a copy of name owned by the rollup (the same one each
// time, while there are not absurdly many).
func (r *Rollup) intern(name string) string {
	if v, ok := r.names[name]; ok {
		return v
	}
	v := strings.Clone(name)
	if len(r.names) < 2*r.cfg.MaxSeries {
		r.names[v] = v
	}
	return v
}

func (r *Rollup) remember(id store.SpanID, service string) {
	r.recent[0][id] = service
	if len(r.recent[0]) > r.cfg.Recent {
		r.recent[1], r.recent[0] = r.recent[0], map[store.SpanID]string{}
	}
}

func (r *Rollup) lookup(id store.SpanID) (string, bool) {
	for g := range 2 {
		if s, ok := r.recent[g][id]; ok {
			return s, true
		}
	}
	return "", false
}

// edge counts a call from service from to c's service (a call within a
// service is no edge).
func (r *Rollup) edge(from string, c child, oldest int64) {
	if from == c.service || c.minute < oldest {
		return
	}
	k := EdgeKey{from, c.service}
	s := r.edges[k]
	if s == nil {
		if len(r.ops)+len(r.edges) >= r.cfg.MaxSeries {
			return
		}
		s = newSeries(r.cfg.Window)
		r.edges[k] = s
	}
	s.add(c.minute, c.dur, c.failed)
}

func (r *Rollup) opSeries(k OpKey) *series {
	s := r.ops[k]
	if s != nil {
		return s
	}
	k.Service, k.Operation = r.intern(k.Service), strings.Clone(k.Operation)
	if len(r.ops)+len(r.edges) >= r.cfg.MaxSeries {
		if k.Kind == ServiceKind {
			k.Service = Other
		} else {
			k = OpKey{Service: k.Service, Operation: Other}
		}
		if s = r.ops[k]; s != nil {
			return s
		}
	}
	s = newSeries(r.cfg.Window)
	r.ops[k] = s
	return s
}

// Summary is a series' figures over a span of minutes.
type Summary struct {
	OpKey
	Stats
}

// EdgeSummary is an edge's figures over a span of minutes.
type EdgeSummary struct {
	EdgeKey
	Stats
}

// span returns the minutes [from, to] covering the last n minutes.
func (r *Rollup) span(n int) (from, to int64) {
	if n <= 0 || n > r.cfg.Window {
		n = r.cfg.Window
	}
	to = minuteOf(uint64(r.now().UnixNano()))
	return to - int64(n) + 1, to
}

// Services sums each service's entry spans over the last n minutes
// (n ≤ Window; 0 the whole window), by name.
func (r *Rollup) Services(n int) []Summary {
	from, to := r.span(n)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Summary
	for k, s := range r.ops {
		if k.Kind != ServiceKind {
			continue
		}
		sm := Summary{OpKey: k}
		s.sum(from, to, &sm.Stats)
		if sm.Calls > 0 {
			out = append(out, sm)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// Operations sums each operation of service over the last n minutes,
// busiest first.
func (r *Rollup) Operations(service string, n int) []Summary {
	from, to := r.span(n)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Summary
	for k, s := range r.ops {
		if k.Service != service || k.Kind == ServiceKind {
			continue
		}
		sm := Summary{OpKey: k}
		s.sum(from, to, &sm.Stats)
		if sm.Calls > 0 {
			out = append(out, sm)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Calls != out[j].Calls {
			return out[i].Calls > out[j].Calls
		}
		return out[i].Operation < out[j].Operation
	})
	return out
}

// Point is one minute of a series.
type Point struct {
	Minute time.Time
	Stats
}

// Series returns the last n minutes of a service (operation "") or of
// one of its operations (of any kind), oldest first; minutes without
// spans are zero points.
func (r *Rollup) Series(service, operation string, n int) []Point {
	from, to := r.span(n)
	r.mu.Lock()
	defer r.mu.Unlock()
	var ss []*series
	for k, s := range r.ops {
		if k.Service == service && k.Operation == operation && (k.Kind == ServiceKind) == (operation == "") {
			ss = append(ss, s)
		}
	}
	out := make([]Point, 0, to-from+1)
	for m := from; m <= to; m++ {
		p := Point{Minute: time.Unix(m*60, 0).UTC()}
		for _, s := range ss {
			if st := s.point(m); st != nil {
				p.Merge(st)
			}
		}
		out = append(out, p)
	}
	return out
}

// Dependencies sums every edge over the last n minutes.
func (r *Rollup) Dependencies(n int) []EdgeSummary {
	from, to := r.span(n)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []EdgeSummary
	for k, s := range r.edges {
		e := EdgeSummary{EdgeKey: k}
		s.sum(from, to, &e.Stats)
		if e.Calls > 0 {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

// Window is the number of minutes kept.
func (r *Rollup) Window() int { return r.cfg.Window }

// Totals calls fn with every operation's totals since the start (not the
// service-level series, which sum them), under the lock: fn must not call
// back into r.
func (r *Rollup) Totals(fn func(OpKey, *Stats)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, s := range r.ops {
		if k.Kind != ServiceKind {
			fn(k, &s.total)
		}
	}
}
