package rollup

import "math"

// Buckets is the number of latency buckets: bucket i holds durations in
// [2^(i/3), 2^((i+1)/3)) microseconds (bucket 0 also everything below
// 1 µs, the last everything above about 70 minutes), so a percentile read
// from them is within 13 % of the true value.
const Buckets = 96

const perOctave = 3

// Hist is a latency histogram.
type Hist [Buckets]uint32

func bucketOf(durNano uint64) int {
	us := float64(durNano) / 1e3
	if us < 1 {
		return 0
	}
	i := int(math.Log2(us) * perOctave)
	if i >= Buckets {
		return Buckets - 1
	}
	return i
}

// lower is bucket i's lower bound in nanoseconds.
func lower(i int) float64 {
	if i == 0 {
		return 0
	}
	return math.Exp2(float64(i)/perOctave) * 1e3
}

// Add counts one duration.
func (h *Hist) Add(durNano uint64) { h[bucketOf(durNano)]++ }

// Merge adds o's counts.
func (h *Hist) Merge(o *Hist) {
	for i, n := range o {
		h[i] += n
	}
}

// Quantile estimates the q-quantile (0 < q ≤ 1) in nanoseconds,
// interpolating geometrically inside its bucket; 0 when empty.
func (h *Hist) Quantile(q float64) float64 {
	var total uint64
	for _, n := range h {
		total += uint64(n)
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range h {
		if n == 0 {
			continue
		}
		if seen+float64(n) >= rank {
			lo, hi := lower(i), lower(i+1)
			if i == 0 {
				return hi * (rank - seen) / float64(n)
			}
			frac := (rank - seen) / float64(n)
			return lo * math.Pow(hi/lo, frac)
		}
		seen += float64(n)
	}
	return lower(Buckets)
}

// Stats are the RED figures of one minute (or of several merged): calls,
// errors, the total and the distribution of durations.
type Stats struct {
	Calls, Errors uint64
	SumNano       uint64
	Hist          Hist
}

func (s *Stats) add(durNano uint64, failed bool) {
	s.Calls++
	if failed {
		s.Errors++
	}
	s.SumNano += durNano
	s.Hist.Add(durNano)
}

// Merge adds o into s.
func (s *Stats) Merge(o *Stats) {
	s.Calls += o.Calls
	s.Errors += o.Errors
	s.SumNano += o.SumNano
	s.Hist.Merge(&o.Hist)
}

// CountBelow is how many durations were at most boundNano, reading each
// bucket as its geometric middle (Prometheus buckets from the finer ones).
func (h *Hist) CountBelow(boundNano float64) uint64 {
	var n uint64
	for i, c := range h {
		mid := math.Sqrt(math.Max(lower(i), 1) * lower(i+1))
		if mid > boundNano {
			break
		}
		n += uint64(c)
	}
	return n
}
