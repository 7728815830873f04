package txn

import (
	"context"
	"net/http"

	"github.com/tangram-dev/tangram/rpc"
)

type xidKey struct{}

// WithXID returns a context inside global transaction xid: an AT database
// (txn/at) opened with it joins its local transactions to xid, and Tangram
// RPC calls made with it carry xid in their metadata.
func WithXID(ctx context.Context, xid string) context.Context {
	if xid == "" {
		return ctx
	}
	return rpc.WithOutgoing(context.WithValue(ctx, xidKey{}, xid), rpc.MetaXID, xid)
}

// XIDFrom returns the global transaction ctx is inside, "" for none: set
// by WithXID (the initiator's Client.AT, Middleware), or arrived in an RPC
// call's metadata (a participant's handler joins its caller's transaction
// without code of its own).
func XIDFrom(ctx context.Context) string {
	if x, ok := ctx.Value(xidKey{}).(string); ok {
		return x
	}
	if x := rpc.Incoming(ctx)[rpc.MetaXID]; x != "" {
		return x
	}
	return rpc.Outgoing(ctx)[rpc.MetaXID]
}

// SetHeader puts ctx's XID on an outgoing HTTP request's headers (the
// tangram-xid header), so the service called joins the transaction.
func SetHeader(ctx context.Context, h http.Header) {
	if x := XIDFrom(ctx); x != "" {
		h.Set(HeaderXID, x)
	}
}

// Middleware makes an HTTP handler's request context carry the XID the
// caller sent in the tangram-xid header (an invalid one is refused with
// 400), so an AT database used by the handler joins the transaction.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := r.Header.Get(HeaderXID)
		if x == "" {
			next.ServeHTTP(w, r)
			return
		}
		if err := ValidXID(x); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithXID(r.Context(), x)))
	})
}
