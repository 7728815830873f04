// Package otlp decodes OpenTelemetry's export requests — the protobuf body
// of OTLP/gRPC and OTLP/HTTP, and OTLP/HTTP's JSON. Traces go straight
// into the span store's spans, without building protobuf message objects
// (no generated code, no gRPC dependency: the wire format is read with
// protowire); metrics and logs, far fewer, go through OTLP's generated
// data-model types. Unknown fields are skipped, as protobuf requires;
// what the store cannot hold faithfully (array and map attribute values)
// is kept as JSON text.
package otlp

import (
	"unsafe"

	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tangram-dev/tangram/trace/store"
)

// maxDepth bounds nested array and map values.
const maxDepth = 16

// DecodeTraces appends the spans of a protobuf ExportTraceServiceRequest
// to dst. The spans' strings refer to b, which must not change afterwards.
func DecodeTraces(dst []store.Span, b []byte) ([]store.Span, error) {
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == 1 && typ == protowire.BytesType { // resource_spans
			var err error
			dst, err = resourceSpans(dst, v)
			return err
		}
		return nil
	})
	return dst, err
}

// fields calls fn for each field of a message: its number, type, bytes
// (length-delimited) or scalar value (varint, fixed32, fixed64).
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, v, x, n, err := next(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// next reads the field at the start of b: its number, type, bytes or
// scalar value, and how many bytes it took. The hot decoders (spans,
// attributes, values) loop over it directly, without a callback.
func next(b []byte) (num protowire.Number, typ protowire.Type, v []byte, x uint64, n int, err error) {
	// Fast path: a one-byte tag of a length-delimited field with a
	// one-byte length — most of a span (attribute keys, values, names).
	if len(b) >= 2 && b[0] < 0x80 && b[0]&7 == byte(protowire.BytesType) && b[1] < 0x80 && b[0]>>3 != 0 {
		l := int(b[1])
		if 2+l <= len(b) {
			return protowire.Number(b[0] >> 3), protowire.BytesType, b[2 : 2+l : 2+l], 0, 2 + l, nil
		}
	}
	num, typ, n = protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, 0, 0, fmt.Errorf("otlp: %w", protowire.ParseError(n))
	}
	rest := b[n:]
	var m int
	switch typ {
	case protowire.BytesType:
		v, m = protowire.ConsumeBytes(rest)
	case protowire.VarintType:
		x, m = protowire.ConsumeVarint(rest)
	case protowire.Fixed64Type:
		x, m = protowire.ConsumeFixed64(rest)
	case protowire.Fixed32Type:
		var x32 uint32
		x32, m = protowire.ConsumeFixed32(rest)
		x = uint64(x32)
	default:
		m = protowire.ConsumeFieldValue(num, typ, rest)
	}
	if m < 0 {
		return 0, 0, nil, 0, 0, fmt.Errorf("otlp: field %d: %w", num, protowire.ParseError(m))
	}
	return num, typ, v, x, n + m, nil
}

func resourceSpans(dst []store.Span, b []byte) ([]store.Span, error) {
	service, resource, scopes, err := resourceOf(b)
	if err != nil {
		return dst, err
	}
	for _, sc := range scopes {
		if dst, err = scopeSpans(dst, sc, service, resource); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// resourceOf reads a ResourceSpans, ResourceLogs or ResourceMetrics
// message: its resource's service.name and other attributes, and its
// scope messages (field 2), read after the resource, which may come later.
func resourceOf(b []byte) (service string, resource []store.Attr, scopes [][]byte, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // resource
			return fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != 1 || typ != protowire.BytesType { // attributes
					return nil
				}
				a, err := keyValue(v, 0)
				if err != nil {
					return err
				}
				if a.Key == "service.name" && a.Value.Type == store.TypeString {
					service = a.Value.Str
					return nil
				}
				resource = append(resource, a)
				return nil
			})
		case 2:
			scopes = append(scopes, v)
		}
		return nil
	})
	return service, resource, scopes, err
}

// scopeOf reads a ScopeSpans or ScopeLogs message: its scope as
// attributes and its items (field 2: spans, log records).
func scopeOf(b []byte) (scope []store.Attr, items [][]byte, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // scope: name 1, version 2
			var name, version string
			err := fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if typ == protowire.BytesType && num == 1 {
					name = str(v)
				} else if typ == protowire.BytesType && num == 2 {
					version = str(v)
				}
				return nil
			})
			scope = scopeAttrs(name, version)
			return err
		case 2:
			items = append(items, v)
		}
		return nil
	})
	return scope, items, err
}

