package mq

import (
	"context"

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
