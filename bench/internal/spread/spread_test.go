package spread

import (
	"math"
	"testing"
)

func TestOrderRotates(t *testing.T) {
	s := []string{"a", "b", "c"}
	firsts := map[string]int{}
	for r := range 6 {
		o := Order(s, r)
		if len(o) != 3 {
			t.Fatalf("round %d: %v", r, o)
		}
		firsts[o[0]]++
	}
	for _, x := range s {
		if firsts[x] != 2 {
			t.Fatalf("first in 6 rounds: %v, want each twice", firsts)
		}
	}
}

func TestSummarise(t *testing.T) {
	o := Summarise([]float64{3, 1, math.NaN(), 2})
	if o.Median != 2 || o.Min != 1 || o.Max != 3 || o.N != 3 {
		t.Fatalf("%+v", o)
	}
	if e := Summarise([]float64{4, 1, 2, 3}); e.Median != 2.5 {
		t.Fatalf("even count: %+v", e)
	}
	if got := Summarise([]float64{1, 2, 4}).Format("%.1f"); got != "2.0 (1.0–4.0)" {
		t.Fatalf("format %q", got)
	}
	if r := Ratios([]float64{2, 3, 1}, []float64{1, 0, 2}); r[0] != 2 || !math.IsNaN(r[1]) || r[2] != 0.5 {
		t.Fatalf("ratios %v", r)
	}
}
