// Package alert is the alert rules of the trace collector: thresholds on
// a service's (or an operation's) error ratio, latency percentiles and
// throughput over a window of minutes, and multi-window burn rates of an
// error budget, evaluated against the figures computed at ingest.
package alert

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/rollup"
)

// Rule and Metric are the SDK's types (package trace), which the API
// and the CLI share.
type (
	Rule   = trace.AlertRule
	Metric = trace.AlertMetric
)

// The metrics.
const (
	ErrorRatio  = trace.ErrorRatio
	P50         = trace.P50
	P95         = trace.P95
	P99         = trace.P99
	CallsPerMin = trace.CallsPerMin
	BurnRate    = trace.BurnRate
)

var metrics = map[Metric]bool{ErrorRatio: true, P50: true, P95: true, P99: true, CallsPerMin: true, BurnRate: true}

// validName: 1-64 letters, digits, '.', '_' or '-', not starting with
// punctuation.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, c := range []byte(s) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

// Validate checks a rule, naming the field at fault. window is the
// collector's window in minutes.
func Validate(r *Rule, window int) error {
	var errs []error
	if !validName(r.Name) {
		errs = append(errs, fmt.Errorf("alert: name %q: want 1-64 letters, digits, '.', '_' or '-'", r.Name))
	}
	if strings.TrimSpace(r.Service) == "" {
		errs = append(errs, errors.New("alert: service is required"))
	}
	if !metrics[r.Metric] {
		errs = append(errs, fmt.Errorf("alert: metric %q: want error_ratio, p50_ms, p95_ms, p99_ms, calls_per_min or burn_rate", r.Metric))
	}
	if r.Threshold < 0 {
		errs = append(errs, fmt.Errorf("alert: threshold %v cannot be negative", r.Threshold))
	}
	if r.Metric == ErrorRatio && r.Threshold > 1 {
		errs = append(errs, fmt.Errorf("alert: an error_ratio threshold is 0 to 1, not %v", r.Threshold))
	}
	if r.Window < 0 || r.Window > window {
		errs = append(errs, fmt.Errorf("alert: window_minutes %d: want 1 to %d", r.Window, window))
	}
	if r.Metric == BurnRate {
		if r.Objective <= 0 || r.Objective >= 1 {
			errs = append(errs, fmt.Errorf("alert: a burn_rate rule needs an objective between 0 and 1 (e.g. 0.999), not %v", r.Objective))
		}
		if r.Below {
			errs = append(errs, errors.New("alert: a burn_rate rule fires above its threshold; below is not for it"))
		}
	}
	if r.ShortWindow < 0 || r.ShortWindow > window {
		errs = append(errs, fmt.Errorf("alert: short_window_minutes %d: want 1 to %d", r.ShortWindow, window))
	}
	if r.MinCalls < 0 {
		errs = append(errs, errors.New("alert: min_calls cannot be negative"))
	}
	if r.Webhook != "" {
		if u, err := url.Parse(r.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("alert: webhook %q: want an http(s) URL", r.Webhook))
		}
	}
	for _, e := range r.Emails {
		if !strings.Contains(e, "@") || strings.ContainsAny(e, " \r\n<>") {
			errs = append(errs, fmt.Errorf("alert: e-mail %q is not an address", e))
		}
	}
	return errors.Join(errs...)
}

// WithDefaults fills the defaults in.
func WithDefaults(r Rule) Rule {
	if r.Window == 0 {
		r.Window = 5
	}
	if r.Metric == BurnRate && r.ShortWindow == 0 {
		r.ShortWindow = max(1, r.Window/12)
	}
	if r.MinCalls == 0 {
		r.MinCalls = 1
	}
	return r
}

// Reading is a rule's evaluation.
type Reading struct {
	Value  float64 // the metric (the long window's, for burn_rate)
	Short  float64 // burn_rate: the short window's burn rate
	Calls  uint64  // calls in the window
	Firing bool
}

// Source is where the figures come from (the collector's rollup).
type Source interface {
	Series(service, operation string, minutes int) []rollup.Point
}

// sum adds the last minutes of a series.
func sum(src Source, r *Rule, minutes int) rollup.Stats {
	var st rollup.Stats
	for _, p := range src.Series(r.Service, r.Operation, minutes) {
		st.Merge(&p.Stats)
	}
	return st
}

// Evaluate reads the rule's metric now.
func Evaluate(src Source, r Rule) Reading {
	r = WithDefaults(r)
	st := sum(src, &r, r.Window)
	rd := Reading{Calls: st.Calls}
	enough := st.Calls >= uint64(r.MinCalls)
	switch r.Metric {
	case ErrorRatio:
		if st.Calls > 0 {
			rd.Value = float64(st.Errors) / float64(st.Calls)
		}
	case P50, P95, P99:
		q := map[Metric]float64{P50: 0.5, P95: 0.95, P99: 0.99}[r.Metric]
		rd.Value = st.Hist.Quantile(q) / float64(time.Millisecond)
	case CallsPerMin:
		rd.Value = float64(st.Calls) / float64(r.Window)
		enough = true // a drop to nothing is what a throughput rule is for
	case BurnRate:
		budget := 1 - r.Objective
		if st.Calls > 0 {
			rd.Value = float64(st.Errors) / float64(st.Calls) / budget
		}
		short := sum(src, &r, r.ShortWindow)
		if short.Calls > 0 {
			rd.Short = float64(short.Errors) / float64(short.Calls) / budget
		}
		rd.Firing = enough && rd.Value >= r.Threshold && rd.Short >= r.Threshold
		return rd
	}
	if r.Below {
		rd.Firing = enough && rd.Value < r.Threshold
	} else {
		rd.Firing = enough && rd.Value >= r.Threshold
	}
	return rd
}
