package otlp

import (
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/tangram-dev/tangram/trace/series"
)

var metricsAt = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

// metricsRequest is one of each kind of metric.
func metricsRequest() []*metricspb.ResourceMetrics {
	t := uint64(metricsAt.UnixNano())
	st := uint64(metricsAt.Add(-time.Hour).UnixNano())
	sum := 12.5
	num := func(v float64, attrs ...*commonpb.KeyValue) *metricspb.NumberDataPoint {
		return &metricspb.NumberDataPoint{Attributes: attrs, StartTimeUnixNano: st, TimeUnixNano: t, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v}}
	}
	return []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kvStr("service.name", "shop"), kvStr("service.instance.id", "i-1"), kvStr("host.name", "h")}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
			{Name: "queue.depth", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{
				num(3, kvStr("queue", "a")),
				{TimeUnixNano: t, Value: &metricspb.NumberDataPoint_AsInt{AsInt: 4}},
				{TimeUnixNano: t}, // no value: skipped
			}}}},
			{Name: "requests", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{IsMonotonic: true,
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				DataPoints:             []*metricspb.NumberDataPoint{num(100, kvStr("code", "200"))}}}},
			{Name: "inflight", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{DataPoints: []*metricspb.NumberDataPoint{num(7)}}}},
			{Name: "latency", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA,
				DataPoints: []*metricspb.HistogramDataPoint{{StartTimeUnixNano: st, TimeUnixNano: t, Count: 6, Sum: &sum,
					ExplicitBounds: []float64{0.1, 1}, BucketCounts: []uint64{1, 3, 2}}}}}},
			{Name: "gc", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: []*metricspb.SummaryDataPoint{
				{TimeUnixNano: t, Count: 2, Sum: 0.5}}}}},
		}}},
	}}
}

func sampleMap(ss []series.Sample) map[string]series.Sample {
	out := map[string]series.Sample{}
	for _, s := range ss {
		var b strings.Builder
		b.WriteString(s.Name)
		for _, l := range s.Labels {
			b.WriteString("," + l.Name + "=" + l.Value)
		}
		out[b.String()] = s
	}
	return out
}

func checkSamples(t *testing.T, rms []*metricspb.ResourceMetrics) {
	t.Helper()
	ss, skipped := Samples(rms)
	if skipped != 1 {
		t.Errorf("skipped %d, want 1 (the point with no value)", skipped)
	}
	m := sampleMap(ss)
	want := map[string]struct {
		kind       series.Kind
		v          float64
		cumulative bool
	}{
		"queue.depth,instance=i-1,queue=a,service=shop":    {series.Gauge, 3, false},
		"queue.depth,instance=i-1,service=shop":            {series.Gauge, 4, false},
		"requests,code=200,instance=i-1,service=shop":      {series.Counter, 100, true},
		"inflight,instance=i-1,service=shop":               {series.Gauge, 7, false},
		"latency_count,instance=i-1,service=shop":          {series.Counter, 6, false},
		"latency_sum,instance=i-1,service=shop":            {series.Counter, 12.5, false},
		"latency_bucket,instance=i-1,le=0.1,service=shop":  {series.Counter, 1, false},
		"latency_bucket,instance=i-1,le=1,service=shop":    {series.Counter, 4, false},
		"latency_bucket,instance=i-1,le=+Inf,service=shop": {series.Counter, 6, false},
		"gc_count,instance=i-1,service=shop":               {series.Counter, 2, true},
		"gc_sum,instance=i-1,service=shop":                 {series.Counter, 0.5, true},
	}
	if len(m) != len(want) {
		t.Errorf("%d samples, want %d: %v", len(m), len(want), m)
	}
	for k, w := range want {
		s, ok := m[k]
		if !ok {
			t.Errorf("no sample %s", k)
			continue
		}
		if s.Kind != w.kind || s.Value != w.v || s.Cumulative != w.cumulative || !s.Time.Equal(metricsAt) {
			t.Errorf("%s: %+v, want %+v", k, s, w)
		}
	}
}

func TestDecodeMetrics(t *testing.T) {
	b, err := AppendMetricsRequest(nil, metricsRequest())
	if err != nil {
		t.Fatal(err)
	}
	rms, err := DecodeMetrics(b)
	if err != nil {
		t.Fatal(err)
	}
	checkSamples(t, rms)
	if _, err := DecodeMetrics([]byte{0x0a, 0x03, 0x0a, 0x05, 0x00}); err == nil {
		t.Fatal("a truncated resource_metrics decoded")
	}
}

// metricsJSON is the same request in OTLP/HTTP's JSON (as OTel SDKs
// write it: lowerCamelCase, 64-bit integers as strings, enums as numbers).
const metricsJSON = `{"resourceMetrics":[{"resource":{"attributes":[
 {"key":"service.name","value":{"stringValue":"shop"}},{"key":"service.instance.id","value":{"stringValue":"i-1"}}]},
 "scopeMetrics":[{"metrics":[
  {"name":"queue.depth","gauge":{"dataPoints":[{"attributes":[{"key":"queue","value":{"stringValue":"a"}}],"timeUnixNano":"1796637600000000000","asDouble":3},
   {"timeUnixNano":"1796637600000000000","asInt":"4"},{"timeUnixNano":"1796637600000000000"}]}},
  {"name":"requests","sum":{"isMonotonic":true,"aggregationTemporality":2,"dataPoints":[{"attributes":[{"key":"code","value":{"stringValue":"200"}}],
   "startTimeUnixNano":"1796634000000000000","timeUnixNano":"1796637600000000000","asDouble":100}]}},
  {"name":"inflight","sum":{"dataPoints":[{"timeUnixNano":"1796637600000000000","asDouble":7}]}},
  {"name":"latency","histogram":{"aggregationTemporality":1,"dataPoints":[{"timeUnixNano":"1796637600000000000","count":"6","sum":12.5,
   "explicitBounds":[0.1,1],"bucketCounts":["1","3","2"]}]}},
  {"name":"gc","summary":{"dataPoints":[{"timeUnixNano":"1796637600000000000","count":"2","sum":0.5}]}}
 ]}]}]}`

func TestDecodeMetricsJSON(t *testing.T) {
	if metricsAt.UnixNano() != 1796637600000000000 {
		t.Fatalf("fix the JSON's times: %d", metricsAt.UnixNano())
	}
	rms, err := DecodeMetricsJSON([]byte(metricsJSON))
	if err != nil {
		t.Fatal(err)
	}
	checkSamples(t, rms)
	for _, bad := range []string{`{`, `{"resourceMetrics":[{"scopeMetrics":7}]}`, `[]`} {
		if _, err := DecodeMetricsJSON([]byte(bad)); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

// FuzzDecodeMetrics: any bytes decode or fail with an error; what decodes
// turns into samples without a panic.
func FuzzDecodeMetrics(f *testing.F) {
	b, _ := AppendMetricsRequest(nil, metricsRequest())
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		rms, err := DecodeMetrics(b)
		if err != nil {
			return
		}
		Samples(rms)
	})
}

// FuzzDecodeMetricsJSON: the same for OTLP/JSON.
func FuzzDecodeMetricsJSON(f *testing.F) {
	f.Add([]byte(metricsJSON))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rms, err := DecodeMetricsJSON(b)
		if err != nil {
			return
		}
		Samples(rms)
	})
}
