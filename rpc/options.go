package rpc

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/tangram-dev/tangram/rpc/balance"
	"github.com/tangram-dev/tangram/rpc/codec"
)

// DialOption configures a Client.
type DialOption func(*dialOptions)

type dialOptions struct {
	resolver      Resolver
	balancer      balance.Balancer
	zone          string
	conns         int
	codec         codec.Codec
	timeout       time.Duration
	dialTimeout   time.Duration
	maxFrame      int
	hbInterval    time.Duration
	hbTimeout     time.Duration
	retry         RetryPolicy
	hedge         time.Duration
	interceptors  []ClientInterceptor
	streamIcs     []StreamClientInterceptor
	logger        *slog.Logger
	onLateReply   func()
	dialer        func(ctx context.Context, addr string) (net.Conn, error)
	compressAbove int
	streamWindow  int
	idempotent    map[string]bool
	meta          Metadata
}

// RetryPolicy bounds retries. A call is retried only when it cannot have run
// twice (the request was never written, or the server refused it before
// starting it) or when it is idempotent and failed with Unavailable; each
// retry goes to an endpoint not tried yet for that call.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt; 1 disables retries. Default 3.
	MaxAttempts int
	// BudgetRatio is how many retries each call earns (default 0.1: retries
	// add at most 10 % load), and BudgetMax the tokens saved up for bursts
	// (default 10). A retry spends one token; without one it is not made.
	BudgetRatio float64
	BudgetMax   int
}

func defaultDialOptions() dialOptions {
	return dialOptions{
		balancer:     balance.P2C(),
		conns:        1,
		dialTimeout:  3 * time.Second,
		maxFrame:     DefaultMaxFrameSize,
		hbInterval:   5 * time.Second,
		hbTimeout:    15 * time.Second,
		retry:        RetryPolicy{MaxAttempts: 3, BudgetRatio: 0.1, BudgetMax: 10},
		logger:       slog.Default(),
		streamWindow: 256 << 10,
	}
}

// WithResolver makes the client take its endpoints from r instead of the
// target string (which may then be empty).
func WithResolver(r Resolver) DialOption { return func(o *dialOptions) { o.resolver = r } }

// WithBalancer sets the load balancer (default balance.P2C()).
func WithBalancer(b balance.Balancer) DialOption { return func(o *dialOptions) { o.balancer = b } }

// WithZone makes the client prefer endpoints in zone (wrapping the balancer
// in balance.Zone).
func WithZone(zone string) DialOption { return func(o *dialOptions) { o.zone = zone } }

// WithConns sets the connections kept per endpoint (default 1: calls are
// multiplexed, so more rarely helps; a few spread the reading over cores).
func WithConns(n int) DialOption {
	return func(o *dialOptions) {
		if n > 0 {
			o.conns = n
		}
	}
}

// WithCodec sets the codec of every call (default: protobuf for protobuf
// messages, msgpack for other values).
func WithCodec(c codec.Codec) DialOption { return func(o *dialOptions) { o.codec = c } }

// WithTimeout sets the deadline of calls whose context has none.
func WithTimeout(d time.Duration) DialOption { return func(o *dialOptions) { o.timeout = d } }

// WithDialTimeout bounds connecting to one endpoint (default 3 s).
func WithDialTimeout(d time.Duration) DialOption { return func(o *dialOptions) { o.dialTimeout = d } }

// WithMaxFrameSize bounds frames the client accepts (default 16 MiB).
func WithMaxFrameSize(n int) DialOption { return func(o *dialOptions) { o.maxFrame = n } }

// WithHeartbeat sets how long a connection may be silent before a ping and
// before it is declared dead (default 5 s and 15 s).
func WithHeartbeat(interval, timeout time.Duration) DialOption {
	return func(o *dialOptions) { o.hbInterval, o.hbTimeout = interval, timeout }
}

// WithRetry sets the retry policy.
func WithRetry(p RetryPolicy) DialOption { return func(o *dialOptions) { o.retry = p } }

