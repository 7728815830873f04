package shard

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/idgen"
)

// Cond is what a statement says about one sharding column: a set of
// values (`=`, `IN`), or a range (`BETWEEN`, `<`, `>=`…). A column with no
// Cond may hold any value.
type Cond struct {
	Values []Value
	Lo, Hi *Bound // a range: either may be nil (open)
}

// Bound is one end of a range.
type Bound struct {
	V         Value
	Inclusive bool
}

// errRangeRefused: the algorithm cannot route a range and is not allowed
// to send it everywhere.
var errRangeRefused = errors.New("shard: range refused")

// algorithm maps sharding values to targets (data source or table names).
type algorithm interface {
	// typ is the algorithm's type name (MOD, INLINE…).
	typ() string
	// precise is the one target of a row whose sharding columns hold vals.
	precise(all []string, vals map[string]Value) (string, error)
	// ranged returns the targets rows with col in the range can be in;
	// ok false: any target (the algorithm cannot narrow a range).
	ranged(all []string, col string, c Cond) (targets []string, ok bool, err error)
}

// props are an algorithm's properties, as written (numbers as text).
type props map[string]string

func (p props) int(key string, def int64, required bool) (int64, error) {
	s, ok := p[key]
	if !ok {
		if required {
			return 0, fmt.Errorf("property %s is required", key)
		}
		return def, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("property %s: %q is not an integer", key, s)
	}
	return v, nil
}

func (p props) str(key string, required bool) (string, error) {
	s, ok := p[key]
	if !ok && required {
		return "", fmt.Errorf("property %s is required", key)
	}
	return strings.TrimSpace(s), nil
}

// knownProps checks p has no property but these.
func (p props) known(keys ...string) error {
	for k := range p {
		if !slices.Contains(keys, k) {
			if len(keys) == 0 {
				return fmt.Errorf("unknown property %s (this type takes none)", k)
			}
			return fmt.Errorf("unknown property %s (want %s)", k, strings.Join(keys, ", "))
		}
	}
	return nil
}

// AlgorithmTypes lists the algorithm types a rule may name.
var AlgorithmTypes = []string{"MOD", "HASH_MOD", "VOLUME_RANGE", "BOUNDARY_RANGE", "INTERVAL", "INLINE", "COMPLEX_INLINE", "HINT_INLINE", "ID_SUFFIX"}