// scopeAttrs are an instrumentation scope's name and version as
// attributes (none when empty).
func scopeAttrs(name, version string) []store.Attr {
	var out []store.Attr
	if name != "" {
		out = append(out, strAttr("otel.scope.name", name))
	}
	if version != "" {
		out = append(out, strAttr("otel.scope.version", version))
	}
	return out
}

func scopeSpans(dst []store.Span, b []byte, service string, resource []store.Attr) ([]store.Span, error) {
	scope, spans, err := scopeOf(b)
	if err != nil {
		return dst, err
	}
	// The spans' attributes share an arena: one allocation for many spans
	// instead of a growing slice per span.
	var arena []store.Attr
	for _, sp := range spans {
		if cap(arena)-len(arena) < 64 {
			arena = make([]store.Attr, 0, max(1024, 32*len(spans)))
		}
		s := store.Span{Service: service, Resource: resource, Attrs: arena[len(arena):len(arena)]}
		if err := span(&s, sp); err != nil {
			return dst, err
		}
		s.Attrs = append(s.Attrs, scope...)
		switch n := len(s.Attrs); {
		case n == 0:
			s.Attrs = nil
		case unsafe.SliceData(s.Attrs) == unsafe.SliceData(arena[len(arena):]):
			arena = arena[:len(arena)+n] // the attributes stayed in the arena
			s.Attrs = s.Attrs[:n:n]      // a later append must not write into the next span's
		}
		dst = append(dst, s)
	}
	return dst, nil
}

func strAttr(k, v string) store.Attr {
	return store.Attr{Key: k, Value: store.Value{Type: store.TypeString, Str: v}}
}

// ids copies a trace or span ID, which must be all or nothing.
func id(dst []byte, v []byte, what string) error {
	if len(v) != 0 && len(v) != len(dst) {
		return fmt.Errorf("otlp: %s of %d bytes, want %d", what, len(v), len(dst))
	}
	copy(dst, v)
	return nil
}

func span(s *store.Span, b []byte) error {
	var start, end uint64
	for len(b) > 0 {
		num, typ, v, x, n, err := next(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case num == 9 && typ == protowire.BytesType: // attributes: the most common field
			s.Attrs = append(s.Attrs, store.Attr{})
			if err := keyValueInto(&s.Attrs[len(s.Attrs)-1], v, 0); err != nil {
				return err
			}
		case num == 1 && typ == protowire.BytesType:
			err = id(s.TraceID[:], v, "trace_id")
		case num == 2 && typ == protowire.BytesType:
			err = id(s.SpanID[:], v, "span_id")
		case num == 4 && typ == protowire.BytesType:
			err = id(s.ParentID[:], v, "parent_span_id")
		case num == 5 && typ == protowire.BytesType:
			s.Name = str(v)
		case num == 6 && typ == protowire.VarintType:
			if x <= uint64(store.KindConsumer) {
				s.Kind = store.Kind(x)
			}
		case num == 7 && typ == protowire.Fixed64Type:
			start = x
		case num == 8 && typ == protowire.Fixed64Type:
			end = x
		case num == 11 && typ == protowire.BytesType:
			var e store.Event
			if e, err = event(v); err == nil {
				s.Events = append(s.Events, e)
			}
		case num == 13 && typ == protowire.BytesType:
			var l store.Link
			if l, err = link(v); err == nil {
				s.Links = append(s.Links, l)
			}
		case num == 15 && typ == protowire.BytesType:
			err = fields(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				switch {
				case num == 2 && typ == protowire.BytesType:
					s.StatusMessage = str(v)
				case num == 3 && typ == protowire.VarintType && x <= uint64(store.StatusError):
					s.Status = store.Status(x)
				}
				return nil
			})
		}
		if err != nil {
			return err
		}
	}
	if s.TraceID == (store.TraceID{}) || s.SpanID == (store.SpanID{}) {
		return errors.New("otlp: a span without a trace_id or span_id")
	}
	s.StartUnixNano = start
	if end > start {
		s.DurationNano = end - start
	}
	return nil
}

func event(b []byte) (store.Event, error) {
	var e store.Event
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			e.TimeUnixNano = x
		case num == 2 && typ == protowire.BytesType:
			e.Name = str(v)
		case num == 3 && typ == protowire.BytesType:
			a, err := keyValue(v, 0)
			if err != nil {
				return err
			}
			e.Attrs = append(e.Attrs, a)
		}
		return nil
	})
	return e, err
}

