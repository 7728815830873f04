package otlp

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/tangram-dev/tangram/trace/series"
)

// TestFromPrometheus gathers a registry holding each kind of metric and
// reads the result back as samples: the values Prometheus shows (the
// cumulative buckets included) come out unchanged.
func TestFromPrometheus(t *testing.T) {
	reg := prometheus.NewRegistry()
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "calls_total", Help: "Calls."}, []string{"code"})
	depth := prometheus.NewGauge(prometheus.GaugeOpts{Name: "depth", Help: "Depth."})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lat_seconds", Help: "Latency.", Buckets: []float64{0.1, 1}})
	gc := prometheus.NewSummary(prometheus.SummaryOpts{Name: "gc_seconds", Help: "GC.", Objectives: map[float64]float64{0.5: 0.05}})
	untyped := prometheus.NewUntypedFunc(prometheus.UntypedOpts{Name: "odd", Help: "Untyped."}, func() float64 { return 9 })
	reg.MustRegister(calls, depth, lat, gc, untyped)
	calls.WithLabelValues("200").Add(5)
	calls.WithLabelValues("500").Add(2)
	depth.Set(-3)
	for _, v := range []float64{0.05, 0.5, 0.7, 3, 4} {
		lat.Observe(v)
	}
	gc.Observe(0.25)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	start, now := metricsAt.Add(-time.Hour), metricsAt
	ms := FromPrometheus(fams, start, now)
	if len(ms) != 5 {
		t.Fatalf("%d metrics, want 5", len(ms))
	}
	rms := []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: ms}}}}
	// Through the wire and back, as a remote collector gets it.
	b, err := AppendMetricsRequest(nil, rms)
	if err != nil {
		t.Fatal(err)
	}
	if rms, err = DecodeMetrics(b); err != nil {
		t.Fatal(err)
	}
	samples, skipped := Samples(rms)
	if skipped != 0 {
		t.Fatalf("%d skipped", skipped)
	}
	got := sampleMap(samples)
	want := map[string]struct {
		kind series.Kind
		v    float64
	}{
		"calls_total,code=200":       {series.Counter, 5},
		"calls_total,code=500":       {series.Counter, 2},
		"depth":                      {series.Gauge, -3},
		"odd":                        {series.Gauge, 9},
		"lat_seconds_count":          {series.Counter, 5},
		"lat_seconds_sum":            {series.Counter, 8.25},
		"lat_seconds_bucket,le=0.1":  {series.Counter, 1},
		"lat_seconds_bucket,le=1":    {series.Counter, 3},
		"lat_seconds_bucket,le=+Inf": {series.Counter, 5},
		"gc_seconds_count":           {series.Counter, 1},
		"gc_seconds_sum":             {series.Counter, 0.25},
	}
	for k, w := range want {
		s, ok := got[k]
		if !ok {
			t.Errorf("no sample %s (have %v)", k, keys(got))
			continue
		}
		if s.Kind != w.kind || s.Value != w.v {
			t.Errorf("%s = %s %v, want %s %v", k, s.Kind, s.Value, w.kind, w.v)
		}
		if !s.Time.Equal(now) {
			t.Errorf("%s stamped %v, want %v", k, s.Time, now)
		}
		if s.Kind == series.Counter && (!s.Cumulative || !s.Start.Equal(start)) {
			t.Errorf("%s: cumulative %v from %v, want cumulative from %v", k, s.Cumulative, s.Start, start)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d samples, want %d: %v", len(got), len(want), keys(got))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
