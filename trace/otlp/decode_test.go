package otlp

import (
	"reflect"
	"strings"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tangram-dev/tangram/trace/store"
)

func kvStr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// request is an export request as OpenTelemetry's own generated types
// encode it: two resources, scopes, every value type, events, links,
// statuses, a parent, and an unknown field.
func request(t testing.TB) []byte {
	t.Helper()
	tid := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	rs := []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kvStr("service.name", "checkout"), kvStr("host.name", "h1")}},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "tangram/rpc", Version: "1.0"},
			Spans: []*tracepb.Span{{
				TraceId: tid, SpanId: []byte{1, 1, 1, 1, 1, 1, 1, 1}, Name: "POST /orders", Kind: tracepb.Span_SPAN_KIND_SERVER,
				StartTimeUnixNano: 1_700_000_000_000_000_000, EndTimeUnixNano: 1_700_000_000_250_000_000,
				Attributes: []*commonpb.KeyValue{
					kvStr("http.route", "/orders"),
					{Key: "http.status_code", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -500}}},
					{Key: "sampled", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
					{Key: "ratio", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 0.25}}},
					{Key: "raw", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0xff, 0}}}},
					{Key: "list", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{
						{Value: &commonpb.AnyValue_StringValue{StringValue: "a"}}, {Value: &commonpb.AnyValue_IntValue{IntValue: 2}}}}}}},
					{Key: "map", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{kvStr("k", "v")}}}}},
				},
				Events: []*tracepb.Span_Event{{TimeUnixNano: 1_700_000_000_100_000_000, Name: "exception", Attributes: []*commonpb.KeyValue{kvStr("exception.message", "boom")}}},
				Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "boom"},
			}, {
				TraceId: tid, SpanId: []byte{2, 2, 2, 2, 2, 2, 2, 2}, ParentSpanId: []byte{1, 1, 1, 1, 1, 1, 1, 1}, Name: "publish",
				Kind: tracepb.Span_SPAN_KIND_PRODUCER, StartTimeUnixNano: 1_700_000_000_010_000_000, EndTimeUnixNano: 1_700_000_000_020_000_000,
				Links:  []*tracepb.Span_Link{{TraceId: tid, SpanId: []byte{9, 9, 9, 9, 9, 9, 9, 9}, Attributes: []*commonpb.KeyValue{kvStr("why", "batch")}}},
				Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK},
			}},
		}},
	}, {
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kvStr("service.name", "stock")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: tid, SpanId: []byte{3, 3, 3, 3, 3, 3, 3, 3}, ParentSpanId: []byte{2, 2, 2, 2, 2, 2, 2, 2}, Name: "consume",
			Kind: tracepb.Span_SPAN_KIND_CONSUMER, StartTimeUnixNano: 1_700_000_000_030_000_000, EndTimeUnixNano: 1_700_000_000_020_000_000, // ends before it starts
		}}}},
	}}
	var b []byte
	for _, r := range rs {
		m, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	b = protowire.AppendTag(b, 99, protowire.VarintType) // a field of a newer OTLP
	b = protowire.AppendVarint(b, 7)
	return b
}

// want is what request holds, as the store's spans.
func want() []store.Span {
	tid := store.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	s := func(k, v string) store.Attr {
		return store.Attr{Key: k, Value: store.Value{Type: store.TypeString, Str: v}}
	}
	scope := []store.Attr{s("otel.scope.name", "tangram/rpc"), s("otel.scope.version", "1.0")}
	return []store.Span{{
		TraceID: tid, SpanID: store.SpanID{1, 1, 1, 1, 1, 1, 1, 1}, Service: "checkout", Name: "POST /orders", Kind: store.KindServer,
		StartUnixNano: 1_700_000_000_000_000_000, DurationNano: 250_000_000, Status: store.StatusError, StatusMessage: "boom",
		Attrs: append([]store.Attr{
			s("http.route", "/orders"),
			{Key: "http.status_code", Value: store.Value{Type: store.TypeInt, Int: -500}},
			{Key: "sampled", Value: store.Value{Type: store.TypeBool, Bool: true}},
			{Key: "ratio", Value: store.Value{Type: store.TypeFloat, Float: 0.25}},
			{Key: "raw", Value: store.Value{Type: store.TypeBytes, Str: "\xff\x00"}},
			{Key: "list", Value: store.Value{Type: store.TypeJSON, Str: `["a",2]`}},
			{Key: "map", Value: store.Value{Type: store.TypeJSON, Str: `{"k":"v"}`}},
		}, scope...),
		Resource: []store.Attr{s("host.name", "h1")},
		Events:   []store.Event{{TimeUnixNano: 1_700_000_000_100_000_000, Name: "exception", Attrs: []store.Attr{s("exception.message", "boom")}}},
	}, {
		TraceID: tid, SpanID: store.SpanID{2, 2, 2, 2, 2, 2, 2, 2}, ParentID: store.SpanID{1, 1, 1, 1, 1, 1, 1, 1}, Service: "checkout",
		Name: "publish", Kind: store.KindProducer, StartUnixNano: 1_700_000_000_010_000_000, DurationNano: 10_000_000, Status: store.StatusOK,
		Attrs:    scope,
		Resource: []store.Attr{s("host.name", "h1")},
		Links:    []store.Link{{TraceID: tid, SpanID: store.SpanID{9, 9, 9, 9, 9, 9, 9, 9}, Attrs: []store.Attr{s("why", "batch")}}},
	}, {
		TraceID: tid, SpanID: store.SpanID{3, 3, 3, 3, 3, 3, 3, 3}, ParentID: store.SpanID{2, 2, 2, 2, 2, 2, 2, 2}, Service: "stock",
		Name: "consume", Kind: store.KindConsumer, StartUnixNano: 1_700_000_000_030_000_000,
	}}
}