// newAlgorithm makes an algorithm of type typ from its properties.
func newAlgorithm(typ string, p props) (algorithm, error) {
	switch strings.ToUpper(typ) {
	case "MOD", "HASH_MOD":
		if err := p.known("sharding-count"); err != nil {
			return nil, err
		}
		n, err := p.int("sharding-count", 0, true)
		if err != nil {
			return nil, err
		}
		if n < 1 {
			return nil, fmt.Errorf("property sharding-count: %d (want at least 1)", n)
		}
		return &modAlg{n: n, hash: strings.ToUpper(typ) == "HASH_MOD"}, nil
	case "VOLUME_RANGE":
		if err := p.known("range-lower", "range-upper", "sharding-volume"); err != nil {
			return nil, err
		}
		lo, err := p.int("range-lower", 0, true)
		if err != nil {
			return nil, err
		}
		hi, err := p.int("range-upper", 0, true)
		if err != nil {
			return nil, err
		}
		vol, err := p.int("sharding-volume", 0, true)
		if err != nil {
			return nil, err
		}
		if vol < 1 || hi <= lo {
			return nil, fmt.Errorf("want range-lower < range-upper and sharding-volume ≥ 1 (got %d, %d, %d)", lo, hi, vol)
		}
		if (hi-lo)/vol > 100_000 {
			return nil, fmt.Errorf("more than 100000 partitions: (range-upper - range-lower) / sharding-volume")
		}
		var bounds []int64
		for b := lo; b < hi; b += vol {
			bounds = append(bounds, b)
		}
		return &boundaryAlg{name: "VOLUME_RANGE", bounds: append(bounds, hi)}, nil
	case "BOUNDARY_RANGE":
		if err := p.known("sharding-ranges"); err != nil {
			return nil, err
		}
		s, err := p.str("sharding-ranges", true)
		if err != nil {
			return nil, err
		}
		var bounds []int64
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("property sharding-ranges: %q is not an integer", f)
			}
			if len(bounds) > 0 && v <= bounds[len(bounds)-1] {
				return nil, fmt.Errorf("property sharding-ranges: %d after %d (want increasing boundaries)", v, bounds[len(bounds)-1])
			}
			bounds = append(bounds, v)
		}
		return &boundaryAlg{name: "BOUNDARY_RANGE", bounds: bounds}, nil
	case "INTERVAL":
		return newIntervalAlg(p)
	case "INLINE", "HINT_INLINE":
		if err := p.known("algorithm-expression", "allow-range-query-with-inline-sharding"); err != nil {
			return nil, err
		}
		expr, err := p.str("algorithm-expression", true)
		if err != nil {
			return nil, err
		}
		t, err := parseTemplate(expr)
		if err != nil {
			return nil, fmt.Errorf("property algorithm-expression: %w", err)
		}
		cols := t.columns()
		hint := strings.ToUpper(typ) == "HINT_INLINE"
		if hint && (len(cols) != 1 || cols[0] != "value") {
			return nil, fmt.Errorf("property algorithm-expression: a HINT_INLINE expression reads the hint as ${value}, not %v", cols)
		}
		if !hint && len(cols) > 1 {
			return nil, fmt.Errorf("property algorithm-expression: reads %d columns %v; an INLINE algorithm reads its one sharding column (COMPLEX_INLINE reads several)", len(cols), cols)
		}
		allow := strings.EqualFold(p["allow-range-query-with-inline-sharding"], "true")
		return &inlineAlg{name: strings.ToUpper(typ), t: t, cols: t.columns(), allowRange: allow}, nil
	case "COMPLEX_INLINE":
		if err := p.known("algorithm-expression", "sharding-columns", "allow-range-query-with-inline-sharding"); err != nil {
			return nil, err
		}
		expr, err := p.str("algorithm-expression", true)
		if err != nil {
			return nil, err
		}
		t, err := parseTemplate(expr)
		if err != nil {
			return nil, fmt.Errorf("property algorithm-expression: %w", err)
		}
		allow := strings.EqualFold(p["allow-range-query-with-inline-sharding"], "true")
		return &inlineAlg{name: "COMPLEX_INLINE", t: t, cols: t.columns(), allowRange: allow}, nil
	case "ID_SUFFIX":
		if err := p.known("layout", "field"); err != nil {
			return nil, err
		}
		name, _ := p.str("layout", false)
		if name == "" {
			name = "seed"
		}
		l, err := idgen.LayoutByName(name)
		if err != nil {
			return nil, fmt.Errorf("property layout: %w", err)
		}
		field, err := p.str("field", true)
		if err != nil {
			return nil, err
		}
		if _, err := l.Field(0, field); err != nil {
			return nil, fmt.Errorf("property field: layout %s has no field %q", l.Name, field)
		}
		return &idSuffixAlg{layout: l, field: field}, nil
	}
	return nil, fmt.Errorf("unknown algorithm type %q (want one of %s)", typ, strings.Join(AlgorithmTypes, ", "))
}

// suffixTarget is the target whose name ends in the number idx (after
// its last non-digit): t_order_7 for 7, never t_order_17.
func suffixTarget(all []string, idx int64) (string, error) {
	for _, t := range all {
		if n, ok := trailingNumber(t); ok && n == idx {
			return t, nil
		}
	}
	return "", fmt.Errorf("no target ends in %d (targets %s)", idx, strings.Join(all, ", "))
}

func trailingNumber(s string) (int64, bool) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	if i == len(s) {
		return 0, false
	}
	n, err := strconv.ParseInt(s[i:], 10, 64)
	return n, err == nil
}

// the one column a single-column algorithm reads.
func only(vals map[string]Value) (Value, error) {
	if len(vals) != 1 {
		return Value{}, fmt.Errorf("want one sharding column, got %d", len(vals))
	}
	for _, v := range vals {
		return v, nil
	}
	return Value{}, nil
}

