package otlp

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tangram-dev/tangram/trace/store"
)

// Log records are kept with the trace they were written in: each becomes
// a store record of kind store.KindLog, with the trace ID, the ID of the
// span it was logged under (SpanID; zero when none), the time (Start),
// the body as text (Name), the severity's text (StatusMessage; Status is
// an error from severity ERROR up, so tail sampling keeps the trace), and
// the record's attributes with log.severity_number and, when set,
// event.name. A record without a trace ID has nowhere to go in a trace
// store: it is counted, not kept.

// maxLogBody bounds a log body kept as a record's name.
const maxLogBody = 16 << 10

// DecodeLogs appends the log records of a protobuf ExportLogsServiceRequest
// to dst; untraced counts those without a trace ID, left out. The records'
// strings refer to b, which must not change afterwards.
func DecodeLogs(dst []store.Span, b []byte) (_ []store.Span, untraced int, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 || typ != protowire.BytesType { // resource_logs
			return nil
		}
		service, resource, scopes, err := resourceOf(v)
		if err != nil {
			return err
		}
		for _, sc := range scopes {
			scope, records, err := scopeOf(sc)
			if err != nil {
				return err
			}
			for _, rec := range records {
				s := store.Span{Service: service, Resource: resource, Kind: store.KindLog}
				if err := logRecord(&s, rec); err != nil {
					return err
				}
				if s.TraceID == (store.TraceID{}) {
					untraced++
					continue
				}
				s.Attrs = append(s.Attrs, scope...)
				dst = append(dst, s)
			}
		}
		return nil
	})
	return dst, untraced, err
}

func logRecord(s *store.Span, b []byte) error {
	var at, observed uint64
	var severity uint64
	for len(b) > 0 {
		num, typ, v, x, n, err := next(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case num == 6 && typ == protowire.BytesType: // attributes
			var a store.Attr
			if a, err = keyValue(v, 0); err == nil {
				s.Attrs = append(s.Attrs, a)
			}
		case num == 1 && typ == protowire.Fixed64Type:
			at = x
		case num == 11 && typ == protowire.Fixed64Type:
			observed = x
		case num == 2 && typ == protowire.VarintType:
			severity = x
		case num == 3 && typ == protowire.BytesType:
			s.StatusMessage = str(v)
		case num == 5 && typ == protowire.BytesType: // body
			var body store.Value
			if body, err = anyValue(v, 0); err == nil {
				s.Name = body.Text()
			}
		case num == 9 && typ == protowire.BytesType:
			err = id(s.TraceID[:], v, "trace_id")
		case num == 10 && typ == protowire.BytesType:
			err = id(s.SpanID[:], v, "span_id")
		case num == 12 && typ == protowire.BytesType && len(v) > 0:
			s.Attrs = append(s.Attrs, strAttr("event.name", str(v)))
		}
		if err != nil {
			return fmt.Errorf("otlp: log record: %w", err)
		}
	}
	finishLog(s, at, observed, severity)
	return nil
}

// finishLog sets what a log record's fields imply: its time (when it
// happened, else when it was observed), its severity's text and status.
func finishLog(s *store.Span, at, observed, severity uint64) {
	s.StartUnixNano = at
	if at == 0 {
		s.StartUnixNano = observed
	}
	if len(s.Name) > maxLogBody {
		s.Name = s.Name[:maxLogBody]
	}
	if severity > 24 {
		severity = 0 // beyond OTLP's scale: unspecified
	}
	if s.StatusMessage == "" {
		s.StatusMessage = severityText(severity)
	}
	if severity >= 17 { // ERROR, FATAL
		s.Status = store.StatusError
	}
	if severity > 0 {
		s.Attrs = append(s.Attrs, store.Attr{Key: "log.severity_number", Value: store.Value{Type: store.TypeInt, Int: int64(severity)}})
	}
}

// severityText names an OTLP severity number's range.
func severityText(n uint64) string {
	switch {
	case n == 0:
		return ""
	case n <= 4:
		return "TRACE"
	case n <= 8:
		return "DEBUG"
	case n <= 12:
		return "INFO"
	case n <= 16:
		return "WARN"
	case n <= 20:
		return "ERROR"
	}
	return "FATAL"
}

// jsonLogsRequest is OTLP/JSON's ExportLogsServiceRequest.
type jsonLogsRequest struct {
	ResourceLogs []struct {
		Resource struct {
			Attributes []jsonKV `json:"attributes"`
		} `json:"resource"`
		ScopeLogs []struct {
			Scope struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"scope"`
			LogRecords []struct {
				TimeUnixNano         jsonInt   `json:"timeUnixNano"`
				ObservedTimeUnixNano jsonInt   `json:"observedTimeUnixNano"`
				SeverityNumber       int64     `json:"severityNumber"`
				SeverityText         string    `json:"severityText"`
				Body                 jsonValue `json:"body"`
				Attributes           []jsonKV  `json:"attributes"`
				TraceID              string    `json:"traceId"`
				SpanID               string    `json:"spanId"`
				EventName            string    `json:"eventName"`
			} `json:"logRecords"`
		} `json:"scopeLogs"`
	} `json:"resourceLogs"`
}

// DecodeLogsJSON is DecodeLogs for OTLP/HTTP's JSON.
func DecodeLogsJSON(dst []store.Span, b []byte) (_ []store.Span, untraced int, err error) {
	var req jsonLogsRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return dst, 0, fmt.Errorf("otlp: logs JSON: %w", err)
	}
	for _, rl := range req.ResourceLogs {
		service, resource, err := jsonResource(rl.Resource.Attributes)
		if err != nil {
			return dst, untraced, err
		}
		for _, sl := range rl.ScopeLogs {
			scope := scopeAttrs(sl.Scope.Name, sl.Scope.Version)
			for _, jr := range sl.LogRecords {
				s := store.Span{Service: service, Resource: resource, Kind: store.KindLog, StatusMessage: jr.SeverityText}
				if err := hexID(s.TraceID[:], jr.TraceID, "traceId"); err != nil {
					return dst, untraced, err
				}
				if err := hexID(s.SpanID[:], jr.SpanID, "spanId"); err != nil {
					return dst, untraced, err
				}
				if s.TraceID == (store.TraceID{}) {
					untraced++
					continue
				}
				if jr.Body != (jsonValue{}) {
					body, err := jr.Body.value(0)
					if err != nil {
						return dst, untraced, err
					}
					s.Name = body.Text()
				}
				for _, kv := range jr.Attributes {
					a, err := kv.attr(0)
					if err != nil {
						return dst, untraced, err
					}
					s.Attrs = append(s.Attrs, a)
				}
				if jr.EventName != "" {
					s.Attrs = append(s.Attrs, strAttr("event.name", jr.EventName))
				}
				sev := uint64(0)
				if jr.SeverityNumber > 0 {
					sev = uint64(jr.SeverityNumber)
				}
				finishLog(&s, uint64(jr.TimeUnixNano), uint64(jr.ObservedTimeUnixNano), sev)
				s.Attrs = append(s.Attrs, scope...)
				dst = append(dst, s)
			}
		}
	}
	return dst, untraced, nil
}
