package server

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/job"
)

const tracerName = "github.com/tangram-dev/tangram/job/server"

// startRunSpan starts the span of a run's dispatch — the root of the
// run's trace — and puts its context in the request for the executor.
// Without a TracerProvider it returns nil and leaves rr alone.
func (s *Scheduler) startRunSpan(ctx context.Context, j *job.Job, rr *job.RunRequest, executor string) oteltrace.Span {
	if s.cfg.TracerProvider == nil {
		return nil
	}
	ctx, span := s.cfg.TracerProvider.Tracer(tracerName).Start(ctx, "job "+j.Name, oteltrace.WithNewRoot(),
		oteltrace.WithSpanKind(oteltrace.SpanKindProducer), oteltrace.WithAttributes(
			attribute.String("job.name", j.Name), attribute.String("job.app", j.App), attribute.String("job.handler", j.Handler),
			attribute.Int64("job.run_id", rr.RunID), attribute.Int("job.attempt", rr.Attempt),
			attribute.String("job.shard", strconv.Itoa(rr.ShardIndex)+"/"+strconv.Itoa(rr.ShardTotal)),
			attribute.String("job.executor", executor)))
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	rr.TraceParent = carrier["traceparent"]
	return span
}

// endRunSpan ends a dispatch span with the dispatch's outcome.
func endRunSpan(span oteltrace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