// modAlg: MOD (the value modulo sharding-count) and HASH_MOD (a hash of
// its text — FNV-1a 64 — modulo sharding-count); the target is the one
// whose name ends in the remainder.
type modAlg struct {
	n    int64
	hash bool
}

func (a *modAlg) typ() string {
	if a.hash {
		return "HASH_MOD"
	}
	return "MOD"
}

func (a *modAlg) index(v Value) (int64, error) {
	if a.hash {
		h := fnv.New64a()
		h.Write([]byte(v.String()))
		return int64(h.Sum64() % uint64(a.n)), nil
	}
	i, err := v.Int64()
	if err != nil {
		return 0, err
	}
	m := i % a.n
	if m < 0 {
		m += a.n
	}
	return m, nil
}

func (a *modAlg) precise(all []string, vals map[string]Value) (string, error) {
	v, err := only(vals)
	if err != nil {
		return "", err
	}
	return a.preciseOne(all, v)
}

// preciseOne is precise for the one column's value v.
func (a *modAlg) preciseOne(all []string, v Value) (string, error) {
	idx, err := a.index(v)
	if err != nil {
		return "", err
	}
	return suffixTarget(all, idx)
}

func (a *modAlg) ranged(all []string, _ string, c Cond) ([]string, bool, error) {
	if a.hash || c.Lo == nil || c.Hi == nil {
		return nil, false, nil
	}
	lo, err1 := c.Lo.V.Int64()
	hi, err2 := c.Hi.V.Int64()
	if err1 != nil || err2 != nil {
		return nil, false, nil
	}
	if !c.Lo.Inclusive {
		if lo == math.MaxInt64 {
			return []string{}, true, nil
		}
		lo++
	}
	if !c.Hi.Inclusive {
		if hi == math.MinInt64 {
			return []string{}, true, nil
		}
		hi--
	}
	if hi < lo {
		return []string{}, true, nil
	}
	if distance(lo, hi) >= uint64(a.n-1) {
		return nil, false, nil // as many values as targets, or more
	}
	var out []string
	for v := lo; v <= hi; v++ {
		t, err := a.precise(all, map[string]Value{"": Int(v)})
		if err != nil {
			return nil, false, err
		}
		out = appendNew(out, t)
	}
	return out, true, nil
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// boundaryAlg: BOUNDARY_RANGE and VOLUME_RANGE. Boundaries b0 < b1 < …
// cut the integers into partitions: 0 is below b0, i is [b(i-1), b(i)),
// the last is b(n-1) and above; the target is the one ending in the
// partition's number.
type boundaryAlg struct {
	name   string
	bounds []int64
}

func (a *boundaryAlg) typ() string { return a.name }

func (a *boundaryAlg) partition(v int64) int64 {
	return int64(sort.Search(len(a.bounds), func(i int) bool { return a.bounds[i] > v }))
}

func (a *boundaryAlg) precise(all []string, vals map[string]Value) (string, error) {
	v, err := only(vals)
	if err != nil {
		return "", err
	}
	i, err := v.Int64()
	if err != nil {
		return "", err
	}
	return suffixTarget(all, a.partition(i))
}

func (a *boundaryAlg) ranged(all []string, _ string, c Cond) ([]string, bool, error) {
	first, last := int64(0), int64(len(a.bounds))
	if c.Lo != nil {
		v, err := c.Lo.V.Int64()
		if err != nil {
			return nil, false, nil
		}
		first = a.partition(v)
	}
	if c.Hi != nil {
		v, err := c.Hi.V.Int64()
		if err != nil {
			return nil, false, nil
		}
		if !c.Hi.Inclusive && v > math.MinInt64 {
			v-- // below v: v-1 is the highest value
		}
		last = a.partition(v)
	}
	out := []string{}
	for p := first; p <= last; p++ {
		t, err := suffixTarget(all, p)
		if err != nil {
			continue // a partition without a target holds no rows
		}
		out = append(out, t)
	}
	return out, true, nil
}

// inlineAlg: INLINE (one column), COMPLEX_INLINE (several) and
// HINT_INLINE (the hint, as ${value}): the expression names the target.
type inlineAlg struct {
	name       string
	t          *template
	cols       []string // the template's columns
	allowRange bool
}

func (a *inlineAlg) typ() string { return a.name }

func (a *inlineAlg) precise(all []string, vals map[string]Value) (string, error) {
	var in env = mapEnv(vals)
	if a.name == "INLINE" && len(a.cols) == 1 {
		// The expression may name the column differently from the
		// strategy (ShardingSphere's examples do): the one value is it.
		v, err := only(vals)
		if err != nil {
			return "", err
		}
		return a.preciseOne(all, v)
	}
	t, err := a.t.evalIn(in)
	if err != nil {
		return "", err
	}
	if !slices.Contains(all, t) {
		return "", fmt.Errorf("%s names %s, not one of the targets %s", a.t.src, t, strings.Join(all, ", "))
	}
	return t, nil
}

// preciseOne is precise for a one-column INLINE expression.
func (a *inlineAlg) preciseOne(all []string, v Value) (string, error) {
	if len(a.cols) != 1 {
		return a.precise(all, map[string]Value{"": v})
	}
	t, err := a.t.evalIn(&oneEnv{a.cols[0], v})
	if err != nil {
		return "", err
	}
	if !slices.Contains(all, t) {
		return "", fmt.Errorf("%s names %s, not one of the targets %s", a.t.src, t, strings.Join(all, ", "))
	}
	return t, nil
}

func (a *inlineAlg) ranged([]string, string, Cond) ([]string, bool, error) {
	if a.allowRange {
		return nil, false, nil
	}
	return nil, false, errRangeRefused
}

// idSuffixAlg: ID_SUFFIX reads a field of an idgen ID (the Seed layout's
// db or table suffix) and picks the target ending in it.
type idSuffixAlg struct {
	layout idgen.Layout
	field  string
}

func (a *idSuffixAlg) typ() string { return "ID_SUFFIX" }

func (a *idSuffixAlg) precise(all []string, vals map[string]Value) (string, error) {
	v, err := only(vals)
	if err != nil {
		return "", err
	}
	id, err := v.Int64()
	if err != nil {
		return "", err
	}
	f, err := a.layout.Field(id, a.field)
	if err != nil {
		return "", err
	}
	return suffixTarget(all, f)
}

func (a *idSuffixAlg) ranged([]string, string, Cond) ([]string, bool, error) {
	return nil, false, nil
}

// intervalAlg: INTERVAL shards by time: the target's suffix is the time
// truncated to its interval and formatted (t_order_202612 for months).
type intervalAlg struct {
	lower, upper time.Time
	layout       string // Go layout of the suffix
	amount       int
	unit         string // DAYS, MONTHS, YEARS, HOURS
}

// javaLayouts maps ShardingSphere's (Java) date patterns to Go layouts.
var javaLayouts = strings.NewReplacer("yyyy", "2006", "MM", "01", "dd", "02", "HH", "15", "mm", "04", "ss", "05")

func newIntervalAlg(p props) (algorithm, error) {
	if err := p.known("datetime-pattern", "datetime-lower", "datetime-upper", "sharding-suffix-pattern", "datetime-interval-amount", "datetime-interval-unit"); err != nil {
		return nil, err
	}
	pattern, _ := p.str("datetime-pattern", false)
	if pattern == "" {
		pattern = "yyyy-MM-dd HH:mm:ss"
	}
	layout := javaLayouts.Replace(pattern)
	get := func(key string, required bool) (time.Time, error) {
		s, err := p.str(key, required)
		if err != nil || s == "" {
			return time.Time{}, err
		}
		t, err := time.ParseInLocation(layout, s, time.UTC)
		if err != nil {
			return time.Time{}, fmt.Errorf("property %s: %q does not match datetime-pattern %s", key, s, pattern)
		}
		return t, nil
	}
	lower, err := get("datetime-lower", true)
	if err != nil {
		return nil, err
	}
	upper, err := get("datetime-upper", false)
	if err != nil {
		return nil, err
	}
	if upper.IsZero() {
		upper = time.Now().UTC().AddDate(10, 0, 0)
	}
	if !upper.After(lower) {
		return nil, fmt.Errorf("datetime-upper must be after datetime-lower")
	}
	suffix, err := p.str("sharding-suffix-pattern", true)
	if err != nil {
		return nil, err
	}
	amount, err := p.int("datetime-interval-amount", 1, false)
	if err != nil {
		return nil, err
	}
	if amount < 1 {
		return nil, fmt.Errorf("property datetime-interval-amount: %d (want at least 1)", amount)
	}
	unit, _ := p.str("datetime-interval-unit", false)
	unit = strings.ToUpper(unit)
	if unit == "" {
		unit = "DAYS"
	}
	if !slices.Contains([]string{"HOURS", "DAYS", "MONTHS", "YEARS"}, unit) {
		return nil, fmt.Errorf("property datetime-interval-unit: %q (want HOURS, DAYS, MONTHS or YEARS)", unit)
	}
	return &intervalAlg{lower: lower, upper: upper, layout: javaLayouts.Replace(suffix), amount: int(amount), unit: unit}, nil
}

func (a *intervalAlg) typ() string { return "INTERVAL" }

// start is the beginning of the interval t falls in (intervals are
// counted from lower).
func (a *intervalAlg) start(t time.Time) time.Time {
	t = t.UTC()
	switch a.unit {
	case "HOURS":
		n := int(t.Sub(a.lower).Hours()) / a.amount * a.amount
		return a.lower.Add(time.Duration(n) * time.Hour)
	case "DAYS":
		n := int(t.Sub(a.lower).Hours()/24) / a.amount * a.amount
		return a.lower.AddDate(0, 0, n)
	case "MONTHS":
		m := (t.Year()-a.lower.Year())*12 + int(t.Month()-a.lower.Month())
		if t.Before(a.lower.AddDate(0, m, 0)) {
			m--
		}
		return a.lower.AddDate(0, m/a.amount*a.amount, 0)
	default:
		y := t.Year() - a.lower.Year()
		if t.Before(a.lower.AddDate(y, 0, 0)) {
			y--
		}
		return a.lower.AddDate(y/a.amount*a.amount, 0, 0)
	}
}

func (a *intervalAlg) next(t time.Time) time.Time {
	switch a.unit {
	case "HOURS":
		return t.Add(time.Duration(a.amount) * time.Hour)
	case "DAYS":
		return t.AddDate(0, 0, a.amount)
	case "MONTHS":
		return t.AddDate(0, a.amount, 0)
	}
	return t.AddDate(a.amount, 0, 0)
}

func (a *intervalAlg) target(all []string, t time.Time) (string, error) {
	if t.Before(a.lower) || !t.Before(a.upper) {
		return "", fmt.Errorf("time %s is outside datetime-lower..datetime-upper", t.Format(time.RFC3339))
	}
	suffix := a.start(t).Format(a.layout)
	for _, x := range all {
		if strings.HasSuffix(x, suffix) {
			return x, nil
		}
	}
	return "", fmt.Errorf("no target ends in %s (targets %s)", suffix, strings.Join(all, ", "))
}

func (a *intervalAlg) precise(all []string, vals map[string]Value) (string, error) {
	v, err := only(vals)
	if err != nil {
		return "", err
	}
	t, err := v.AsTime()
	if err != nil {
		return "", err
	}
	return a.target(all, t)
}

func (a *intervalAlg) ranged(all []string, _ string, c Cond) ([]string, bool, error) {
	from, to := a.lower, a.upper.Add(-time.Nanosecond)
	if c.Lo != nil {
		t, err := c.Lo.V.AsTime()
		if err != nil {
			return nil, false, nil
		}
		from = maxTime(from, t)
	}
	if c.Hi != nil {
		t, err := c.Hi.V.AsTime()
		if err != nil {
			return nil, false, nil
		}
		to = minTime(to, t)
	}
	out := []string{}
	for s := a.start(maxTime(from, a.lower)); !s.After(to); s = a.next(s) {
		if x, err := a.target(all, s); err == nil {
			out = appendNew(out, x)
		}
		if len(out) > 100_000 {
			return nil, false, nil
		}
	}
	return out, true, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
