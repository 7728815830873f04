package trace_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/otlp"
	"github.com/tangram-dev/tangram/trace/store"
)

// recorded runs fn with a tracer whose ended spans it returns.
func recorded(t *testing.T, service string, fn func(tr oteltrace.Tracer)) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(resourceOf(service)))
	defer tp.Shutdown(context.Background())
	fn(tp.Tracer("test/scope", oteltrace.WithInstrumentationVersion("1.2.3")))
	return rec.Ended()
}

// TestEncodeMatchesOTLP: what the exporter writes is read by OTLP's own
// generated code, field by field, and by the collector's decoder.
func TestEncodeMatchesOTLP(t *testing.T) {
	long := strings.Repeat("x", 20000) // lengths of 2 and 3 varint bytes
	spans := recorded(t, "svc", func(tr oteltrace.Tracer) {
		ctx, root := tr.Start(context.Background(), "root", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
		_, child := tr.Start(ctx, "child", oteltrace.WithSpanKind(oteltrace.SpanKindClient),
			oteltrace.WithAttributes(attribute.String("s", "v"), attribute.Int64("i", -7), attribute.Float64("f", 1.5),
				attribute.Bool("b", true), attribute.StringSlice("ss", []string{"a", "b"}), attribute.Int64Slice("is", []int64{1, 2}),
				attribute.String("long", long)),
			oteltrace.WithLinks(oteltrace.Link{SpanContext: root.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("l", "1")}}))
		child.AddEvent("ev", oteltrace.WithAttributes(attribute.String("e", "x")))
		child.SetStatus(codes.Error, "broke")
		child.End()
		root.End()
	})
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans", len(spans))
	}
	b := trace.AppendExportRequest(nil, spans)
	var td tracepb.TracesData // the same wire shape as ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &td); err != nil {
		t.Fatalf("OTLP's code cannot read the request: %v", err)
	}
	if len(td.ResourceSpans) != 1 || len(td.ResourceSpans[0].ScopeSpans) != 1 {
		t.Fatalf("want one resource and one scope: %v", &td)
	}
	ss := td.ResourceSpans[0].ScopeSpans[0]
	if ss.Scope.GetName() != "test/scope" || ss.Scope.GetVersion() != "1.2.3" {
		t.Errorf("scope %v", ss.Scope)
	}
	got := map[string]*tracepb.Span{}
	for _, s := range ss.Spans {
		got[s.Name] = s
	}
	child, root := got["child"], got["root"]
	if child == nil || root == nil {
		t.Fatalf("spans %v", ss.Spans)
	}
	rid := root.SpanId
	if !bytes.Equal(child.ParentSpanId, rid) || !bytes.Equal(child.TraceId, root.TraceId) || len(root.ParentSpanId) != 0 {
		t.Errorf("parentage: child parent %x root %x", child.ParentSpanId, rid)
	}
	if child.Kind != tracepb.Span_SPAN_KIND_CLIENT || root.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("kinds %v %v", child.Kind, root.Kind)
	}
	if child.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || child.Status.GetMessage() != "broke" {
		t.Errorf("status %v", child.Status)
	}
	if child.EndTimeUnixNano <= child.StartTimeUnixNano || child.StartTimeUnixNano == 0 {
		t.Errorf("times %d %d", child.StartTimeUnixNano, child.EndTimeUnixNano)
	}
	attrs := map[string]*commonpb.AnyValue{}
	for _, kv := range child.Attributes {
		attrs[kv.Key] = kv.Value
	}
	if attrs["s"].GetStringValue() != "v" || attrs["i"].GetIntValue() != -7 || attrs["f"].GetDoubleValue() != 1.5 ||
		!attrs["b"].GetBoolValue() || attrs["long"].GetStringValue() != long {
		t.Errorf("scalar attributes %v", child.Attributes[:4])
	}
	if a := attrs["ss"].GetArrayValue().GetValues(); len(a) != 2 || a[1].GetStringValue() != "b" {
		t.Errorf("string slice %v", a)
	}
	if a := attrs["is"].GetArrayValue().GetValues(); len(a) != 2 || a[1].GetIntValue() != 2 {
		t.Errorf("int slice %v", a)
	}
	if len(child.Events) != 1 || child.Events[0].Name != "ev" || child.Events[0].Attributes[0].Value.GetStringValue() != "x" {
		t.Errorf("events %v", child.Events)
	}
	if len(child.Links) != 1 || !bytes.Equal(child.Links[0].SpanId, rid) || child.Links[0].Attributes[0].Key != "l" {
		t.Errorf("links %v", child.Links)
	}
	var svc string
	for _, kv := range td.ResourceSpans[0].Resource.Attributes {
		if kv.Key == "service.name" {
			svc = kv.Value.GetStringValue()
		}
	}
	if svc == "" {
		t.Errorf("no service.name in the resource %v", td.ResourceSpans[0].Resource)
	}

	dec, err := otlp.DecodeTraces(nil, b)
	if err != nil || len(dec) != 2 {
		t.Fatalf("collector decode: %d spans, %v", len(dec), err)
	}
	for _, s := range dec {
		if s.Name == "child" && (s.Kind != store.KindClient || s.Status != store.StatusError || len(s.Links) != 1 || len(s.Events) != 1) {
			t.Errorf("collector read child as %+v", s)
		}
	}
}

