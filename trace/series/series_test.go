package series

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func values(ss []Series) []float64 {
	var out []float64
	for _, s := range ss {
		for _, p := range s.Points {
			out = append(out, p.Value)
		}
	}
	return out
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9 {
			return false
		}
	}
	return true
}

func TestGaugesAndCounters(t *testing.T) {
	c := &clock{time.Date(2026, 12, 7, 10, 0, 30, 0, time.UTC)}
	s := open(t, Config{Now: c.now})
	start := c.t.Add(-time.Hour)
	lab := []Label{{"topic", "orders"}}
	add := func(kind Kind, v float64, cumulative bool, st time.Time) {
		t.Helper()
		if n := s.Add([]Sample{{Name: map[Kind]string{Gauge: "lag", Counter: "msgs"}[kind], Labels: lab, Kind: kind, Time: c.t, Value: v, Cumulative: cumulative, Start: st}}); n != 0 {
			t.Fatalf("refused %d", n)
		}
	}
	// Minute 0: the first cumulative point of an old counter is a baseline.
	add(Counter, 100, true, start)
	add(Gauge, 5, false, time.Time{})
	c.t = c.t.Add(15 * time.Second)
	add(Counter, 130, true, start)
	add(Gauge, 7, false, time.Time{})
	// Minute 1.
	c.t = c.t.Add(time.Minute)
	add(Counter, 150, true, start)
	// Minute 2: the counter restarted (a new start): counts from zero.
	c.t = c.t.Add(time.Minute)
	add(Counter, 4, true, c.t.Add(-10*time.Second))
	// Minute 3: went down without a start time: a reset too.
	c.t = c.t.Add(time.Minute)
	add(Counter, 10, true, c.t.Add(-70*time.Second))
	if got := values(s.Query(Query{Name: "msgs"})); !equal(got, []float64{30, 20, 4, 6}) {
		t.Fatalf("counter minutes %v, want [30 20 4 6]", got)
	}
	if got := values(s.Query(Query{Name: "lag", Match: map[string]string{"topic": "orders"}})); !equal(got, []float64{7}) {
		t.Fatalf("gauge minutes %v, want [7] (the minute's last)", got)
	}
	if got := s.Query(Query{Name: "lag", Match: map[string]string{"topic": "other"}}); len(got) != 0 {
		t.Fatalf("match kept %v", got)
	}
	// Delta points add up within a minute.
	s.Add([]Sample{{Name: "d", Kind: Counter, Time: c.t, Value: 2}, {Name: "d", Kind: Counter, Time: c.t, Value: 3}})
	if got := values(s.Query(Query{Name: "d"})); !equal(got, []float64{5}) {
		t.Fatalf("delta %v", got)
	}
	// A new counter that started within the minute before counts whole.
	s.Add([]Sample{{Name: "fresh", Kind: Counter, Time: c.t, Value: 9, Cumulative: true, Start: c.t.Add(-20 * time.Second)}})
	if got := values(s.Query(Query{Name: "fresh"})); !equal(got, []float64{9}) {
		t.Fatalf("fresh counter %v", got)
	}
	// Minutes: the window's x axis; Sum fills missing minutes with 0.
	mins := s.Minutes(5)
	if got := Sum(s.Query(Query{Name: "msgs"}), mins); !equal(got, []float64{0, 30, 20, 4, 6}) {
		t.Fatalf("sum %v", got)
	}
}

