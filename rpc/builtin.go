package rpc

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// mdCarrier adapts Metadata to OpenTelemetry's propagation.TextMapCarrier.
type mdCarrier Metadata

func (c mdCarrier) Get(k string) string { return c[k] }
func (c mdCarrier) Set(k, v string)     { c[k] = v }
func (c mdCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

var traceContext = propagation.TraceContext{}

const tracerName = "github.com/tangram-dev/tangram/rpc"

// ServerTracing starts a server span per call, joined to the caller's trace
// through the W3C traceparent (and tracestate) metadata.
func ServerTracing(tp trace.TracerProvider) ServerInterceptor {
	tr := tp.Tracer(tracerName)
	return func(ctx context.Context, req any, info *CallInfo, next UnaryHandler) (any, error) {
		ctx = traceContext.Extract(ctx, mdCarrier(Incoming(ctx)))
		ctx, span := tr.Start(ctx, info.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("rpc.system", "tangram"), attribute.String("rpc.method", info.Method),
				attribute.String("network.peer.address", info.Peer)))
		defer span.End()
		resp, err := next(ctx, req)
		endSpan(span, err)
		return resp, err
	}
}

// ClientTracing starts a client span per call and sends its context to the
// server in the traceparent metadata.
func ClientTracing(tp trace.TracerProvider) ClientInterceptor {
	tr := tp.Tracer(tracerName)
	return func(ctx context.Context, info *CallInfo, req, resp any, next Invoker) error {
		ctx, span := tr.Start(ctx, info.Method, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("rpc.system", "tangram"), attribute.String("rpc.method", info.Method)))
		defer span.End()
		md := Metadata{}
		traceContext.Inject(ctx, mdCarrier(md))
		kv := make([]string, 0, 2*len(md))
		for k, v := range md {
			kv = append(kv, k, v)
		}
		err := next(WithOutgoing(ctx, kv...), info, req, resp)
		if info.Peer != "" {
			span.SetAttributes(attribute.String("server.address", info.Peer))
		}
		endSpan(span, err)
		return err
	}
}

func endSpan(span trace.Span, err error) {
	code := CodeOf(err)
	span.SetAttributes(attribute.String("rpc.tangram.status_code", code.String()))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, code.String())
	}
}

// ServerLogging logs every call: failures at Warn, successes at Debug.
func ServerLogging(l *slog.Logger) ServerInterceptor {
	return func(ctx context.Context, req any, info *CallInfo, next UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		lvl := slog.LevelDebug
		if err != nil {
			lvl = slog.LevelWarn
		}
		if l.Enabled(ctx, lvl) {
			l.Log(ctx, lvl, "rpc call", "method", info.Method, "peer", info.Peer, "code", CodeOf(err).String(),
				"duration", time.Since(start), "err", err)
		}
		return resp, err
	}
}

// ServerAuth checks the bearer token of every call with check, which returns
// the context the handler runs with (carrying the caller's identity) or an
// error. Calls without a token, or whose check fails, get Unauthenticated
// (or the code of an *Error that check returns).
func ServerAuth(check func(ctx context.Context, token string) (context.Context, error)) ServerInterceptor {
	return func(ctx context.Context, req any, info *CallInfo, next UnaryHandler) (any, error) {
		tok, ok := strings.CutPrefix(Incoming(ctx)[MetaAuthorization], "Bearer ")
		if !ok || tok == "" {
			return nil, Errorf(Unauthenticated, "%s needs a bearer token in the authorization metadata", info.Method)
		}
		ctx, err := check(ctx, tok)
		if err != nil {
			if CodeOf(err) == Unknown {
				return nil, Errorf(Unauthenticated, "%v", err)
			}
			return nil, err
		}
		return next(ctx, req)
	}
}

// ClientToken sends token as the bearer token of every call.
func ClientToken(token string) ClientInterceptor {
	return func(ctx context.Context, info *CallInfo, req, resp any, next Invoker) error {
		return next(WithOutgoing(ctx, MetaAuthorization, "Bearer "+token), info, req, resp)
	}
}

// ClientCaller names the calling service in the tangram-caller metadata and
// forwards the platform-wide keys (tangram-xid) of the call being handled,
// when ctx is a handler's context.
func ClientCaller(name string) ClientInterceptor {
	return func(ctx context.Context, info *CallInfo, req, resp any, next Invoker) error {
		return next(WithOutgoing(Propagate(ctx), MetaCaller, name), info, req, resp)
	}
}

// StreamServerTracing is ServerTracing for streams: one span per stream.
func StreamServerTracing(tp trace.TracerProvider) StreamServerInterceptor {
	tr := tp.Tracer(tracerName)
	return func(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
		ctx = traceContext.Extract(ctx, mdCarrier(Incoming(ctx)))
		ctx, span := tr.Start(ctx, info.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("rpc.system", "tangram"), attribute.String("rpc.method", info.Method),
				attribute.Bool("rpc.tangram.stream", true), attribute.String("network.peer.address", info.Peer)))
		defer span.End()
		err := next(ctx)
		endSpan(span, err)
		return err
	}
}

// StreamClientTracing is ClientTracing for streams: the span ends when Recv
// returns the stream's end (or Cancel is called).
func StreamClientTracing(tp trace.TracerProvider) StreamClientInterceptor {
	tr := tp.Tracer(tracerName)
	return func(ctx context.Context, info *CallInfo) (context.Context, func(error)) {
		ctx, span := tr.Start(ctx, info.Method, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("rpc.system", "tangram"), attribute.String("rpc.method", info.Method),
				attribute.Bool("rpc.tangram.stream", true)))
		md := Metadata{}
		traceContext.Inject(ctx, mdCarrier(md))
		kv := make([]string, 0, 2*len(md))
		for k, v := range md {
			kv = append(kv, k, v)
		}
		return WithOutgoing(ctx, kv...), func(err error) {
			endSpan(span, err)
			span.End()
		}
	}
}
