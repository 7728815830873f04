package job

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"
)

const tracerName = "github.com/tangram-dev/tangram/job"

// startRunSpan starts the executor's span of a run, a child of the
// scheduler's dispatch span when the request carries its traceparent.
func (e *Executor) startRunSpan(ctx context.Context, req *RunRequest) (context.Context, oteltrace.Span) {
	if e.cfg.TracerProvider == nil {
		return ctx, nil
	}
	if req.TraceParent != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": req.TraceParent})
	}
	return e.cfg.TracerProvider.Tracer(tracerName).Start(ctx, "run "+req.Job, oteltrace.WithSpanKind(oteltrace.SpanKindConsumer),
		oteltrace.WithAttributes(attribute.String("job.name", req.Job), attribute.String("job.handler", req.Handler),
			attribute.Int64("job.run_id", req.RunID), attribute.Int("job.attempt", req.Attempt),
			attribute.String("job.shard", strconv.Itoa(req.ShardIndex)+"/"+strconv.Itoa(req.ShardTotal)),
			attribute.String("job.app", e.cfg.App)))
}

// endRunSpan ends it with the run's outcome.
func endRunSpan(span oteltrace.Span, rep *ReportRequest) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.String("job.status", rep.Status))
	if rep.Status != StatusSucceeded {
		span.SetStatus(codes.Error, rep.Error)
	}
	span.End()
}