func TestRefusals(t *testing.T) {
	c := &clock{time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s := open(t, Config{Now: c.now, MaxSeries: 2, Minutes: 10})
	bad := []Sample{
		{Name: "", Kind: Gauge, Time: c.t, Value: 1},
		{Name: "x", Kind: 9, Time: c.t, Value: 1},
		{Name: "x", Kind: Gauge, Time: c.t, Value: math.NaN()},
		{Name: "x", Kind: Gauge, Time: c.t, Value: math.Inf(1)},
		{Name: "x", Kind: Gauge, Time: c.t.Add(-11 * time.Minute), Value: 1},
		{Name: "x", Kind: Gauge, Time: c.t.Add(5 * time.Minute), Value: 1},
		{Name: "x", Kind: Gauge},
	}
	if n := s.Add(bad); n != len(bad) {
		t.Fatalf("refused %d of %d bad samples", n, len(bad))
	}
	ok := []Sample{{Name: "a", Kind: Gauge, Time: c.t, Value: 1}, {Name: "b", Kind: Gauge, Time: c.t, Value: 1}}
	if n := s.Add(ok); n != 0 {
		t.Fatal(n)
	}
	if n := s.Add([]Sample{{Name: "c", Kind: Gauge, Time: c.t, Value: 1}, {Name: "a", Kind: Counter, Time: c.t, Value: 1}}); n != 2 {
		t.Fatalf("a third series and a kind change: refused %d, want 2", n)
	}
	if st := s.Stats(); st.Series != 2 || st.Refused != int64(len(bad)+2) {
		t.Fatalf("stats %+v", st)
	}
	// Once the window has passed, old series make room.
	c.t = c.t.Add(11 * time.Minute)
	if n := s.Add([]Sample{{Name: "c", Kind: Gauge, Time: c.t, Value: 1}}); n != 0 {
		t.Fatalf("after the window: refused %d", n)
	}
	if names := s.Names(); len(names) != 1 || names[0].Name != "c" {
		t.Fatalf("names %+v", names)
	}
}

func TestSnapshot(t *testing.T) {
	c := &clock{time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "sub", "series.json")
	s := open(t, Config{Now: c.now, Path: path})
	s.Add([]Sample{{Name: "m", Labels: []Label{{"b", "2"}, {"a", "1"}}, Kind: Counter, Time: c.t, Value: 10, Cumulative: true}})
	c.t = c.t.Add(time.Minute)
	s.Add([]Sample{{Name: "m", Labels: []Label{{"a", "1"}, {"b", "2"}}, Kind: Counter, Time: c.t, Value: 25, Cumulative: true}})
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	r := open(t, Config{Now: c.now, Path: path})
	// The cumulative baseline survived: the next point's increase is right.
	c.t = c.t.Add(time.Minute)
	r.Add([]Sample{{Name: "m", Labels: []Label{{"a", "1"}, {"b", "2"}}, Kind: Counter, Time: c.t, Value: 26, Cumulative: true}})
	got := r.Query(Query{Name: "m", Match: map[string]string{"b": "2"}})
	if len(got) != 1 || !equal(values(got), []float64{15, 1}) || got[0].Label("a") != "1" {
		t.Fatalf("after reopening: %+v", got)
	}
	// A damaged snapshot is reported, not half-loaded.
	if err := writeFile(path, `{"series":[{"name":"m","kind":"gauge","minutes":[1,2],"values":[1]}]}`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Path: path}); err == nil {
		t.Fatal("a damaged snapshot opened")
	}
	if err := writeFile(path, `{`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Path: path}); err == nil {
		t.Fatal("a truncated snapshot opened")
	}
	if _, err := Open(Config{Minutes: -1}); err == nil {
		t.Fatal("negative Minutes accepted")
	}
}

func TestQuantile(t *testing.T) {
	c := &clock{time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s := open(t, Config{Now: c.now})
	// One minute: 100 observations, 50 ≤ 0.1, 90 ≤ 0.5, 100 ≤ 1.
	for _, b := range []struct {
		le string
		n  float64
	}{{"0.1", 50}, {"0.5", 90}, {"1", 100}, {"+Inf", 100}} {
		s.Add([]Sample{{Name: "h_bucket", Labels: []Label{{"le", b.le}}, Kind: Counter, Time: c.t, Value: b.n}})
	}
	mins := s.Minutes(2)
	buckets := s.Query(Query{Name: "h_bucket"})
	p50 := Quantile(0.5, buckets, mins)
	p95 := Quantile(0.95, buckets, mins)
	if !math.IsNaN(p50[0]) || math.Abs(p50[1]-0.1) > 1e-9 || math.Abs(p95[1]-0.75) > 1e-9 {
		t.Fatalf("p50 %v p95 %v, want [NaN 0.1] and 0.75", p50, p95)
	}
	// All beyond the last finite bound: the bound.
	s.Add([]Sample{{Name: "g_bucket", Labels: []Label{{"le", "1"}}, Kind: Counter, Time: c.t, Value: 0},
		{Name: "g_bucket", Labels: []Label{{"le", "+Inf"}}, Kind: Counter, Time: c.t, Value: 3}})
	if got := Quantile(0.99, s.Query(Query{Name: "g_bucket"}), mins); got[1] != 1 {
		t.Fatalf("beyond the last bound: %v", got)
	}
}

func writeFile(path, text string) error { return os.WriteFile(path, []byte(text), 0o644) }

func TestBaselineSurvivesSave(t *testing.T) {
	c := &clock{time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s := open(t, Config{Now: c.now, Path: filepath.Join(t.TempDir(), "s.json")})
	s.Add([]Sample{{Name: "m", Kind: Counter, Time: c.t, Value: 10, Cumulative: true}})
	if err := s.Save(); err != nil { // trims
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Minute)
	s.Add([]Sample{{Name: "m", Kind: Counter, Time: c.t, Value: 12, Cumulative: true}})
	if got := values(s.Query(Query{Name: "m"})); !equal(got, []float64{2}) {
		t.Fatalf("after a save between baseline and point: %v, want [2]", got)
	}
}
