package rpc

import "context"

// CallInfo describes the call an interceptor sees.
type CallInfo struct {
	// Method is the full name, "Service/Method".
	Method string
	// Peer is the remote address: the caller on the server, the chosen
	// endpoint on the client (empty before one is picked).
	Peer string
	// Stream is set for streaming calls; Oneway for calls sent without
	// waiting for an answer (a client interceptor then gets resp nil).
	Stream bool
	Oneway bool
}

// UnaryHandler runs a decoded request and returns the response.
type UnaryHandler func(ctx context.Context, req any) (any, error)

// ServerInterceptor wraps the handling of every unary call on a server.
// It may change ctx, inspect or replace req and the result, or answer without
// calling next.
type ServerInterceptor func(ctx context.Context, req any, info *CallInfo, next UnaryHandler) (any, error)

// StreamServerInterceptor wraps a stream handler; next runs the handler with
// the context given to it.
type StreamServerInterceptor func(ctx context.Context, info *CallInfo, next func(ctx context.Context) error) error

// Invoker performs a call: encode req, send, wait, decode into resp.
type Invoker func(ctx context.Context, info *CallInfo, req, resp any) error

// ClientInterceptor wraps every unary call a client makes. Metadata added to
// the context with WithOutgoing before calling next travels with the call.
type ClientInterceptor func(ctx context.Context, info *CallInfo, req, resp any, next Invoker) error

// StreamClientInterceptor runs when a client opens a stream. It returns the
// context the stream is opened with and a function called once with the
// stream's final error (nil for a clean end).
type StreamClientInterceptor func(ctx context.Context, info *CallInfo) (context.Context, func(err error))

func chainServer(ics []ServerInterceptor, h UnaryHandler, info *CallInfo) UnaryHandler {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], h
		h = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, next) }
	}
	return h
}

func chainStreamServer(ics []StreamServerInterceptor, h func(context.Context) error, info *CallInfo) func(context.Context) error {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], h
		h = func(ctx context.Context) error { return ic(ctx, info, next) }
	}
	return h
}

func chainClient(ics []ClientInterceptor, inv Invoker) Invoker {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], inv
		inv = func(ctx context.Context, info *CallInfo, req, resp any) error {
			return ic(ctx, info, req, resp, next)
		}
	}
	return inv
}

type callInfoKey struct{}

type connKey struct{}

// ConnContext returns, in a server handler, the context of the connection
// the call came on: it is done when that connection closes (the client
// left, died or was cut off). Servers use it to end what belongs to a
// client's session at once, rather than waiting for its heartbeats to
// time out. Outside a server call it returns nil.
func ConnContext(ctx context.Context) context.Context {
	c, _ := ctx.Value(connKey{}).(context.Context)
	return c
}

// Info returns the CallInfo of the call a handler's context belongs to.
func Info(ctx context.Context) *CallInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*CallInfo)
	return ci
}