func link(b []byte) (store.Link, error) {
	var l store.Link
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			return id(l.TraceID[:], v, "link trace_id")
		case num == 2 && typ == protowire.BytesType:
			return id(l.SpanID[:], v, "link span_id")
		case num == 4 && typ == protowire.BytesType:
			a, err := keyValue(v, 0)
			if err != nil {
				return err
			}
			l.Attrs = append(l.Attrs, a)
		}
		return nil
	})
	return l, err
}

func keyValue(b []byte, depth int) (store.Attr, error) {
	var a store.Attr
	err := keyValueInto(&a, b, depth)
	return a, err
}

// keyValueInto decodes a KeyValue into a (in place: an attribute is 64
// bytes, and spans have many).
func keyValueInto(a *store.Attr, b []byte, depth int) error {
	for len(b) > 0 {
		num, typ, v, _, n, err := next(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if typ != protowire.BytesType {
			continue
		}
		switch num {
		case 1:
			a.Key = str(v)
		case 2:
			a.Value = store.Value{} // the last one set wins, as protobuf says
			if err := anyValueInto(&a.Value, v, depth); err != nil {
				return err
			}
		}
	}
	return nil
}

// anyValue decodes an AnyValue; arrays and maps become JSON text.
func anyValue(b []byte, depth int) (store.Value, error) {
	var out store.Value
	err := anyValueInto(&out, b, depth)
	return out, err
}

func anyValueInto(out *store.Value, b []byte, depth int) error {
	for len(b) > 0 {
		num, typ, v, x, n, err := next(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			*out = store.Value{Type: store.TypeString, Str: str(v)}
		case num == 2 && typ == protowire.VarintType:
			*out = store.Value{Type: store.TypeBool, Bool: x != 0}
		case num == 3 && typ == protowire.VarintType:
			*out = store.Value{Type: store.TypeInt, Int: int64(x)}
		case num == 4 && typ == protowire.Fixed64Type:
			*out = store.Value{Type: store.TypeFloat, Float: math.Float64frombits(x)}
		case num == 7 && typ == protowire.BytesType:
			*out = store.Value{Type: store.TypeBytes, Str: str(v)}
		case (num == 5 || num == 6) && typ == protowire.BytesType:
			g, err := generic(num, v, depth+1)
			if err != nil {
				return err
			}
			j, err := json.Marshal(g)
			if err != nil {
				return fmt.Errorf("otlp: %w", err)
			}
			*out = store.Value{Type: store.TypeJSON, Str: string(j)}
		}
	}
	return nil
}

// generic decodes an ArrayValue (5) or KeyValueList (6) into Go values.
func generic(kind protowire.Number, b []byte, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("otlp: attribute values nested deeper than %d", maxDepth)
	}
	arr := []any{}
	obj := map[string]any{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 || typ != protowire.BytesType {
			return nil
		}
		if kind == 5 {
			val, err := anyValue(v, depth)
			if err != nil {
				return err
			}
			arr = append(arr, plain(val))
			return nil
		}
		a, err := keyValue(v, depth)
		if err != nil {
			return err
		}
		obj[a.Key] = plain(a.Value)
		return nil
	})
	if kind == 5 {
		return arr, err
	}
	return obj, err
}

// plain is a value as a Go value for JSON.
func plain(v store.Value) any {
	switch v.Type {
	case store.TypeInt:
		return v.Int
	case store.TypeFloat:
		if math.IsNaN(v.Float) || math.IsInf(v.Float, 0) {
			return strconv.FormatFloat(v.Float, 'g', -1, 64)
		}
		return v.Float
	case store.TypeBool:
		return v.Bool
	case store.TypeBytes:
		return base64.StdEncoding.EncodeToString([]byte(v.Str))
	case store.TypeJSON:
		return json.RawMessage(v.Str)
	}
	return v.Str
}

// hexID decodes a JSON trace or span ID (hex in OTLP/JSON).
func hexID(dst []byte, s, what string) error {
	if s == "" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return fmt.Errorf("otlp: %s %q: want %d hex-encoded bytes", what, s, len(dst))
	}
	copy(dst, b)
	return nil
}

// str is v as a string without a copy: the decoded spans' strings share
// the request's bytes, which the caller hands over (DecodeTraces's
// contract). Most of a span is strings — a copy of each was half the
// decoder's time.
func str(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(v), len(v))
}
