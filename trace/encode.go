package trace

import (
	"math"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// AppendExportRequest appends spans to b as an OTLP
// ExportTraceServiceRequest in protobuf, grouped by resource and
// instrumentation scope as OTLP groups them. It is what the exporter
// sends; the wire format is written with protowire, so the SDK links no
// generated OTLP code and no gRPC.
func AppendExportRequest(b []byte, spans []sdktrace.ReadOnlySpan) []byte {
	for i := 0; i < len(spans); {
		res := spans[i].Resource()
		j := i + 1
		for j < len(spans) && sameResource(spans[j].Resource(), res) {
			j++
		}
		group := spans[i:j]
		b = appendMsg(b, 1, func(b []byte) []byte { // resource_spans
			b = appendMsg(b, 1, func(b []byte) []byte { // resource
				for _, kv := range res.Attributes() {
					b = appendKeyValue(b, 1, kv)
				}
				return b
			})
			for k := 0; k < len(group); {
				scope := group[k].InstrumentationScope()
				l := k + 1
				for l < len(group) && sameScope(group[l].InstrumentationScope(), scope) {
					l++
				}
				b = appendMsg(b, 2, func(b []byte) []byte { // scope_spans
					b = appendMsg(b, 1, func(b []byte) []byte {
						b = appendString(b, 1, scope.Name)
						return appendString(b, 2, scope.Version)
					})
					for _, s := range group[k:l] {
						b = appendMsg(b, 2, func(b []byte) []byte { return appendSpan(b, s) })
					}
					return appendString(b, 3, scope.SchemaURL)
				})
				k = l
			}
			return appendString(b, 3, res.SchemaURL())
		})
		i = j
	}
	return b
}

func sameResource(a, b *resource.Resource) bool {
	return a == b || a.Equal(b)
}

func sameScope(a, b instrumentation.Scope) bool {
	return a.Name == b.Name && a.Version == b.Version && a.SchemaURL == b.SchemaURL
}

func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendBytes(b, 1, tid[:])
	b = appendBytes(b, 2, sid[:])
	b = appendString(b, 3, sc.TraceState().String())
	if p := s.Parent(); p.SpanID().IsValid() {
		pid := p.SpanID()
		b = appendBytes(b, 4, pid[:])
	}
	b = appendString(b, 5, s.Name())
	b = appendVarint(b, 6, uint64(otlpKind(s.SpanKind())))
	b = appendFixed64(b, 7, unixNano(s.StartTime().UnixNano()))
	b = appendFixed64(b, 8, unixNano(s.EndTime().UnixNano()))
	for _, kv := range s.Attributes() {
		b = appendKeyValue(b, 9, kv)
	}
	b = appendVarint(b, 10, uint64(s.DroppedAttributes()))
	for _, e := range s.Events() {
		b = appendMsg(b, 11, func(b []byte) []byte {
			b = appendFixed64(b, 1, unixNano(e.Time.UnixNano()))
			b = appendString(b, 2, e.Name)
			for _, kv := range e.Attributes {
				b = appendKeyValue(b, 3, kv)
			}
			return appendVarint(b, 4, uint64(e.DroppedAttributeCount))
		})
	}
	b = appendVarint(b, 12, uint64(s.DroppedEvents()))
	for _, l := range s.Links() {
		b = appendMsg(b, 13, func(b []byte) []byte {
			ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
			b = appendBytes(b, 1, ltid[:])
			b = appendBytes(b, 2, lsid[:])
			b = appendString(b, 3, l.SpanContext.TraceState().String())
			for _, kv := range l.Attributes {
				b = appendKeyValue(b, 4, kv)
			}
			return appendVarint(b, 5, uint64(l.DroppedAttributeCount))
		})
	}
	b = appendVarint(b, 14, uint64(s.DroppedLinks()))
	st := s.Status()
	if st.Code != codes.Unset || st.Description != "" {
		b = appendMsg(b, 15, func(b []byte) []byte {
			b = appendString(b, 2, st.Description)
			return appendVarint(b, 3, uint64(otlpStatus(st.Code)))
		})
	}
	return appendFixed32(b, 16, uint32(sc.TraceFlags())|0x100|otlpRemoteFlag(s.Parent()))
}

