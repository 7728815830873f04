// Package series keeps metric series minute by minute: what the collector
// receives as OTLP metrics (and what the server samples of its own
// Prometheus metrics) becomes, per series — a name and its labels — one
// value per minute, kept for a window (a day by default) and saved to a
// snapshot file so the charts survive a restart.
//
// A gauge's minute is its last value in the minute; a counter's is its
// increase in the minute, from cumulative points (a reset counts from
// zero, as Prometheus's rate does) or delta points (added). Histograms
// arrive as Prometheus names them: name_bucket{le=…}, name_count and
// name_sum counters, from which Quantile estimates percentiles minute by
// minute. The number of series is bounded: points of a series beyond it
// are refused and counted, never let to grow memory.
package series

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is how a series' points combine within a minute.
type Kind uint8

const (
	// Gauge keeps the minute's last value.
	Gauge Kind = iota + 1
	// Counter keeps the minute's increase.
	Counter
)

func (k Kind) String() string {
	switch k {
	case Gauge:
		return "gauge"
	case Counter:
		return "counter"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// MarshalText writes the kind's name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name.
func (k *Kind) UnmarshalText(b []byte) error {
	switch string(b) {
	case "gauge":
		*k = Gauge
	case "counter":
		*k = Counter
	default:
		return fmt.Errorf("series: unknown kind %q", b)
	}
	return nil
}

// Label is one of a series' labels.
type Label struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Point is one minute's value.
type Point struct {
	Minute time.Time `json:"minute"`
	Value  float64   `json:"value"`
}

// Series is a series' points in a window, oldest first; a minute with no
// point is absent.
type Series struct {
	Name   string  `json:"name"`
	Labels []Label `json:"labels"`
	Kind   Kind    `json:"kind"`
	Points []Point `json:"points"`
}

// Label returns the value of the series' label name ("" when absent).
func (s *Series) Label(name string) string {
	for _, l := range s.Labels {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// Config bounds a Store.
type Config struct {
	// Minutes is the window kept (default 1440: a day).
	Minutes int
	// MaxSeries bounds the series kept (default 20,000); points of new
	// series beyond it are refused and counted.
	MaxSeries int
	// Path is the snapshot file Save writes and Open reads ("": kept in
	// memory only).
	Path string
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Validate checks c.
func (c Config) Validate() error {
	if c.Minutes < 0 || c.MaxSeries < 0 {
		return errors.New("series: Minutes and MaxSeries cannot be negative")
	}
	return nil
}

// Store holds the series.
type Store struct {
	cfg     Config
	mu      sync.Mutex
	series  map[string]*stored
	refused atomic.Int64
	points  atomic.Int64
}

// stored is a series and, for a cumulative counter, the last cumulative
// value and its start, to take increases from.
type stored struct {
	Name   string  `json:"name"`
	Labels []Label `json:"labels"`
	Kind   Kind    `json:"kind"`
	// Minutes and Values are the points, oldest first (unix minutes).
	Minutes []int64   `json:"minutes"`
	Values  []float64 `json:"values"`
	// Last is the last cumulative value seen, LastStart its start
	// (unix nanoseconds; 0 unknown), HasLast whether there was one.
	Last      float64 `json:"last,omitempty"`
	LastStart uint64  `json:"last_start,omitempty"`
	HasLast   bool    `json:"has_last,omitempty"`
	// Seen is the unix minute of the last sample.
	Seen int64 `json:"seen"`
}

// Open makes a store, reading cfg.Path's snapshot when there is one (a
// snapshot that cannot be read is reported, not half-loaded).
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Minutes == 0 {
		cfg.Minutes = 1440
	}
	if cfg.MaxSeries == 0 {
		cfg.MaxSeries = 20000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{cfg: cfg, series: map[string]*stored{}}
	if cfg.Path == "" {
		return s, nil
	}
	b, err := os.ReadFile(cfg.Path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("series: read snapshot: %w", err)
	}
	var snap struct {
		Series []*stored `json:"series"`
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("series: snapshot %s: %w", cfg.Path, err)
	}
	for _, st := range snap.Series {
		if len(st.Minutes) != len(st.Values) || (st.Kind != Gauge && st.Kind != Counter) {
			return nil, fmt.Errorf("series: snapshot %s: series %s is damaged", cfg.Path, st.Name)
		}
		if len(s.series) < cfg.MaxSeries {
			s.series[key(st.Name, st.Labels)] = st
		}
	}
	return s, nil
}

// Save writes the snapshot (atomically: a crash leaves the old one or the
// new one).
func (s *Store) Save() error {
	if s.cfg.Path == "" {
		return nil
	}
	s.mu.Lock()
	s.trim(s.cfg.Now())
	all := make([]*stored, 0, len(s.series))
	for _, st := range s.series {
		all = append(all, st)
	}
	b, err := json.Marshal(struct {
		Series []*stored `json:"series"`
	}{all})
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("series: snapshot: %w", err)
	}
	tmp := s.cfg.Path + ".tmp"
	if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o755); err != nil {
		return fmt.Errorf("series: snapshot: %w", err)
	}
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("series: snapshot: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("series: snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("series: snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("series: snapshot: %w", err)
	}
	if err := os.Rename(tmp, s.cfg.Path); err != nil {
		return fmt.Errorf("series: snapshot: %w", err)
	}
	return nil
}

// key names a series: its name and its labels, sorted.
func key(name string, labels []Label) string {
	var b strings.Builder
	b.WriteString(name)
	for _, l := range labels {
		b.WriteByte(0)
		b.WriteString(l.Name)
		b.WriteByte(0)
		b.WriteString(l.Value)
	}
	return b.String()
}

// Sample is a point as received.
type Sample struct {
	Name   string
	Labels []Label // sorted by Add
	Kind   Kind
	// Time is when the value was observed.
	Time  time.Time
	Value float64
	// Cumulative says a Counter's Value is a running total (since Start,
	// when known) rather than the increase since the previous point.
	Cumulative bool
	Start      time.Time
}

// Add records samples; it returns how many were refused (a new series
// beyond MaxSeries, a bad value or kind, a time outside the window).
func (s *Store) Add(samples []Sample) int {
	now := s.cfg.Now()
	oldest := minute(now) - int64(s.cfg.Minutes) + 1
	refused, trimmed := 0, false
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range samples {
		sm := &samples[i]
		m := minute(sm.Time)
		if sm.Name == "" || (sm.Kind != Gauge && sm.Kind != Counter) || math.IsNaN(sm.Value) || math.IsInf(sm.Value, 0) ||
			m < oldest || m > minute(now)+1 {
			refused++
			continue
		}
		slices.SortFunc(sm.Labels, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
		k := key(sm.Name, sm.Labels)
		st := s.series[k]
		if st == nil {
			if len(s.series) >= s.cfg.MaxSeries && !trimmed {
				s.trim(now) // once per call: a flood of new series stays linear
				trimmed = true
			}
			if len(s.series) >= s.cfg.MaxSeries {
				refused++
				continue
			}
			st = &stored{Name: sm.Name, Labels: slices.Clone(sm.Labels), Kind: sm.Kind}
			s.series[k] = st
		}
		if st.Kind != sm.Kind {
			refused++ // a name reused with another kind
			continue
		}
		s.points.Add(1)
		st.Seen = max(st.Seen, m)
		if sm.Kind == Gauge {
			st.put(m, sm.Value, false)
			continue
		}
		if !sm.Cumulative {
			st.put(m, sm.Value, true)
			continue
		}
		var start uint64
		if !sm.Start.IsZero() {
			start = uint64(sm.Start.UnixNano())
		}
		var inc float64
		switch {
		case !st.HasLast:
			// A first point: its increase is known only when its
			// counter started within the minute before it; otherwise it
			// is only the baseline the next point is measured from.
			st.Last, st.LastStart, st.HasLast = sm.Value, start, true
			if start == 0 || sm.Time.Sub(sm.Start) > time.Minute {
				continue
			}
			inc = sm.Value
		case (start != 0 && st.LastStart != 0 && start != st.LastStart) || sm.Value < st.Last:
			inc = sm.Value // restarted: counts from zero
		default:
			inc = sm.Value - st.Last
		}
		st.Last, st.LastStart, st.HasLast = sm.Value, start, true
		st.put(m, inc, true)
	}
	s.refused.Add(int64(refused))
	return refused
}

// put sets (or, add, adds to) minute m's value.
func (st *stored) put(m int64, v float64, add bool) {
	n := len(st.Minutes)
	i := sort.Search(n, func(i int) bool { return st.Minutes[i] >= m })
	if i < n && st.Minutes[i] == m {
		if add {
			st.Values[i] += v
		} else {
			st.Values[i] = v
		}
		return
	}
	st.Minutes = slices.Insert(st.Minutes, i, m)
	st.Values = slices.Insert(st.Values, i, v)
}

// trim drops points older than the window and series left empty.
func (s *Store) trim(now time.Time) {
	oldest := minute(now) - int64(s.cfg.Minutes) + 1
	for k, st := range s.series {
		i := sort.Search(len(st.Minutes), func(i int) bool { return st.Minutes[i] >= oldest })
		if i > 0 {
			st.Minutes = slices.Delete(st.Minutes, 0, i)
			st.Values = slices.Delete(st.Values, 0, i)
		}
		if len(st.Minutes) == 0 && st.Seen < oldest {
			delete(s.series, k)
		}
	}
}

func minute(t time.Time) int64 { return t.Unix() / 60 }

// Query selects series.
type Query struct {
	// Name is the series' name (required).
	Name string
	// Match keeps the series whose labels have these values.
	Match map[string]string
	// Minutes is how far back (default and at most the window).
	Minutes int
}

// Query returns the series q selects, sorted by labels, each with its
// points in the last q.Minutes minutes.
func (s *Store) Query(q Query) []Series {
	now := s.cfg.Now()
	if q.Minutes <= 0 || q.Minutes > s.cfg.Minutes {
		q.Minutes = s.cfg.Minutes
	}
	from := minute(now) - int64(q.Minutes) + 1
	var out []Series
	s.mu.Lock()
	for _, st := range s.series {
		if st.Name != q.Name || !matches(st.Labels, q.Match) {
			continue
		}
		se := Series{Name: st.Name, Labels: slices.Clone(st.Labels), Kind: st.Kind, Points: []Point{}}
		for i, m := range st.Minutes {
			if m >= from {
				se.Points = append(se.Points, Point{Minute: time.Unix(m*60, 0).UTC(), Value: st.Values[i]})
			}
		}
		out = append(out, se)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return key("", out[i].Labels) < key("", out[j].Labels) })
	return out
}

func matches(labels []Label, want map[string]string) bool {
	for n, v := range want {
		found := false
		for _, l := range labels {
			if l.Name == n {
				found = l.Value == v
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// NameInfo is a series name known to the store.
type NameInfo struct {
	Name   string `json:"name"`
	Kind   Kind   `json:"kind"`
	Series int    `json:"series"`
}

// Names lists the series names, sorted.
func (s *Store) Names() []NameInfo {
	by := map[string]*NameInfo{}
	s.mu.Lock()
	for _, st := range s.series {
		n := by[st.Name]
		if n == nil {
			n = &NameInfo{Name: st.Name, Kind: st.Kind}
			by[st.Name] = n
		}
		n.Series++
	}
	s.mu.Unlock()
	out := make([]NameInfo, 0, len(by))
	for _, n := range by {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stats are the store's counters.
type Stats struct {
	Series  int   `json:"series"`
	Points  int64 `json:"points"`
	Refused int64 `json:"refused"`
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	n := len(s.series)
	s.mu.Unlock()
	return Stats{Series: n, Points: s.points.Load(), Refused: s.refused.Load()}
}

// Window is the store's window in minutes.
func (s *Store) Window() int { return s.cfg.Minutes }

// Minutes returns the last n minutes ending now, oldest first: the x axis
// Sum and Quantile fill.
func (s *Store) Minutes(n int) []time.Time {
	end := minute(s.cfg.Now())
	out := make([]time.Time, n)
	for i := range out {
		out[i] = time.Unix((end-int64(n-1-i))*60, 0).UTC()
	}
	return out
}

// Sum adds the series minute by minute over minutes (a minute no series
// has is 0).
func Sum(ss []Series, minutes []time.Time) []float64 {
	out := make([]float64, len(minutes))
	index := indexOf(minutes)
	for _, se := range ss {
		for _, p := range se.Points {
			if i, ok := index[p.Minute.Unix()]; ok {
				out[i] += p.Value
			}
		}
	}
	return out
}

func indexOf(minutes []time.Time) map[int64]int {
	index := make(map[int64]int, len(minutes))
	for i, m := range minutes {
		index[m.Unix()] = i
	}
	return index
}

// Quantile estimates quantile q (0 to 1) minute by minute from a
// histogram's name_bucket series (label le, cumulative counts, as
// Prometheus writes them), interpolating within the bucket as
// Prometheus's histogram_quantile does; a minute with no observations is
// NaN. Buckets of several series (labels other than le) are added.
func Quantile(q float64, buckets []Series, minutes []time.Time) []float64 {
	type bound struct {
		le     float64
		counts []float64
	}
	byLE := map[float64]*bound{}
	index := indexOf(minutes)
	for _, se := range buckets {
		le, err := strconv.ParseFloat(se.Label("le"), 64)
		if err != nil {
			continue
		}
		b := byLE[le]
		if b == nil {
			b = &bound{le: le, counts: make([]float64, len(minutes))}
			byLE[le] = b
		}
		for _, p := range se.Points {
			if i, ok := index[p.Minute.Unix()]; ok {
				b.counts[i] += p.Value
			}
		}
	}
	bounds := make([]*bound, 0, len(byLE))
	for _, b := range byLE {
		bounds = append(bounds, b)
	}
	sort.Slice(bounds, func(i, j int) bool { return bounds[i].le < bounds[j].le })
	out := make([]float64, len(minutes))
	for i := range minutes {
		out[i] = math.NaN()
		if len(bounds) == 0 {
			continue
		}
		total := bounds[len(bounds)-1].counts[i]
		if total <= 0 {
			continue
		}
		rank := q * total
		lower, below := 0.0, 0.0
		for _, b := range bounds {
			c := b.counts[i]
			if c >= rank {
				if math.IsInf(b.le, 1) {
					out[i] = lower // beyond the last finite bound
				} else if c == below {
					out[i] = b.le
				} else {
					out[i] = lower + (b.le-lower)*(rank-below)/(c-below)
				}
				break
			}
			lower, below = b.le, c
		}
	}
	return out
}
