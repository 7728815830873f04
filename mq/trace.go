package mq

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

var traceContext = propagation.TraceContext{}

// injectContext puts the sender's trace context (W3C traceparent) and
// global transaction (tangram-xid) into a message's properties, as RPC
// puts them into call metadata, unless the caller set them.
func injectContext(ctx context.Context, props map[string]string) {
	if _, set := props[wire.PropTrace]; !set && trace.SpanContextFromContext(ctx).IsValid() {
		traceContext.Inject(ctx, propagation.MapCarrier(props))
	}
	if _, set := props[wire.PropXID]; !set {
		xid := rpc.Outgoing(ctx)[rpc.MetaXID]
		if xid == "" {
			xid = rpc.Incoming(ctx)[rpc.MetaXID]
		}
		if xid != "" {
			props[wire.PropXID] = xid
		}
	}
}

// handlerContext is the context a handler runs with: the message's trace
// context as the remote parent (a handler's spans join the producer's
// trace), and its tangram-xid on outgoing calls.
func handlerContext(ctx context.Context, m *Message) context.Context {
	if m.Props[wire.PropTrace] != "" {
		ctx = traceContext.Extract(ctx, propagation.MapCarrier(m.Props))
	}
	if xid := m.Props[wire.PropXID]; xid != "" {
		ctx = rpc.WithOutgoing(ctx, rpc.MetaXID, xid)
	}
	return ctx
}

// tracerName is the instrumentation scope of the MQ spans.
const tracerName = "github.com/tangram-dev/tangram/mq"

func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

// startSend starts the producer span of a send of n messages to topic
// (none without a tracer); the messages built under the returned context
// carry the span's context.
func (c *Client) startSend(ctx context.Context, topic string, n int) (context.Context, trace.Span) {
	if c.tracer == nil {
		return ctx, nil
	}
	attrs := []attribute.KeyValue{attribute.String("messaging.system", "tangram"), attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.destination.name", topic)}
	if n > 1 {
		attrs = append(attrs, attribute.Int("messaging.batch.message_count", n))
	}
	return c.tracer.Start(ctx, "send "+topic, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
}

// endSend ends a producer span with the send's outcome.
func endSend(span trace.Span, rs []*SendResult, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else if len(rs) > 0 {
		span.SetAttributes(attribute.String("messaging.message.id", rs[0].MsgID), attribute.String("messaging.tangram.broker", rs[0].Broker),
			attribute.String("messaging.destination.partition.id", strconv.FormatUint(uint64(rs[0].Queue), 10)))
	}
	span.End()
}

// startProcess starts the consumer span of handling m, a child of the
// producer's span (one trace from request to consumer) that also links to
// it, as OpenTelemetry's messaging conventions ask.
func (cs *Consumer) startProcess(ctx context.Context, m *Message) (context.Context, trace.Span) {
	if cs.c.tracer == nil {
		return ctx, nil
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("messaging.system", "tangram"), attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", m.Topic), attribute.String("messaging.consumer.group.name", cs.cfg.Group),
		attribute.String("messaging.message.id", m.MsgID), attribute.String("messaging.tangram.broker", m.Broker),
		attribute.String("messaging.destination.partition.id", strconv.FormatUint(uint64(m.Queue), 10)),
		attribute.Int("messaging.tangram.reconsume_times", m.Reconsumed))}
	if p := trace.SpanContextFromContext(ctx); p.IsValid() && p.IsRemote() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: p}))
	}
	return cs.c.tracer.Start(ctx, "process "+m.Topic, opts...)
}