// otlpRemoteFlag is OTLP's SPAN_FLAGS_CONTEXT_IS_REMOTE (0x200) when the
// parent came from another process; 0x100 says the bit is known.
func otlpRemoteFlag(p oteltrace.SpanContext) uint32 {
	if p.IsRemote() {
		return 0x200
	}
	return 0
}

func unixNano(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}

// otlpKind numbers a span kind as OTLP does (the OTel API's numbering
// matches, but it is spelled out so a change there cannot shift ours).
func otlpKind(k oteltrace.SpanKind) int {
	switch k {
	case oteltrace.SpanKindInternal:
		return 1
	case oteltrace.SpanKindServer:
		return 2
	case oteltrace.SpanKindClient:
		return 3
	case oteltrace.SpanKindProducer:
		return 4
	case oteltrace.SpanKindConsumer:
		return 5
	}
	return 0
}

func otlpStatus(c codes.Code) int {
	switch c {
	case codes.Ok:
		return 1
	case codes.Error:
		return 2
	}
	return 0
}

func appendKeyValue(b []byte, num protowire.Number, kv attribute.KeyValue) []byte {
	return appendMsg(b, num, func(b []byte) []byte {
		b = appendString(b, 1, string(kv.Key))
		return appendMsg(b, 2, func(b []byte) []byte { return appendAnyValue(b, kv.Value) })
	})
}

// appendAnyValue writes an AnyValue's fields (not its tag).
func appendAnyValue(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOL:
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		return protowire.AppendString(b, v.AsString())
	case attribute.BYTESLICE:
		b = protowire.AppendTag(b, 7, protowire.BytesType)
		return protowire.AppendBytes(b, v.AsByteSlice())
	case attribute.BOOLSLICE:
		return appendArray(b, len(v.AsBoolSlice()), func(b []byte, i int) []byte {
			return appendAnyValue(b, attribute.BoolValue(v.AsBoolSlice()[i]))
		})
	case attribute.INT64SLICE:
		s := v.AsInt64Slice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, attribute.Int64Value(s[i])) })
	case attribute.FLOAT64SLICE:
		s := v.AsFloat64Slice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, attribute.Float64Value(s[i])) })
	case attribute.STRINGSLICE:
		s := v.AsStringSlice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, attribute.StringValue(s[i])) })
	case attribute.SLICE:
		s := v.AsSlice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, s[i]) })
	case attribute.MAP:
		m := v.AsMap()
		return appendMsg(b, 6, func(b []byte) []byte {
			for _, kv := range m {
				b = appendKeyValue(b, 1, kv)
			}
			return b
		})
	}
	return b // EMPTY: an AnyValue with no field set
}

func appendArray(b []byte, n int, elem func([]byte, int) []byte) []byte {
	return appendMsg(b, 5, func(b []byte) []byte {
		for i := range n {
			b = appendMsg(b, 1, func(b []byte) []byte { return elem(b, i) })
		}
		return b
	})
}

// appendMsg appends a length-delimited field whose body body writes. The
// length is reserved as one byte and widened afterwards when the body is
// longer than 127 bytes, so nothing is encoded twice.
func appendMsg(b []byte, num protowire.Number, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	at := len(b)
	b = append(b, 0)
	b = body(b)
	n := len(b) - at - 1
	size := protowire.SizeVarint(uint64(n))
	if size == 1 {
		b[at] = byte(n)
		return b
	}
	b = append(b, make([]byte, size-1)...)
	copy(b[at+size:], b[at+1:at+1+n])
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendFixed32(b []byte, num protowire.Number, v uint32) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}
