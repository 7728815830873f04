package otlp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/tangram-dev/tangram/trace/store"
)

// The OTLP/JSON shapes: lowerCamelCase names, IDs in hex, 64-bit integers
// as strings or numbers, enums as numbers.
type (
	jsonRequest struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []jsonKV `json:"attributes"`
			} `json:"resource"`
			ScopeSpans []struct {
				Scope struct {
					Name    string `json:"name"`
					Version string `json:"version"`
				} `json:"scope"`
				Spans []jsonSpan `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	}
	jsonSpan struct {
		TraceID           string    `json:"traceId"`
		SpanID            string    `json:"spanId"`
		ParentSpanID      string    `json:"parentSpanId"`
		Name              string    `json:"name"`
		Kind              int       `json:"kind"`
		StartTimeUnixNano jsonInt   `json:"startTimeUnixNano"`
		EndTimeUnixNano   jsonInt   `json:"endTimeUnixNano"`
		Attributes        []jsonKV  `json:"attributes"`
		Events            []jsonEvt `json:"events"`
		Links             []struct {
			TraceID    string   `json:"traceId"`
			SpanID     string   `json:"spanId"`
			Attributes []jsonKV `json:"attributes"`
		} `json:"links"`
		Status struct {
			Message string `json:"message"`
			Code    int    `json:"code"`
		} `json:"status"`
	}
	jsonEvt struct {
		TimeUnixNano jsonInt  `json:"timeUnixNano"`
		Name         string   `json:"name"`
		Attributes   []jsonKV `json:"attributes"`
	}
	jsonKV struct {
		Key   string    `json:"key"`
		Value jsonValue `json:"value"`
	}
	jsonValue struct {
		StringValue *string  `json:"stringValue"`
		BoolValue   *bool    `json:"boolValue"`
		IntValue    *jsonInt `json:"intValue"`
		DoubleValue *float64 `json:"doubleValue"`
		BytesValue  *string  `json:"bytesValue"`
		ArrayValue  *struct {
			Values []jsonValue `json:"values"`
		} `json:"arrayValue"`
		KvlistValue *struct {
			Values []jsonKV `json:"values"`
		} `json:"kvlistValue"`
	}
)

// jsonInt is a 64-bit integer written as a JSON string or number.
type jsonInt int64

func (n *jsonInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	if s == "null" || s == "" {
		return nil
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		*n = jsonInt(v)
		return nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("otlp: %s is not an integer", b)
	}
	*n = jsonInt(v)
	return nil
}

// DecodeTracesJSON appends the spans of an OTLP/JSON export request to dst.
func DecodeTracesJSON(dst []store.Span, b []byte) ([]store.Span, error) {
	var req jsonRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return dst, fmt.Errorf("otlp: %w", err)
	}
	for _, rs := range req.ResourceSpans {
		service, resource, err := jsonResource(rs.Resource.Attributes)
		if err != nil {
			return dst, err
		}
		for _, ss := range rs.ScopeSpans {
			scope := scopeAttrs(ss.Scope.Name, ss.Scope.Version)
			for _, js := range ss.Spans {
				s, err := js.span(service, resource)
				if err != nil {
					return dst, err
				}
				s.Attrs = append(s.Attrs, scope...)
				dst = append(dst, s)
			}
		}
	}
	return dst, nil
}

// jsonResource is a resource's service.name and its other attributes.
func jsonResource(kvs []jsonKV) (service string, resource []store.Attr, err error) {
	for _, kv := range kvs {
		a, err := kv.attr(0)
		if err != nil {
			return "", nil, err
		}
		if a.Key == "service.name" && a.Value.Type == store.TypeString {
			service = a.Value.Str
			continue
		}
		resource = append(resource, a)
	}
	return service, resource, nil
}

func (js *jsonSpan) span(service string, resource []store.Attr) (store.Span, error) {
	s := store.Span{Service: service, Resource: resource, Name: js.Name, StatusMessage: js.Status.Message}
	if err := hexID(s.TraceID[:], js.TraceID, "traceId"); err != nil {
		return s, err
	}
	if err := hexID(s.SpanID[:], js.SpanID, "spanId"); err != nil {
		return s, err
	}
	if err := hexID(s.ParentID[:], js.ParentSpanID, "parentSpanId"); err != nil {
		return s, err
	}
	if s.TraceID == (store.TraceID{}) || s.SpanID == (store.SpanID{}) {
		return s, errors.New("otlp: a span without a traceId or spanId")
	}
	if js.Kind >= 0 && js.Kind <= int(store.KindConsumer) {
		s.Kind = store.Kind(js.Kind)
	}
	if js.Status.Code >= 0 && js.Status.Code <= int(store.StatusError) {
		s.Status = store.Status(js.Status.Code)
	}
	start, end := uint64(js.StartTimeUnixNano), uint64(js.EndTimeUnixNano)
	s.StartUnixNano = start
	if end > start {
		s.DurationNano = end - start
	}
	for _, kv := range js.Attributes {
		a, err := kv.attr(0)
		if err != nil {
			return s, err
		}
		s.Attrs = append(s.Attrs, a)
	}
	for _, je := range js.Events {
		e := store.Event{TimeUnixNano: uint64(je.TimeUnixNano), Name: je.Name}
		for _, kv := range je.Attributes {
			a, err := kv.attr(0)
			if err != nil {
				return s, err
			}
			e.Attrs = append(e.Attrs, a)
		}
		s.Events = append(s.Events, e)
	}
	for _, jl := range js.Links {
		var l store.Link
		if err := hexID(l.TraceID[:], jl.TraceID, "link traceId"); err != nil {
			return s, err
		}
		if err := hexID(l.SpanID[:], jl.SpanID, "link spanId"); err != nil {
			return s, err
		}
		for _, kv := range jl.Attributes {
			a, err := kv.attr(0)
			if err != nil {
				return s, err
			}
			l.Attrs = append(l.Attrs, a)
		}
		s.Links = append(s.Links, l)
	}
	return s, nil
}

func (kv jsonKV) attr(depth int) (store.Attr, error) {
	v, err := kv.Value.value(depth)
	return store.Attr{Key: kv.Key, Value: v}, err
}

func (jv jsonValue) value(depth int) (store.Value, error) {
	switch {
	case jv.StringValue != nil:
		return store.Value{Type: store.TypeString, Str: *jv.StringValue}, nil
	case jv.BoolValue != nil:
		return store.Value{Type: store.TypeBool, Bool: *jv.BoolValue}, nil
	case jv.IntValue != nil:
		return store.Value{Type: store.TypeInt, Int: int64(*jv.IntValue)}, nil
	case jv.DoubleValue != nil:
		return store.Value{Type: store.TypeFloat, Float: *jv.DoubleValue}, nil
	case jv.BytesValue != nil:
		b, err := base64.StdEncoding.DecodeString(*jv.BytesValue)
		if err != nil {
			return store.Value{}, fmt.Errorf("otlp: bytesValue: %w", err)
		}
		return store.Value{Type: store.TypeBytes, Str: string(b)}, nil
	case jv.ArrayValue != nil || jv.KvlistValue != nil:
		if depth >= maxDepth {
			return store.Value{}, fmt.Errorf("otlp: attribute values nested deeper than %d", maxDepth)
		}
		var g any
		if jv.ArrayValue != nil {
			arr := []any{}
			for _, e := range jv.ArrayValue.Values {
				v, err := e.value(depth + 1)
				if err != nil {
					return store.Value{}, err
				}
				arr = append(arr, plain(v))
			}
			g = arr
		} else {
			obj := map[string]any{}
			for _, kv := range jv.KvlistValue.Values {
				a, err := kv.attr(depth + 1)
				if err != nil {
					return store.Value{}, err
				}
				obj[a.Key] = plain(a.Value)
			}
			g = obj
		}
		j, err := json.Marshal(g)
		if err != nil {
			return store.Value{}, fmt.Errorf("otlp: %w", err)
		}
		return store.Value{Type: store.TypeJSON, Str: string(j)}, nil
	}
	return store.Value{Type: store.TypeString}, nil // an empty value
}
