package shard

import (
	"context"
	"database/sql"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/span"
)

// A traced executor (ExecutorConfig.TracerProvider) records each logical
// statement as a span — "shard SELECT", with the statement as the
// application wrote it and how many units it became — and each unit
// under it as a client span on its data source ("SELECT ds_1", the
// rewritten statement), so a trace shows the fan-out: which shards a
// statement reached and which one was slow.

// statement starts a logical statement's span.
func (e *Executor) statement(ctx context.Context, q string) (context.Context, oteltrace.Span) {
	return e.span.Start(ctx, "shard "+operation(q), oteltrace.SpanKindInternal,
		attribute.String("db.query.text", q), attribute.String("db.operation.name", operation(q)))
}

// endStatement ends it with the units routed and the error.
func endStatement(s oteltrace.Span, rd *Routed, err error) {
	if rd != nil {
		s.SetAttributes(attribute.Int("shard.units", len(rd.Units)))
	}
	span.End(s, err)
}

// operation is a statement's first word, upper-cased ("SELECT").
func operation(q string) string {
	q = strings.TrimLeft(q, " \t\r\n(")
	end := strings.IndexAny(q, " \t\r\n(")
	if end < 0 {
		end = len(q)
	}
	return strings.ToUpper(q[:min(end, 32)])
}

// traceUnits wraps a runner so that each statement it runs on data
// source ds is a client span (when the executor traces).
func (e *Executor) traceUnits(r runner, ds string) runner {
	if !e.span.On() {
		return r
	}
	return tracedRunner{r: r, ds: ds, t: e.span}
}

type tracedRunner struct {
	r  runner
	ds string
	t  span.Tracer
}

func (tr tracedRunner) start(ctx context.Context, q string) (context.Context, oteltrace.Span) {
	return tr.t.Start(ctx, operation(q)+" "+tr.ds, oteltrace.SpanKindClient, attribute.String("db.system.name", "mysql"),
		attribute.String("db.namespace", tr.ds), attribute.String("db.query.text", q), attribute.String("db.operation.name", operation(q)))
}

func (tr tracedRunner) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx, s := tr.start(ctx, q)
	res, err := tr.r.ExecContext(ctx, q, args...)
	span.End(s, err)
	return res, err
}

// QueryContext's span ends when the data source has answered (its rows
// are read after).
func (tr tracedRunner) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx, s := tr.start(ctx, q)
	rows, err := tr.r.QueryContext(ctx, q, args...)
	span.End(s, err)
	return rows, err
}