// WithHedging sends a backup copy of an idempotent call to another endpoint
// when no answer came within delay; the first answer wins.
func WithHedging(delay time.Duration) DialOption { return func(o *dialOptions) { o.hedge = delay } }

// WithInterceptors appends unary client interceptors (first outermost).
func WithInterceptors(ics ...ClientInterceptor) DialOption {
	return func(o *dialOptions) { o.interceptors = append(o.interceptors, ics...) }
}

// WithStreamInterceptors appends stream client interceptors.
func WithStreamInterceptors(ics ...StreamClientInterceptor) DialOption {
	return func(o *dialOptions) { o.streamIcs = append(o.streamIcs, ics...) }
}

// WithLogger sets the client's logger.
func WithLogger(l *slog.Logger) DialOption { return func(o *dialOptions) { o.logger = l } }

// WithLateReplyHook calls fn for every reply that arrives after its call
// had already timed out or been canceled (package rpcmetrics counts them).
func WithLateReplyHook(fn func()) DialOption { return func(o *dialOptions) { o.onLateReply = fn } }

// WithDialer replaces net.Dialer (tests use it to inject faults).
func WithDialer(d func(ctx context.Context, addr string) (net.Conn, error)) DialOption {
	return func(o *dialOptions) { o.dialer = d }
}

// WithCompression gzips request bodies above n bytes (and asks the server to
// do the same for responses). 0 disables it (the default).
func WithCompression(n int) DialOption { return func(o *dialOptions) { o.compressAbove = n } }

// WithIdempotent marks methods ("Service/Method") as idempotent for every
// call: they may be retried after Unavailable and hedged.
func WithIdempotent(methods ...string) DialOption {
	return func(o *dialOptions) {
		if o.idempotent == nil {
			o.idempotent = map[string]bool{}
		}
		for _, m := range methods {
			o.idempotent[m] = true
		}
	}
}

// WithMetadata sends the pairs kv (key, value, …) with every call and stream
// of the client, under any set on the call's context.
func WithMetadata(kv ...string) DialOption {
	return func(o *dialOptions) {
		if o.meta == nil {
			o.meta = Metadata{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			o.meta[kv[i]] = kv[i+1]
		}
	}
}

// WithToken sends token as the bearer token of every call and stream.
func WithToken(token string) DialOption { return WithMetadata(MetaAuthorization, "Bearer "+token) }

// CallOption modifies one call.
type CallOption func(*callOptions)

type callOptions struct {
	idempotent bool
	key        string
	hedge      time.Duration
	timeout    time.Duration
	codec      codec.Codec
}

// Idempotent marks the call safe to run twice: it may be retried on another
// endpoint after Unavailable, and hedged.
func Idempotent() CallOption { return func(o *callOptions) { o.idempotent = true } }

// HashKey sets the key consistent hashing routes the call by.
func HashKey(k string) CallOption { return func(o *callOptions) { o.key = k } }

// Hedge sends a backup request to another endpoint after delay without an
// answer; implies Idempotent.
func Hedge(delay time.Duration) CallOption {
	return func(o *callOptions) { o.hedge, o.idempotent = delay, true }
}

// Timeout bounds this call (in addition to ctx's deadline).
func Timeout(d time.Duration) CallOption { return func(o *callOptions) { o.timeout = d } }

// Codec sends this call's request with c.
func Codec(c codec.Codec) CallOption { return func(o *callOptions) { o.codec = c } }

type callOptsKey struct{}

// WithCallOptions returns a context whose calls apply opts — how options
// reach calls made through generated clients, whose methods match the
// service interface exactly.
func WithCallOptions(ctx context.Context, opts ...CallOption) context.Context {
	old, _ := ctx.Value(callOptsKey{}).([]CallOption)
	return context.WithValue(ctx, callOptsKey{}, append(append([]CallOption(nil), old...), opts...))
}
