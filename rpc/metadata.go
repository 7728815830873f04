package rpc

import "context"

// Metadata is a set of string pairs sent with a call (request headers) or
// with its answer. Names that cross processes in Tangram: "traceparent",
// "tracestate", "tangram-xid", "tangram-caller", "authorization".
type Metadata map[string]string

// Metadata keys with a meaning across the platform.
const (
	MetaTraceParent   = "traceparent"
	MetaTraceState    = "tracestate"
	MetaXID           = "tangram-xid"
	MetaCaller        = "tangram-caller"
	MetaAuthorization = "authorization"
)

type outgoingKey struct{}
type incomingKey struct{}

// WithOutgoing returns a context whose calls carry the pairs kv (key, value,
// key, value…) in addition to any already set on ctx.
func WithOutgoing(ctx context.Context, kv ...string) context.Context {
	old, _ := ctx.Value(outgoingKey{}).(Metadata)
	md := make(Metadata, len(old)+len(kv)/2)
	for k, v := range old {
		md[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	return context.WithValue(ctx, outgoingKey{}, md)
}

// Outgoing returns the metadata that calls made with ctx will carry. The map
// must not be modified.
func Outgoing(ctx context.Context) Metadata {
	md, _ := ctx.Value(outgoingKey{}).(Metadata)
	return md
}

// Incoming returns the metadata the caller sent, in a handler's context.
func Incoming(ctx context.Context) Metadata {
	md, _ := ctx.Value(incomingKey{}).(Metadata)
	return md
}

func withIncoming(ctx context.Context, md Metadata) context.Context {
	if md == nil {
		return ctx
	}
	return context.WithValue(ctx, incomingKey{}, md)
}

// Propagate returns a context for outgoing calls that forwards the
// platform-wide keys (trace context excepted: the tracing interceptor starts a
// child span) found in the incoming metadata of ctx: tangram-xid joins the
// callee to a global transaction wherever it goes.
func Propagate(ctx context.Context) context.Context {
	in := Incoming(ctx)
	if in == nil {
		return ctx
	}
	var kv []string
	for _, k := range [...]string{MetaXID} {
		if v, ok := in[k]; ok {
			kv = append(kv, k, v)
		}
	}
	if kv == nil {
		return ctx
	}
	return WithOutgoing(ctx, kv...)
}
