package otlp

import (
	"math"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// FromPrometheus turns gathered Prometheus metric families into OTLP
// metrics, as an OpenTelemetry Collector's Prometheus receiver does:
// counters become cumulative monotonic sums starting at start (when the
// process began counting), gauges and untyped metrics gauges, histograms
// cumulative explicit-bucket histograms (Prometheus's cumulative bucket
// counts turned into per-bucket ones, the +Inf bucket the remainder) and
// summaries summaries. Every point is stamped now; label pairs become
// point attributes. Families of a type it does not know are left out.
func FromPrometheus(families []*dto.MetricFamily, start, now time.Time) []*metricspb.Metric {
	st, t := nanos(start), nanos(now)
	out := make([]*metricspb.Metric, 0, len(families))
	for _, f := range families {
		m := &metricspb.Metric{Name: f.GetName(), Description: f.GetHelp()}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			sum := &metricspb.Sum{IsMonotonic: true, AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}
			for _, pm := range f.GetMetric() {
				sum.DataPoints = append(sum.DataPoints, &metricspb.NumberDataPoint{Attributes: promAttrs(pm), StartTimeUnixNano: st, TimeUnixNano: t,
					Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: pm.GetCounter().GetValue()}})
			}
			m.Data = &metricspb.Metric_Sum{Sum: sum}
		case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
			g := &metricspb.Gauge{}
			for _, pm := range f.GetMetric() {
				v := pm.GetGauge().GetValue()
				if f.GetType() == dto.MetricType_UNTYPED {
					v = pm.GetUntyped().GetValue()
				}
				g.DataPoints = append(g.DataPoints, &metricspb.NumberDataPoint{Attributes: promAttrs(pm), TimeUnixNano: t,
					Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v}})
			}
			m.Data = &metricspb.Metric_Gauge{Gauge: g}
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := &metricspb.Histogram{AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}
			for _, pm := range f.GetMetric() {
				h.DataPoints = append(h.DataPoints, promHistogram(pm, st, t))
			}
			m.Data = &metricspb.Metric_Histogram{Histogram: h}
		case dto.MetricType_SUMMARY:
			s := &metricspb.Summary{}
			for _, pm := range f.GetMetric() {
				ps := pm.GetSummary()
				p := &metricspb.SummaryDataPoint{Attributes: promAttrs(pm), StartTimeUnixNano: st, TimeUnixNano: t,
					Count: ps.GetSampleCount(), Sum: ps.GetSampleSum()}
				for _, q := range ps.GetQuantile() {
					p.QuantileValues = append(p.QuantileValues, &metricspb.SummaryDataPoint_ValueAtQuantile{Quantile: q.GetQuantile(), Value: q.GetValue()})
				}
				s.DataPoints = append(s.DataPoints, p)
			}
			m.Data = &metricspb.Metric_Summary{Summary: s}
		default:
			continue
		}
		out = append(out, m)
	}
	return out
}

// promHistogram is one Prometheus histogram as an OTLP point. Prometheus
// buckets are cumulative and may or may not list +Inf; OTLP's are counts
// per bucket with the last (above every bound) implicit.
func promHistogram(pm *dto.Metric, st, t uint64) *metricspb.HistogramDataPoint {
	ph := pm.GetHistogram()
	sum := ph.GetSampleSum()
	p := &metricspb.HistogramDataPoint{Attributes: promAttrs(pm), StartTimeUnixNano: st, TimeUnixNano: t,
		Count: ph.GetSampleCount(), Sum: &sum}
	buckets := append([]*dto.Bucket(nil), ph.GetBucket()...)
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
	var below uint64
	for _, b := range buckets {
		if math.IsInf(b.GetUpperBound(), 1) {
			break
		}
		c := b.GetCumulativeCount()
		if c < below { // not cumulative: a broken exposition; keep it monotone
			c = below
		}
		p.ExplicitBounds = append(p.ExplicitBounds, b.GetUpperBound())
		p.BucketCounts = append(p.BucketCounts, c-below)
		below = c
	}
	rest := uint64(0)
	if p.Count > below {
		rest = p.Count - below
	}
	p.BucketCounts = append(p.BucketCounts, rest)
	return p
}

func promAttrs(pm *dto.Metric) []*commonpb.KeyValue {
	if len(pm.GetLabel()) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, 0, len(pm.GetLabel()))
	for _, l := range pm.GetLabel() {
		out = append(out, &commonpb.KeyValue{Key: l.GetName(), Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: l.GetValue()}}})
	}
	return out
}

func nanos(t time.Time) uint64 {
	if t.IsZero() || t.UnixNano() < 0 {
		return 0
	}
	return uint64(t.UnixNano())
}
