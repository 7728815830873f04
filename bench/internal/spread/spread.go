// Package spread holds the rules every benchmark in bench/ follows when it
// compares our code with a peer: the systems measured take turns going
// first, every round is kept, a figure is reported as the median of its
// rounds with their spread (min–max), errors are counted beside the figure
// they affect, and the last line of output is one JSON object in the shape
// all benches share.
package spread

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"slices"
)

// Order is the order in which the systems run in round r (from 0): round 0
// runs them as given, each later round rotates by one, so each system goes
// first (and last) as often as the others.
func Order[T any](systems []T, r int) []T {
	out := make([]T, 0, len(systems))
	for i := range systems {
		out = append(out, systems[(i+r)%len(systems)])
	}
	return out
}

// Of is a figure measured over rounds.
type Of struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"rounds"`
}

// Summarise returns the median (the mean of the middle two for an even
// count), minimum and maximum of xs; NaNs (a round that produced no
// figure) are left out.
func Summarise(xs []float64) Of {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Of{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Of{Median: m, Min: v[0], Max: v[len(v)-1], N: len(v)}
}

// Format prints the median and, over more than one round, the spread:
// "12.3 (11.9–13.0)"; verb formats each number (e.g. "%.1f").
func (o Of) Format(verb string) string {
	if math.IsNaN(o.Median) {
		return "–"
	}
	if o.N <= 1 || o.Min == o.Max {
		return fmt.Sprintf(verb, o.Median)
	}
	return fmt.Sprintf(verb+" ("+verb+"–"+verb+")", o.Median, o.Min, o.Max)
}

// Ratios returns ours[i]/peer[i] for each round (higher-is-better figures
// such as throughput); for lower-is-better figures (latency) pass them the
// other way round. Rounds where either is missing or the divisor is 0 are
// NaN.
func Ratios(num, den []float64) []float64 {
	out := make([]float64, 0, len(num))
	for i := range min(len(num), len(den)) {
		if den[i] == 0 || math.IsNaN(num[i]) || math.IsNaN(den[i]) {
			out = append(out, math.NaN())
			continue
		}
		out = append(out, num[i]/den[i])
	}
	return out
}

// Row is one line of the final JSON: a case, our figures, the peer's, the
// ratio (median over rounds; above 1 means we are ahead) with its spread,
// and the errors seen in all rounds of the case.
type Row struct {
	Case     string  `json:"case"`
	Ours     any     `json:"ours"`
	Peer     any     `json:"peer"`
	Ratio    float64 `json:"ratio"`
	RatioMin float64 `json:"ratio_min,omitempty"`
	RatioMax float64 `json:"ratio_max,omitempty"`
	Rounds   int     `json:"rounds,omitempty"`
	Errors   int     `json:"errors,omitempty"`
	Note     string  `json:"note,omitempty"`
}

// NewRow builds a row from per-round ratios.
func NewRow(name string, ours, peer any, ratios []float64, errors int) Row {
	r := Summarise(ratios)
	return Row{Case: name, Ours: ours, Peer: peer, Ratio: round2(r.Median), RatioMin: round2(r.Min), RatioMax: round2(r.Max), Rounds: r.N, Errors: errors}
}

func round2(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return math.Round(x*100) / 100
}

// Print writes the final JSON line: {"bench", "peer", "rows", ...extra}.
func Print(bench, peer string, rows []Row, extra map[string]any) {
	out := map[string]any{"bench": bench, "peer": peer, "rows": rows}
	for k, v := range extra {
		out[k] = v
	}
	b, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: JSON line:", err)
		return
	}
	fmt.Println(string(b))
}

// Version is the version of module path linked into this benchmark (the
// peer's exact version, printed with its configuration), or "unknown".
func Version(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				if m.Replace != nil {
					return m.Replace.Version
				}
				return m.Version
			}
		}
	}
	return "unknown"
}
