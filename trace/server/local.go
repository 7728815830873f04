package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/store"
)

// Exporter returns an OpenTelemetry SpanExporter that hands spans to this
// collector in process — no encoding, no socket: `tangram server` traces
// itself with it. Like an OTLP sender it never waits: what the queue
// cannot take is dropped and counted.
func (s *Server) Exporter() sdktrace.SpanExporter { return localExporter{s} }

type localExporter struct{ s *Server }

func (e localExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	out := make([]store.Span, len(spans))
	for i, sp := range spans {
		FromSDK(&out[i], sp)
	}
	if len(e.s.fwd) > 0 {
		e.s.forward(sigTraces, trace.AppendExportRequest(nil, spans), "application/x-protobuf")
	}
	if n := e.s.Ingest(out); n > 0 {
		return fmt.Errorf("trace: the collector's queue refused %d spans", n)
	}
	return nil
}

func (localExporter) Shutdown(context.Context) error { return nil }

// FromSDK fills dst from a span finished by the OpenTelemetry SDK, as the
// OTLP decoder would from the same span sent over the wire.
func FromSDK(dst *store.Span, sp sdktrace.ReadOnlySpan) {
	sc := sp.SpanContext()
	*dst = store.Span{TraceID: store.TraceID(sc.TraceID()), SpanID: store.SpanID(sc.SpanID()), Name: sp.Name(),
		Kind: kindOf(sp.SpanKind()), StartUnixNano: nanos(sp.StartTime().UnixNano())}
	if p := sp.Parent(); p.SpanID().IsValid() {
		dst.ParentID = store.SpanID(p.SpanID())
	}
	if end := nanos(sp.EndTime().UnixNano()); end > dst.StartUnixNano {
		dst.DurationNano = end - dst.StartUnixNano
	}
	switch st := sp.Status(); st.Code {
	case codes.Error:
		dst.Status, dst.StatusMessage = store.StatusError, st.Description
	case codes.Ok:
		dst.Status = store.StatusOK
	}
	if res := sp.Resource(); res != nil {
		for _, kv := range res.Attributes() {
			if kv.Key == "service.name" && kv.Value.Type() == attribute.STRING {
				dst.Service = kv.Value.AsString()
				continue
			}
			dst.Resource = append(dst.Resource, attrOf(kv))
		}
	}
	for _, kv := range sp.Attributes() {
		dst.Attrs = append(dst.Attrs, attrOf(kv))
	}
	if sc := sp.InstrumentationScope(); sc.Name != "" {
		dst.Attrs = append(dst.Attrs, store.Attr{Key: "otel.scope.name", Value: store.Value{Type: store.TypeString, Str: sc.Name}})
		if sc.Version != "" {
			dst.Attrs = append(dst.Attrs, store.Attr{Key: "otel.scope.version", Value: store.Value{Type: store.TypeString, Str: sc.Version}})
		}
	}
	for _, e := range sp.Events() {
		ev := store.Event{TimeUnixNano: nanos(e.Time.UnixNano()), Name: e.Name}
		for _, kv := range e.Attributes {
			ev.Attrs = append(ev.Attrs, attrOf(kv))
		}
		dst.Events = append(dst.Events, ev)
	}
	for _, l := range sp.Links() {
		ln := store.Link{TraceID: store.TraceID(l.SpanContext.TraceID()), SpanID: store.SpanID(l.SpanContext.SpanID())}
		for _, kv := range l.Attributes {
			ln.Attrs = append(ln.Attrs, attrOf(kv))
		}
		dst.Links = append(dst.Links, ln)
	}
}

func nanos(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}

func kindOf(k oteltrace.SpanKind) store.Kind {
	switch k {
	case oteltrace.SpanKindInternal:
		return store.KindInternal
	case oteltrace.SpanKindServer:
		return store.KindServer
	case oteltrace.SpanKindClient:
		return store.KindClient
	case oteltrace.SpanKindProducer:
		return store.KindProducer
	case oteltrace.SpanKindConsumer:
		return store.KindConsumer
	}
	return store.KindUnspecified
}

// attrOf converts an attribute as the OTLP decoder does: scalars as such,
// byte strings raw, arrays and maps as JSON text.
func attrOf(kv attribute.KeyValue) store.Attr {
	a := store.Attr{Key: string(kv.Key)}
	v := kv.Value
	switch v.Type() {
	case attribute.STRING:
		a.Value = store.Value{Type: store.TypeString, Str: v.AsString()}
	case attribute.INT64:
		a.Value = store.Value{Type: store.TypeInt, Int: v.AsInt64()}
	case attribute.FLOAT64:
		a.Value = store.Value{Type: store.TypeFloat, Float: v.AsFloat64()}
	case attribute.BOOL:
		a.Value = store.Value{Type: store.TypeBool, Bool: v.AsBool()}
	case attribute.BYTESLICE:
		a.Value = store.Value{Type: store.TypeBytes, Str: string(v.AsByteSlice())}
	case attribute.EMPTY:
		a.Value = store.Value{Type: store.TypeString}
	default:
		j, err := json.Marshal(plainOf(v))
		if err != nil {
			j, _ = json.Marshal(v.Emit())
		}
		a.Value = store.Value{Type: store.TypeJSON, Str: string(j)}
	}
	return a
}

func plainOf(v attribute.Value) any {
	switch v.Type() {
	case attribute.SLICE:
		out := []any{}
		for _, e := range v.AsSlice() {
			out = append(out, plainOf(e))
		}
		return out
	case attribute.MAP:
		out := map[string]any{}
		for _, kv := range v.AsMap() {
			out[string(kv.Key)] = plainOf(kv.Value)
		}
		return out
	case attribute.BYTESLICE:
		return base64.StdEncoding.EncodeToString(v.AsByteSlice())
	}
	return v.AsInterface()
}
