package trace

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// LogOptions configures NewLogHandler.
type LogOptions struct {
	// SpanEvents also records each log record as an event ("log") on the
	// span it was logged under, with its level, message and attributes:
	// the collector then stores the logs with their trace, and the
	// waterfall shows each span's logs inline.
	SpanEvents bool
	// MinEventLevel is the lowest level recorded as a span event (default
	// Info: debug chatter stays out of traces).
	MinEventLevel slog.Level
}

// NewLogHandler wraps next so that every record logged with a context
// holding a span carries the span's trace_id and span_id — the way from a
// slow request in the trace search to its log lines, and back.
func NewLogHandler(next slog.Handler, opts LogOptions) slog.Handler {
	return &logHandler{next: next, opts: opts}
}

type logHandler struct {
	next   slog.Handler
	opts   LogOptions
	group  string // the WithGroup prefix for event attribute keys
	preset []attribute.KeyValue
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	span := oteltrace.SpanFromContext(ctx)
	sc := span.SpanContext()
	if !sc.IsValid() {
		return h.next.Handle(ctx, r)
	}
	if h.opts.SpanEvents && r.Level >= h.opts.MinEventLevel && span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 2+len(h.preset)+r.NumAttrs())
		attrs = append(attrs, attribute.String("log.severity", r.Level.String()), attribute.String("log.message", r.Message))
		attrs = append(attrs, h.preset...)
		r.Attrs(func(a slog.Attr) bool {
			attrs = appendSlogAttr(attrs, h.group, a)
			return true
		})
		span.AddEvent("log", oteltrace.WithTimestamp(r.Time), oteltrace.WithAttributes(attrs...))
	}
	r = r.Clone()
	r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	return h.next.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	if h.opts.SpanEvents {
		c.preset = append([]attribute.KeyValue(nil), h.preset...)
		for _, a := range as {
			c.preset = appendSlogAttr(c.preset, h.group, a)
		}
	}
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.group = h.group + name + "."
	return &c
}

// appendSlogAttr flattens a slog attribute (groups become dotted keys)
// into OpenTelemetry attributes.
func appendSlogAttr(dst []attribute.KeyValue, prefix string, a slog.Attr) []attribute.KeyValue {
	v := a.Value.Resolve()
	if a.Key == "" && v.Kind() != slog.KindGroup {
		return dst
	}
	key := prefix + a.Key
	switch v.Kind() {
	case slog.KindGroup:
		p := prefix
		if a.Key != "" {
			p = key + "."
		}
		for _, g := range v.Group() {
			dst = appendSlogAttr(dst, p, g)
		}
		return dst
	case slog.KindString:
		return append(dst, attribute.String(key, v.String()))
	case slog.KindInt64:
		return append(dst, attribute.Int64(key, v.Int64()))
	case slog.KindUint64:
		return append(dst, attribute.Int64(key, int64(v.Uint64())))
	case slog.KindFloat64:
		return append(dst, attribute.Float64(key, v.Float64()))
	case slog.KindBool:
		return append(dst, attribute.Bool(key, v.Bool()))
	}
	return append(dst, attribute.String(key, v.String()))
}
