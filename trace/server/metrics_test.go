package server

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/otlp"
)

// counterRequest is a cumulative counter "orders" of service svc at value
// v (started an hour ago) and a gauge "queue_depth" at v/10.
func counterRequest(t *testing.T, svc string, at time.Time, v float64) []byte {
	t.Helper()
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	now, start := uint64(at.UnixNano()), uint64(at.Add(-time.Hour).UnixNano())
	rm := &metricspb.ResourceMetrics{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", svc)}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
			{Name: "orders", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{IsMonotonic: true,
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				DataPoints: []*metricspb.NumberDataPoint{{Attributes: []*commonpb.KeyValue{str("region", "eu")}, StartTimeUnixNano: start, TimeUnixNano: now,
					Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v}}}}}},
			{Name: "queue_depth", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{
				{TimeUnixNano: now, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v / 10}},
				{TimeUnixNano: now}, // no value: refused
			}}}},
		}}},
	}
	b, err := otlp.AppendMetricsRequest(nil, []*metricspb.ResourceMetrics{rm})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func postMetrics(t *testing.T, s *Server, body []byte, ct string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+s.OTLPAddr()+"/v1/metrics", ct, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsReceivedAndQueried: OTLP metrics over HTTP (protobuf and
// JSON) and gRPC become series the API answers minute by minute, with
// refused points answered as a partial success; the series survive a
// restart.
func TestMetricsReceivedAndQueried(t *testing.T) {
	dir := t.TempDir()
	s, api := collector(t, Config{Dir: dir})
	now := time.Now()
	// Baseline, then +30 within the same minute over gRPC (the increase).
	if code, body := postMetrics(t, s, counterRequest(t, "shop", now, 100), "application/x-protobuf"); code != 200 || len(body) == 0 {
		t.Fatalf("protobuf: %d %q", code, body)
	}
	reply, status, msg := grpcCall(t, s.OTLPGRPCAddr(), grpcMetricsPath, counterRequest(t, "shop", now, 130), false)
	if status != "0" {
		t.Fatalf("gRPC metrics: status %s %s", status, msg)
	}
	// The reply's partial success counts the point without a value.
	if n, ok := rejectedCount(reply); !ok || n != 1 {
		t.Fatalf("gRPC reply %x: rejected %d, want 1", reply, n)
	}
	doc := `{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},
	"scopeMetrics":[{"metrics":[{"name":"queue_depth","gauge":{"dataPoints":[{"timeUnixNano":"` + itoa(now.UnixNano()) + `","asInt":"42"}]}}]}]}]}`
	if code, body := postMetrics(t, s, []byte(doc), "application/json"); code != 200 || strings.TrimSpace(body) != "{}" {
		t.Fatalf("JSON: %d %q", code, body)
	}
	if code, body := postMetrics(t, s, []byte(`{"resourceMetrics":7}`), "application/json"); code != 400 || !strings.Contains(body, "metrics JSON") {
		t.Fatalf("bad JSON: %d %q", code, body)
	}
	if code, body := postMetrics(t, s, []byte{0x0a, 0x09, 0x01}, "application/x-protobuf"); code != 400 {
		t.Fatalf("bad protobuf: %d %q", code, body)
	}

	var names trace.MetricsReply
	if code := get(t, api+apiBase+"/metrics", &names); code != 200 || len(names.Names) != 2 || names.Names[0].Name != "orders" ||
		names.Names[0].Kind != "counter" || names.Names[1].Series != 2 || names.Refused != 2 {
		t.Fatalf("names: %d %+v", code, names)
	}
	var sr trace.MetricSeriesReply
	if code := get(t, api+apiBase+"/metrics/series?name=orders&match=region=eu&minutes=5", &sr); code != 200 || len(sr.Series) != 1 ||
		sr.Series[0].Labels["service"] != "shop" || len(sr.Series[0].Points) != 1 || sr.Series[0].Points[0].Value != 30 {
		t.Fatalf("orders: %d %+v", code, sr)
	}
	sr = trace.MetricSeriesReply{}
	if code := get(t, api+apiBase+"/metrics/series?name=queue_depth&match=service=web", &sr); code != 200 || len(sr.Series) != 1 || sr.Series[0].Points[0].Value != 42 {
		t.Fatalf("queue_depth: %d %+v", code, sr)
	}
	for _, bad := range []string{"", "?name=orders&match=eu", "?name=orders&minutes=0", "?name=orders&minutes=99999"} {
		if code := get(t, api+apiBase+"/metrics/series"+bad, nil); code != 400 {
			t.Errorf("%q: %d, want 400", bad, code)
		}
	}

	// A restart keeps the series, and the counter's baseline.
	s.Close()
	s2, api2 := collector(t, Config{Dir: dir})
	if code, _ := postMetrics(t, s2, counterRequest(t, "shop", now, 135), "application/x-protobuf"); code != 200 {
		t.Fatal(code)
	}
	sr = trace.MetricSeriesReply{}
	if code := get(t, api2+apiBase+"/metrics/series?name=orders", &sr); code != 200 || len(sr.Series) != 1 || sr.Series[0].Points[len(sr.Series[0].Points)-1].Value != 35 {
		t.Fatalf("after a restart: %d %+v", code, sr)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// rejectedCount reads an Export reply's partial_success.rejected count.
func rejectedCount(reply []byte) (int, bool) {
	num, typ, n := protowire.ConsumeTag(reply)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		return 0, false
	}
	ps, m := protowire.ConsumeBytes(reply[n:])
	if m < 0 {
		return 0, false
	}
	num, typ, n = protowire.ConsumeTag(ps)
	if n < 0 || num != 1 || typ != protowire.VarintType {
		return 0, false
	}
	v, _ := protowire.ConsumeVarint(ps[n:])
	return int(v), true
}