// jsonRequest is request in OTLP/JSON, written by hand as a non-Go sender
// would post it (IDs in hex, 64-bit integers as strings).
const jsonDoc = `{"resourceSpans":[{"resource":{"attributes":[
 {"key":"service.name","value":{"stringValue":"checkout"}},{"key":"host.name","value":{"stringValue":"h1"}}]},
 "scopeSpans":[{"scope":{"name":"tangram/rpc","version":"1.0"},"spans":[
  {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0101010101010101","name":"POST /orders","kind":2,
   "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000",
   "attributes":[{"key":"http.route","value":{"stringValue":"/orders"}},{"key":"http.status_code","value":{"intValue":"-500"}},
    {"key":"sampled","value":{"boolValue":true}},{"key":"ratio","value":{"doubleValue":0.25}},{"key":"raw","value":{"bytesValue":"/wA="}},
    {"key":"list","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":2}]}}},
    {"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}}],
   "events":[{"timeUnixNano":"1700000000100000000","name":"exception","attributes":[{"key":"exception.message","value":{"stringValue":"boom"}}]}],
   "status":{"code":2,"message":"boom"}},
  {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0202020202020202","parentSpanId":"0101010101010101","name":"publish","kind":4,
   "startTimeUnixNano":1700000000010000000,"endTimeUnixNano":"1700000000020000000",
   "links":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0909090909090909","attributes":[{"key":"why","value":{"stringValue":"batch"}}]}],
   "status":{"code":1}}]}]},
 {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"stock"}}]},"scopeSpans":[{"scope":{},"spans":[
  {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0303030303030303","parentSpanId":"0202020202020202","name":"consume","kind":5,
   "startTimeUnixNano":"1700000000030000000","endTimeUnixNano":"1700000000020000000","newerField":{"x":1}}]}]}]}`

func TestDecodeProtobuf(t *testing.T) {
	got, err := DecodeTraces(nil, request(t))
	if err != nil {
		t.Fatal(err)
	}
	if w := want(); !reflect.DeepEqual(got, w) {
		t.Fatalf("decoded:\n%+v\nwant:\n%+v", got, w)
	}
}

func TestDecodeJSON(t *testing.T) {
	got, err := DecodeTracesJSON(nil, []byte(jsonDoc))
	if err != nil {
		t.Fatal(err)
	}
	if w := want(); !reflect.DeepEqual(got, w) {
		t.Fatalf("decoded:\n%+v\nwant:\n%+v", got, w)
	}
}

// TestBadRequests: malformed input is an error naming the problem.
func TestBadRequests(t *testing.T) {
	good := request(t)
	// The last 3 bytes are the unknown field: a cut before it loses
	// nothing the store keeps.
	for cut := 1; cut < len(good)-3; cut += 7 {
		if _, err := DecodeTraces(nil, good[:cut]); err == nil {
			// A cut can land between whole fields; then it must decode
			// to fewer spans, never garbage.
			if spans, _ := DecodeTraces(nil, good[:cut]); len(spans) >= 3 {
				t.Fatalf("a request cut at %d decoded whole", cut)
			}
		}
	}
	short := &tracepb.ResourceSpans{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{1, 2, 3}, SpanId: []byte{1, 1, 1, 1, 1, 1, 1, 1}}}}}}
	m, _ := proto.Marshal(short)
	b := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), m)
	if _, err := DecodeTraces(nil, b); err == nil || !strings.Contains(err.Error(), "trace_id of 3 bytes") {
		t.Fatalf("a 3-byte trace ID: %v", err)
	}
	for _, c := range []struct{ doc, want string }{
		{`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0101010101010101"}]}]}]}`, `traceId "zz"`},
		{`{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"0101010101010101"}]}]}]}`, "without a traceId"},
		{`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0101010101010101","startTimeUnixNano":"soon"}]}]}]}`, "not an integer"},
		{`{"resourceSpans":`, "unexpected end"},
	} {
		if _, err := DecodeTracesJSON(nil, []byte(c.doc)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.doc, err, c.want)
		}
	}
	deep := `{"stringValue":"x"}`
	for range 40 {
		deep = `{"arrayValue":{"values":[` + deep + `]}}`
	}
	doc := `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0101010101010101","attributes":[{"key":"k","value":` + deep + `}]}]}]}]}`
	if _, err := DecodeTracesJSON(nil, []byte(doc)); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("deep nesting: %v", err)
	}
}

// FuzzDecodeTraces: any bytes decode or fail with an error, never panic;
// every span decoded has its IDs.
func FuzzDecodeTraces(f *testing.F) {
	f.Add(request(f))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x05, 0x12, 0x03, 0x12, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		spans, err := DecodeTraces(nil, b)
		if err != nil {
			return
		}
		for _, s := range spans {
			if s.TraceID == (store.TraceID{}) || s.SpanID == (store.SpanID{}) {
				t.Fatalf("a span without IDs decoded: %+v", s)
			}
		}
	})
}

// FuzzDecodeTracesJSON: the same for OTLP/JSON.
func FuzzDecodeTracesJSON(f *testing.F) {
	f.Add([]byte(jsonDoc))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		spans, err := DecodeTracesJSON(nil, b)
		if err != nil {
			return
		}
		for _, s := range spans {
			if s.TraceID == (store.TraceID{}) || s.SpanID == (store.SpanID{}) {
				t.Fatalf("a span without IDs decoded: %+v", s)
			}
		}
	})
}
