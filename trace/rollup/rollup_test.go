package rollup

import (
	"math"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/trace/store"
)

func TestQuantilesWithinABucket(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.Add(uint64(i) * uint64(time.Millisecond))
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 500e6}, {0.95, 950e6}, {0.99, 990e6}, {0.01, 10e6}} {
		got := h.Quantile(c.q)
		if math.Abs(got-c.want)/c.want > 0.13 {
			t.Errorf("q%.2f = %.0f ms, want about %.0f ms", c.q, got/1e6, c.want/1e6)
		}
	}
	var empty Hist
	if empty.Quantile(0.99) != 0 {
		t.Error("an empty histogram has a p99")
	}
	var tiny Hist
	tiny.Add(10)             // 10 ns: bucket 0
	tiny.Add(math.MaxUint64) // beyond the last bucket
	if q := tiny.Quantile(0.5); q < 0 || q > lower(1) {
		t.Errorf("p50 of a 10 ns span: %v", q)
	}
}

var t0 = time.Date(2026, 12, 7, 10, 0, 30, 0, time.UTC)

func sp(svc, name string, kind store.Kind, id, parent byte, at time.Time, dur time.Duration, failed bool) store.Span {
	s := store.Span{Service: svc, Name: name, Kind: kind, SpanID: store.SpanID{id}, StartUnixNano: uint64(at.UnixNano()), DurationNano: uint64(dur)}
	if parent != 0 {
		s.ParentID = store.SpanID{parent}
	}
	if failed {
		s.Status = store.StatusError
	}
	return s
}

func newAt(now time.Time, cfg Config) *Rollup {
	r := New(cfg)
	r.now = func() time.Time { return now }
	return r
}

func TestREDPerServiceAndOperation(t *testing.T) {
	r := newAt(t0.Add(2*time.Minute), Config{Window: 10})
	var spans []store.Span
	for i := range 10 {
		at := t0.Add(time.Duration(i%3) * time.Minute) // minutes 0, 1, 2
		spans = append(spans, sp("web", "GET /", store.KindServer, byte(10+i), 0, at, time.Duration(i+1)*time.Millisecond, i == 9))
		spans = append(spans, sp("web", "SELECT", store.KindClient, byte(100+i), byte(10+i), at, time.Millisecond, false))
	}
	spans = append(spans, sp("web", "ancient", store.KindServer, 250, 0, t0.Add(-time.Hour), time.Second, true))
	r.Add(spans)
	svcs := r.Services(0)
	if len(svcs) != 1 || svcs[0].Service != "web" || svcs[0].Calls != 10 || svcs[0].Errors != 1 {
		t.Fatalf("services %+v: want web with 10 entry calls, 1 error (the client spans and the hour-old one not counted)", svcs)
	}
	ops := r.Operations("web", 0)
	if len(ops) != 2 || ops[0].Calls != 10 || ops[1].Calls != 10 || ops[0].Operation != "GET /" {
		t.Fatalf("operations %+v", ops)
	}
	pts := r.Series("web", "", 3)
	if len(pts) != 3 || pts[0].Calls != 4 || pts[1].Calls != 3 || pts[2].Calls != 3 || !pts[0].Minute.Equal(t0.Truncate(time.Minute)) {
		t.Fatalf("series %+v", pts)
	}
	if got := r.Series("web", "SELECT", 1); len(got) != 1 || got[0].Calls != 3 {
		t.Fatalf("operation series %+v", got)
	}
	if last := r.Services(1); len(last) != 1 || last[0].Calls != 3 {
		t.Fatalf("last minute %+v", last)
	}
}

// TestDependenciesWhicheverComesFirst: an edge is counted whether the
// parent or the child arrives first, never within a service.
func TestDependenciesWhicheverComesFirst(t *testing.T) {
	r := newAt(t0, Config{})
	// web GET (1) → web client (2) → orders server (3) → orders producer (4) → billing consumer (5)
	web := sp("web", "GET /", store.KindServer, 1, 0, t0, 9*time.Millisecond, false)
	cli := sp("web", "orders.Get", store.KindClient, 2, 1, t0, 8*time.Millisecond, false)
	ord := sp("orders", "orders.Get", store.KindServer, 3, 2, t0, 7*time.Millisecond, true)
	prod := sp("orders", "send paid", store.KindProducer, 4, 3, t0, time.Millisecond, false)
	cons := sp("billing", "process paid", store.KindConsumer, 5, 4, t0, time.Millisecond, false)
	r.Add([]store.Span{cons, ord}) // children first, in separate batches
	r.Add([]store.Span{prod})
	r.Add([]store.Span{cli, web})
	deps := r.Dependencies(0)
	if len(deps) != 2 {
		t.Fatalf("edges %+v", deps)
	}
	if d := deps[0]; d.From != "orders" || d.To != "billing" || d.Calls != 1 {
		t.Errorf("edge %+v", d)
	}
	if d := deps[1]; d.From != "web" || d.To != "orders" || d.Calls != 1 || d.Errors != 1 || d.Hist.Quantile(1) < 6e6 {
		t.Errorf("edge %+v: want web→orders with the callee's error and duration", d)
	}
	// Parent first this time.
	r.Add([]store.Span{sp("web", "GET /", store.KindServer, 11, 0, t0, time.Millisecond, false), sp("web", "c", store.KindClient, 12, 11, t0, time.Millisecond, false)})
	r.Add([]store.Span{sp("orders", "orders.Get", store.KindServer, 13, 12, t0, time.Millisecond, false)})
	if deps := r.Dependencies(0); deps[1].Calls != 2 {
		t.Errorf("web→orders after a parent-first pair: %+v", deps[1])
	}
}

func TestBounds(t *testing.T) {
	r := newAt(t0, Config{MaxSeries: 4, Recent: 2})
	var spans []store.Span
	for i := range 10 {
		spans = append(spans, sp("svc", string(rune('a'+i)), store.KindInternal, byte(i+1), 0, t0, time.Millisecond, false))
	}
	r.Add(spans)
	if n := len(r.ops); n > 6 {
		t.Errorf("%d series for a cap of 4", n)
	}
	var other uint64
	for _, o := range r.Operations("svc", 0) {
		if o.Operation == Other {
			other = o.Calls
		}
	}
	if other == 0 {
		t.Errorf("no %q operation past the cap: %+v", Other, r.Operations("svc", 0))
	}
	if len(r.recent[0]) > 3 || len(r.recent[1]) > 3 {
		t.Errorf("recent span IDs unbounded: %d %d", len(r.recent[0]), len(r.recent[1]))
	}
}
