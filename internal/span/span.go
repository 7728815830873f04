// Package span is how Tangram's client packages (locks, caches, the
// sharding driver) record OpenTelemetry spans around their operations,
// all the same way: off — no span, no attribute built, nothing allocated —
// unless the package was given a TracerProvider; a client span named for
// the operation, its attributes, and an error status when it failed.
package span

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// Tracer starts a package's spans; its zero value records none.
type Tracer struct{ t oteltrace.Tracer }

// New is a tracer for the instrumentation scope (the package's import
// path) from tp; a nil tp records nothing.
func New(tp oteltrace.TracerProvider, scope string) Tracer {
	if tp == nil {
		return Tracer{}
	}
	return Tracer{tp.Tracer(scope)}
}

// On says whether spans are recorded: callers skip building attributes
// when not.
func (t Tracer) On() bool { return t.t != nil }

// Start starts a span of kind under ctx (a no-op span when off).
func (t Tracer) Start(ctx context.Context, name string, kind oteltrace.SpanKind, attrs ...attribute.KeyValue) (context.Context, oteltrace.Span) {
	if t.t == nil {
		return ctx, oteltrace.SpanFromContext(context.Background()) // a no-op span
	}
	return t.t.Start(ctx, name, oteltrace.WithSpanKind(kind), oteltrace.WithAttributes(attrs...))
}

// End ends s, with an error status and the error recorded when err is
// not nil.
func End(s oteltrace.Span, err error) {
	if err != nil {
		s.RecordError(err)
		s.SetStatus(codes.Error, err.Error())
	}
	s.End()
}
