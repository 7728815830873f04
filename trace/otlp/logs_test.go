package otlp

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/tangram-dev/tangram/trace/store"
)

var (
	logTrace = []byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	logSpan  = []byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
)

// logsRequest is an ExportLogsServiceRequest: a record under a span, an
// error without a severity text, a record with no trace (not kept).
func logsRequest(t testing.TB) []byte {
	t.Helper()
	at := uint64(metricsAt.UnixNano())
	rl := &logspb.ResourceLogs{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kvStr("service.name", "shop"), kvStr("host.name", "h1")}},
		ScopeLogs: []*logspb.ScopeLogs{{
			Scope: &commonpb.InstrumentationScope{Name: "app/log", Version: "1.0"},
			LogRecords: []*logspb.LogRecord{
				{TimeUnixNano: at, SeverityNumber: logspb.SeverityNumber_SEVERITY_NUMBER_INFO, SeverityText: "Information",
					Body:       &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "order 42 paid"}},
					Attributes: []*commonpb.KeyValue{kvStr("order", "42")}, TraceId: logTrace, SpanId: logSpan},
				{ObservedTimeUnixNano: at + 5, SeverityNumber: logspb.SeverityNumber_SEVERITY_NUMBER_ERROR2, EventName: "payment.failed",
					Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}, TraceId: logTrace},
				{TimeUnixNano: at, Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "no trace"}}},
			},
		}},
	}
	m, err := proto.Marshal(rl)
	if err != nil {
		t.Fatal(err)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), m)
}

const logsJSON = `{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}},{"key":"host.name","value":{"stringValue":"h1"}}]},
"scopeLogs":[{"scope":{"name":"app/log","version":"1.0"},"logRecords":[
{"timeUnixNano":"1796637600000000000","severityNumber":9,"severityText":"Information","body":{"stringValue":"order 42 paid"},"attributes":[{"key":"order","value":{"stringValue":"42"}}],"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7"},
{"observedTimeUnixNano":"1796637600000000005","severityNumber":18,"eventName":"payment.failed","body":{"intValue":"7"},"traceId":"4bf92f3577b34da6a3ce929d0e0e4736"},
{"timeUnixNano":"1796637600000000000","body":{"stringValue":"no trace"}}]}]}]}`

func checkLogs(t *testing.T, recs []store.Span, untraced int) {
	t.Helper()
	if untraced != 1 || len(recs) != 2 {
		t.Fatalf("%d records, %d untraced; want 2 and 1", len(recs), untraced)
	}
	at := uint64(metricsAt.UnixNano())
	info, errRec := recs[0], recs[1]
	attrs := func(s store.Span) string {
		var b []string
		for _, a := range s.Attrs {
			b = append(b, a.Key+"="+a.Value.Text())
		}
		return strings.Join(b, ",")
	}
	if info.Kind != store.KindLog || info.Service != "shop" || info.Name != "order 42 paid" || info.StatusMessage != "Information" ||
		info.Status != store.StatusUnset || info.StartUnixNano != at || [16]byte(info.TraceID) != [16]byte(logTrace) || [8]byte(info.SpanID) != [8]byte(logSpan) {
		t.Errorf("info record %+v", info)
	}
	if got := attrs(info); got != "order=42,log.severity_number=9,otel.scope.name=app/log,otel.scope.version=1.0" {
		t.Errorf("info attributes %s", got)
	}
	if len(info.Resource) != 1 || info.Resource[0].Key != "host.name" {
		t.Errorf("resource %+v", info.Resource)
	}
	// No severity text: the number's range names it; from ERROR up the
	// record is an error (tail sampling keeps its trace); no time: the
	// observed time.
	if errRec.StatusMessage != "ERROR" || errRec.Status != store.StatusError || errRec.Name != "7" || errRec.StartUnixNano != at+5 ||
		errRec.SpanID != (store.SpanID{}) {
		t.Errorf("error record %+v", errRec)
	}
	if got := attrs(errRec); got != "event.name=payment.failed,log.severity_number=18,otel.scope.name=app/log,otel.scope.version=1.0" {
		t.Errorf("error attributes %s", got)
	}
}

func TestDecodeLogs(t *testing.T) {
	recs, untraced, err := DecodeLogs(nil, logsRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	checkLogs(t, recs, untraced)
}

func TestDecodeLogsJSON(t *testing.T) {
	if metricsAt.UnixNano() != 1796637600000000000 {
		t.Fatalf("logsJSON's times are not metricsAt (%d)", metricsAt.UnixNano())
	}
	recs, untraced, err := DecodeLogsJSON(nil, []byte(logsJSON))
	if err != nil {
		t.Fatal(err)
	}
	checkLogs(t, recs, untraced)
}

// TestDecodeLogsBadInput: malformed exports are refused with the problem
// named.
func TestDecodeLogsBadInput(t *testing.T) {
	short := func() []byte {
		m, _ := proto.Marshal(&logspb.ResourceLogs{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{{TraceId: []byte{1, 2, 3}}}}}})
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), m)
	}()
	if _, _, err := DecodeLogs(nil, short); err == nil || !strings.Contains(err.Error(), "trace_id of 3 bytes") {
		t.Errorf("a 3-byte trace ID: %v", err)
	}
	if _, _, err := DecodeLogs(nil, []byte{0x0a, 0x05, 0x01}); err == nil {
		t.Error("a truncated message decoded")
	}
	if _, _, err := DecodeLogsJSON(nil, []byte(`{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}`)); err == nil || !strings.Contains(err.Error(), "traceId") {
		t.Errorf("a bad JSON trace ID: %v", err)
	}
}

// FuzzDecodeLogs: any bytes decode or fail with an error, never a panic.
func FuzzDecodeLogs(f *testing.F) {
	f.Add(logsRequest(f))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, untraced, err := DecodeLogs(nil, b)
		if err == nil && untraced < 0 {
			t.Fatalf("%d untraced", untraced)
		}
		for _, r := range recs {
			if r.Kind != store.KindLog || r.TraceID == (store.TraceID{}) {
				t.Fatalf("record %+v", r)
			}
		}
	})
}

// FuzzDecodeLogsJSON: the same for OTLP/JSON.
func FuzzDecodeLogsJSON(f *testing.F) {
	f.Add([]byte(logsJSON))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, _, err := DecodeLogsJSON(nil, b)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.Kind != store.KindLog || r.TraceID == (store.TraceID{}) {
				t.Fatalf("record %+v", r)
			}
		}
	})
}
