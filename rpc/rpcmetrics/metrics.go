// Package rpcmetrics records Prometheus metrics of Tangram RPC servers and
// clients: per-method latency, in-flight calls, status codes and late
// replies. It is apart from package rpc so that a program using RPC without
// Prometheus does not link it.
package rpcmetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/rpc"
)

// Metrics holds the Prometheus collectors of Tangram RPC. Create one per
// registry and share it among servers and clients:
//
//	m, _ := rpcmetrics.New(reg)
//	srv, _ := rpc.NewServer(rpc.Config{Interceptors: []rpc.ServerInterceptor{m.ServerInterceptor()}})
//	c, _ := rpc.Dial(ctx, addr, m.DialOptions()...)
type Metrics struct {
	serverSeconds *prometheus.HistogramVec
	serverTotal   *prometheus.CounterVec
	serverActive  *prometheus.GaugeVec
	clientSeconds *prometheus.HistogramVec
	clientTotal   *prometheus.CounterVec
	lateReplies   prometheus.Counter
}

var rpcBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New registers the RPC collectors in reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		serverSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tangram_rpc_server_handling_seconds", Help: "Time to handle a unary call, by method.",
			Buckets: rpcBuckets}, []string{"method"}),
		serverTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tangram_rpc_server_handled_total", Help: "Unary calls handled, by method and status code."},
			[]string{"method", "code"}),
		serverActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tangram_rpc_server_in_flight", Help: "Unary calls being handled, by method."}, []string{"method"}),
		clientSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tangram_rpc_client_call_seconds", Help: "Latency of unary calls as the caller saw it, by method.",
			Buckets: rpcBuckets}, []string{"method"}),
		clientTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tangram_rpc_client_calls_total", Help: "Unary calls made, by method and status code."},
			[]string{"method", "code"}),
		lateReplies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tangram_rpc_client_late_replies_total", Help: "Replies dropped because their call had already timed out or been canceled."}),
	}
	for _, c := range []prometheus.Collector{m.serverSeconds, m.serverTotal, m.serverActive, m.clientSeconds, m.clientTotal, m.lateReplies} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// rpc.ServerInterceptor records per-method latency, in-flight calls and status
// codes on a server.
func (m *Metrics) ServerInterceptor() rpc.ServerInterceptor {
	return func(ctx context.Context, req any, info *rpc.CallInfo, next rpc.UnaryHandler) (any, error) {
		g := m.serverActive.WithLabelValues(info.Method)
		g.Inc()
		start := time.Now()
		resp, err := next(ctx, req)
		m.serverSeconds.WithLabelValues(info.Method).Observe(time.Since(start).Seconds())
		m.serverTotal.WithLabelValues(info.Method, rpc.CodeOf(err).String()).Inc()
		g.Dec()
		return resp, err
	}
}

// rpc.ClientInterceptor records per-method latency and status codes on a client.
func (m *Metrics) ClientInterceptor() rpc.ClientInterceptor {
	return func(ctx context.Context, info *rpc.CallInfo, req, resp any, next rpc.Invoker) error {
		start := time.Now()
		err := next(ctx, info, req, resp)
		m.clientSeconds.WithLabelValues(info.Method).Observe(time.Since(start).Seconds())
		m.clientTotal.WithLabelValues(info.Method, rpc.CodeOf(err).String()).Inc()
		return err
	}
}

// rpc.StreamServerInterceptor records streams like unary calls: duration from
// open to end, in flight, and the final status code.
func (m *Metrics) StreamServerInterceptor() rpc.StreamServerInterceptor {
	return func(ctx context.Context, info *rpc.CallInfo, next func(context.Context) error) error {
		g := m.serverActive.WithLabelValues(info.Method)
		g.Inc()
		start := time.Now()
		err := next(ctx)
		m.serverSeconds.WithLabelValues(info.Method).Observe(time.Since(start).Seconds())
		m.serverTotal.WithLabelValues(info.Method, rpc.CodeOf(err).String()).Inc()
		g.Dec()
		return err
	}
}

// DialOptions are the options that make a client record its calls in m:
// the client interceptor and the count of late replies.
func (m *Metrics) DialOptions() []rpc.DialOption {
	return []rpc.DialOption{rpc.WithInterceptors(m.ClientInterceptor()), rpc.WithLateReplyHook(m.lateReplies.Inc)}
}