// TestEncodeGroupsResources: spans of two services in one batch become
// two resource groups, each with its own spans.
func TestEncodeGroupsResources(t *testing.T) {
	var spans []sdktrace.ReadOnlySpan
	for _, svc := range []string{"a", "b", "a"} {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(resourceOf(svc)))
		_, s := tp.Tracer("x").Start(context.Background(), "op-"+svc)
		s.End()
		spans = append(spans, rec.Ended()...)
	}
	dec, err := otlp.DecodeTraces(nil, trace.AppendExportRequest(nil, spans))
	if err != nil || len(dec) != 3 {
		t.Fatalf("%d spans, %v", len(dec), err)
	}
	for _, s := range dec {
		if s.Name != "op-"+s.Service {
			t.Errorf("span %q came back under service %q", s.Name, s.Service)
		}
	}
}

func TestLogHandlerStampsAndRecords(t *testing.T) {
	var out bytes.Buffer
	exp := tracetest.NewInMemoryExporter()
	p, err := trace.New(trace.Config{Service: "logs", Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(trace.NewLogHandler(slog.NewJSONHandler(&out, nil), trace.LogOptions{SpanEvents: true})).
		With("order", 42).WithGroup("req")
	ctx, span := p.Tracer("t").Start(context.Background(), "op")
	log.InfoContext(ctx, "paid", "amount", 9.5)
	log.DebugContext(ctx, "not an event")
	log.Info("no span here")
	span.End()
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 { // debug is below the JSON handler's level
		t.Fatalf("log lines %q", lines)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	sc := span.SpanContext()
	// The handler's own group holds them: after WithGroup, added attributes land in it.
	req, _ := rec["req"].(map[string]any)
	if req["trace_id"] != sc.TraceID().String() || req["span_id"] != sc.SpanID().String() {
		t.Errorf("record %v: want trace %s span %s", rec, sc.TraceID(), sc.SpanID())
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("a record without a span got IDs: %s", lines[1])
	}
	got := exp.GetSpans()
	if len(got) != 1 || len(got[0].Events) != 1 {
		t.Fatalf("spans %v", got)
	}
	ev := map[string]string{}
	for _, kv := range got[0].Events[0].Attributes {
		ev[string(kv.Key)] = kv.Value.Emit()
	}
	if ev["log.message"] != "paid" || ev["log.severity"] != "INFO" || ev["order"] != "42" || ev["req.amount"] != "9.5" {
		t.Errorf("event attributes %v", ev)
	}
	p.Close()
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []trace.Config{{}, {Service: "x", SampleRatio: 2}, {Service: "x", BatchSize: 10, QueueSize: 5}} {
		if _, err := trace.New(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := trace.New(trace.Config{Service: "x", Endpoint: "127.0.0.1:4318"}); err == nil || !strings.Contains(err.Error(), "http(s) URL") {
		t.Errorf("an endpoint without a scheme: %v", err)
	}
}

func resourceOf(svc string) *resource.Resource {
	return resource.NewSchemaless(attribute.String("service.name", svc))
}

// TestHTTPSpans: a client span and the server span it caused, joined by
// traceparent; the server span named by its route, 5xx an error.
func TestHTTPSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, err := trace.New(trace.Config{Service: "web", Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "bad" {
			http.Error(w, "boom", 500)
		}
	})
	srv := httptest.NewServer(trace.HTTPHandler(p.TracerProvider(), mux, func(r *http.Request) bool { return r.URL.Path == "/healthz" }))
	defer srv.Close()
	client := &http.Client{Transport: trace.Transport(p.TracerProvider(), nil)}
	for _, path := range []string{"/orders/7", "/orders/bad", "/healthz"} {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var servers, clients []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		switch s.SpanKind {
		case oteltrace.SpanKindServer:
			servers = append(servers, s)
		case oteltrace.SpanKindClient:
			clients = append(clients, s)
		}
	}
	if len(servers) != 2 || len(clients) != 3 {
		t.Fatalf("%d server spans (want 2: health skipped), %d client spans", len(servers), len(clients))
	}
	for i, s := range servers {
		if s.Name != "GET /orders/{id}" || s.Parent.SpanID() != clients[i].SpanContext.SpanID() || s.SpanContext.TraceID() != clients[i].SpanContext.TraceID() {
			t.Errorf("server span %d %q parent %s: want child of client %s", i, s.Name, s.Parent.SpanID(), clients[i].SpanContext.SpanID())
		}
	}
	if servers[0].Status.Code == codes.Error || servers[1].Status.Code != codes.Error || clients[1].Status.Code != codes.Error {
		t.Errorf("statuses: %v %v %v", servers[0].Status, servers[1].Status, clients[1].Status)
	}
}
