package server

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/store"
)

// logsExport is an ExportLogsServiceRequest of service svc: records of
// trace tid(n) under span span (0: none), and untraced records with no
// trace at all.
func logsExport(t *testing.T, svc string, n int, span byte, bodies []string, untraced int) []byte {
	t.Helper()
	traceID, _ := store.ParseTraceID(tid(n))
	var recs []*logspb.LogRecord
	for i, b := range bodies {
		r := &logspb.LogRecord{TimeUnixNano: uint64(time.Now().Add(time.Duration(i) * time.Millisecond).UnixNano()),
			SeverityNumber: logspb.SeverityNumber_SEVERITY_NUMBER_INFO,
			Body:           &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: b}}, TraceId: traceID[:]}
		if span != 0 {
			r.SpanId = []byte{span, 0, 0, 0, 0, 0, 0, 1}
		}
		recs = append(recs, r)
	}
	for range untraced {
		recs = append(recs, &logspb.LogRecord{Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "no trace"}}})
	}
	m, err := proto.Marshal(&logspb.ResourceLogs{
		Resource:  &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: svc}}}}},
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: recs}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), m)
}

func postLogs(t *testing.T, s *Server, body []byte, ct string) (int, []byte) {
	t.Helper()
	resp, err := http.Post("http://"+s.OTLPAddr()+"/v1/logs", ct, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestLogsKeptWithTheirTrace: OTLP logs over HTTP (protobuf, JSON) and
// gRPC are kept with their trace — the trace API answers them beside its
// spans, each with the span it was written under — while records without
// a trace are refused as a partial success and counted; a log record is
// no span to searches or the RED figures.
func TestLogsKeptWithTheirTrace(t *testing.T) {
	s, api := collector(t, Config{})
	if code, _ := post(t, s, exportRequest(t, "pay", 1, 1), "application/x-protobuf", ""); code != 200 {
		t.Fatalf("traces: %d", code)
	}
	code, reply := postLogs(t, s, logsExport(t, "pay", 1, 2, []string{"charged card", "sent receipt"}, 2), "application/x-protobuf")
	if n, ok := rejectedCount(reply); code != 200 || !ok || n != 2 {
		t.Fatalf("protobuf logs: %d, reply %x: rejected %d, want the 2 untraced", code, reply, n)
	}
	doc := `{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"pay"}}]},"scopeLogs":[{"logRecords":[
{"timeUnixNano":"` + itoa(time.Now().UnixNano()) + `","severityNumber":17,"body":{"stringValue":"card declined once"},"traceId":"` + tid(1) + `","spanId":"0300000000000001"}]}]}]}`
	if code, reply := postLogs(t, s, []byte(doc), "application/json"); code != 200 || strings.Contains(string(reply), "partialSuccess") {
		t.Fatalf("JSON logs: %d %s", code, reply)
	}
	if _, status, msg := grpcCall(t, s.OTLPGRPCAddr(), grpcLogsPath, logsExport(t, "pay", 1, 0, []string{"request done"}, 0), false); status != "0" {
		t.Fatalf("gRPC logs: status %s %s", status, msg)
	}
	var tr trace.TraceReply
	wait.For(t, 10*time.Second, "the trace's spans and logs", func() bool {
		tr = trace.TraceReply{}
		return get(t, api+"/api/v1/trace/traces/"+tid(1), &tr) == 200 && len(tr.Spans) == 3 && len(tr.Logs) == 4
	})
	got := map[string]trace.LogRecord{}
	for _, l := range tr.Logs {
		got[l.Body] = l
	}
	for body, want := range map[string]struct{ span, severity string }{
		"charged card": {"0200000000000001", "INFO"}, "sent receipt": {"0200000000000001", "INFO"},
		"card declined once": {"0300000000000001", "ERROR"}, "request done": {"", "INFO"},
	} {
		l, ok := got[body]
		if !ok || l.SpanID != want.span || l.Severity != want.severity || l.Service != "pay" {
			t.Errorf("log %q: %+v, want span %q severity %s", body, l, want.span, want.severity)
		}
	}
	// Searches find traces by their spans only; the figures count calls.
	var found trace.SearchReply
	if get(t, api+"/api/v1/trace/traces?service=pay&operation=charged+card", &found); len(found.Traces) != 0 {
		t.Errorf("a log body found as an operation: %+v", found.Traces)
	}
	for _, op := range s.Rollup().Operations("pay", 15) {
		if strings.Contains(op.Operation, " ") {
			t.Errorf("a log record counted as operation %q", op.Operation)
		}
	}
	if n := s.logsUntraced.Load(); n != 2 {
		t.Errorf("%d untraced records counted, want 2", n)
	}
	if n := s.logsReceived.Load(); n != 6 {
		t.Errorf("%d records counted, want 6", n)
	}
}
