package otlp

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/tangram-dev/tangram/trace/series"
)

// Metrics arrive far less often than spans, so they are read into OTLP's
// generated message types (the data-model package only: it links no
// gRPC) and turned into series samples.

// DecodeMetrics reads a protobuf ExportMetricsServiceRequest.
func DecodeMetrics(b []byte) ([]*metricspb.ResourceMetrics, error) {
	var out []*metricspb.ResourceMetrics
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 || typ != protowire.BytesType { // resource_metrics
			return nil
		}
		rm := &metricspb.ResourceMetrics{}
		if err := proto.Unmarshal(v, rm); err != nil {
			return fmt.Errorf("otlp: resource_metrics: %w", err)
		}
		out = append(out, rm)
		return nil
	})
	return out, err
}

// DecodeMetricsJSON reads OTLP/HTTP's JSON ExportMetricsServiceRequest.
func DecodeMetricsJSON(b []byte) ([]*metricspb.ResourceMetrics, error) {
	var req struct {
		ResourceMetrics []json.RawMessage `json:"resourceMetrics"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("otlp: metrics JSON: %w", err)
	}
	out := make([]*metricspb.ResourceMetrics, 0, len(req.ResourceMetrics))
	for i, raw := range req.ResourceMetrics {
		rm := &metricspb.ResourceMetrics{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, rm); err != nil {
			return nil, fmt.Errorf("otlp: metrics JSON: resourceMetrics[%d]: %w", i, err)
		}
		out = append(out, rm)
	}
	return out, nil
}

// AppendMetricsRequest appends rms as a protobuf ExportMetricsServiceRequest.
func AppendMetricsRequest(b []byte, rms []*metricspb.ResourceMetrics) ([]byte, error) {
	for _, rm := range rms {
		m, err := proto.Marshal(rm)
		if err != nil {
			return nil, fmt.Errorf("otlp: encode metrics: %w", err)
		}
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b, nil
}

// Samples turns metrics into series samples. A metric is named as sent;
// its data points' attributes and its resource's service.name (label
// service) and service.instance.id (label instance) are its labels. Sums
// that are monotonic are counters (cumulative or delta, as sent), other
// sums and gauges are gauges; histograms (explicit and exponential) and
// summaries become name_count and name_sum counters, and explicit
// histograms also name_bucket{le} counters as Prometheus writes them.
// Points with no value are skipped; the count of them is returned.
func Samples(rms []*metricspb.ResourceMetrics) (out []series.Sample, skipped int) {
	for _, rm := range rms {
		var res []series.Label
		for _, kv := range rm.GetResource().GetAttributes() {
			switch kv.GetKey() {
			case "service.name":
				res = append(res, series.Label{Name: "service", Value: attrText(kv.GetValue())})
			case "service.instance.id":
				res = append(res, series.Label{Name: "instance", Value: attrText(kv.GetValue())})
			}
		}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				var n int
				out, n = metricSamples(out, m, res)
				skipped += n
			}
		}
	}
	return out, skipped
}

func metricSamples(out []series.Sample, m *metricspb.Metric, res []series.Label) ([]series.Sample, int) {
	name := m.GetName()
	skipped := 0
	labels := func(attrs []*commonpb.KeyValue, extra ...series.Label) []series.Label {
		ls := make([]series.Label, 0, len(res)+len(attrs)+len(extra))
		ls = append(ls, res...)
		for _, kv := range attrs {
			ls = append(ls, series.Label{Name: kv.GetKey(), Value: attrText(kv.GetValue())})
		}
		ls = append(ls, extra...)
		sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
		return ls
	}
	number := func(p *metricspb.NumberDataPoint) (float64, bool) {
		switch v := p.GetValue().(type) {
		case *metricspb.NumberDataPoint_AsDouble:
			return v.AsDouble, true
		case *metricspb.NumberDataPoint_AsInt:
			return float64(v.AsInt), true
		}
		return 0, false
	}
	at := func(nanos uint64) time.Time {
		if nanos == 0 || nanos > math.MaxInt64 {
			return time.Time{}
		}
		return time.Unix(0, int64(nanos))
	}
	counter := func(name string, ls []series.Label, t, start uint64, v float64, cumulative bool) series.Sample {
		return series.Sample{Name: name, Labels: ls, Kind: series.Counter, Time: at(t), Start: at(start), Value: v, Cumulative: cumulative}
	}
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Gauge:
		for _, p := range d.Gauge.GetDataPoints() {
			v, ok := number(p)
			if !ok {
				skipped++
				continue
			}
			out = append(out, series.Sample{Name: name, Labels: labels(p.GetAttributes()), Kind: series.Gauge, Time: at(p.GetTimeUnixNano()), Value: v})
		}
	case *metricspb.Metric_Sum:
		cumulative := d.Sum.GetAggregationTemporality() != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
		for _, p := range d.Sum.GetDataPoints() {
			v, ok := number(p)
			if !ok {
				skipped++
				continue
			}
			if !d.Sum.GetIsMonotonic() {
				out = append(out, series.Sample{Name: name, Labels: labels(p.GetAttributes()), Kind: series.Gauge, Time: at(p.GetTimeUnixNano()), Value: v})
				continue
			}
			out = append(out, counter(name, labels(p.GetAttributes()), p.GetTimeUnixNano(), p.GetStartTimeUnixNano(), v, cumulative))
		}
	case *metricspb.Metric_Histogram:
		cumulative := d.Histogram.GetAggregationTemporality() != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
		for _, p := range d.Histogram.GetDataPoints() {
			t, st := p.GetTimeUnixNano(), p.GetStartTimeUnixNano()
			out = append(out, counter(name+"_count", labels(p.GetAttributes()), t, st, float64(p.GetCount()), cumulative))
			if p.Sum != nil {
				out = append(out, counter(name+"_sum", labels(p.GetAttributes()), t, st, p.GetSum(), cumulative))
			}
			bounds, counts := p.GetExplicitBounds(), p.GetBucketCounts()
			if len(counts) != len(bounds)+1 {
				if len(counts) > 0 {
					skipped++ // malformed buckets: count and sum kept
				}
				continue
			}
			var running uint64
			for i, c := range counts {
				running += c
				le := "+Inf"
				if i < len(bounds) {
					le = strconv.FormatFloat(bounds[i], 'g', -1, 64)
				}
				out = append(out, counter(name+"_bucket", labels(p.GetAttributes(), series.Label{Name: "le", Value: le}), t, st, float64(running), cumulative))
			}
		}
	case *metricspb.Metric_ExponentialHistogram:
		cumulative := d.ExponentialHistogram.GetAggregationTemporality() != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
		for _, p := range d.ExponentialHistogram.GetDataPoints() {
			t, st := p.GetTimeUnixNano(), p.GetStartTimeUnixNano()
			out = append(out, counter(name+"_count", labels(p.GetAttributes()), t, st, float64(p.GetCount()), cumulative))
			if p.Sum != nil {
				out = append(out, counter(name+"_sum", labels(p.GetAttributes()), t, st, p.GetSum(), cumulative))
			}
		}
	case *metricspb.Metric_Summary:
		for _, p := range d.Summary.GetDataPoints() {
			t, st := p.GetTimeUnixNano(), p.GetStartTimeUnixNano()
			out = append(out, counter(name+"_count", labels(p.GetAttributes()), t, st, float64(p.GetCount()), true),
				counter(name+"_sum", labels(p.GetAttributes()), t, st, p.GetSum(), true))
		}
	default:
		skipped++
	}
	return out, skipped
}

// attrText is an attribute value as a label's text.
func attrText(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_BytesValue:
		return fmt.Sprintf("%x", x.BytesValue)
	case nil:
		return ""
	}
	b, _ := protojson.Marshal(v)
	return string(b)
}
