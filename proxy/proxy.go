// Package proxy is `tangram proxy`: it forwards Tangram RPC and HTTP/1.1
// traffic to the healthy instances of services found through the registry,
// with the RPC client's balancers. Run one per host and it is the sidecar the
// host's clients share; run it centrally and it is the F5-style proxy — the
// other two registry deployment modes (beside the client-side one).
//
// RPC routes forward unary and oneway calls frame by frame (bodies are not
// decoded; metadata passes through), so each call is balanced on its own;
// streams are not proxied. HTTP routes balance each request and retry
// requests without a body (or with a replayable one) on another instance when
// the chosen one cannot be reached.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/rpc/balance"
)

// Route sends what arrives on Listen to the instances of Service.
type Route struct {
	Listen   string       `json:"listen"`   // host:port
	Service  registry.Key `json:"service"`  // namespace/group/service
	Protocol string       `json:"protocol"` // "rpc" or "http"
}

// ParseRoute parses "LISTEN=PROTOCOL:SERVICE", e.g. ":9001=rpc:orders" or
// "127.0.0.1:8080=http:public/default/web".
func ParseRoute(s string) (Route, error) {
	listen, rest, ok := strings.Cut(s, "=")
	proto, svc, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || listen == "" || svc == "" {
		return Route{}, fmt.Errorf("proxy: route %q: want LISTEN=rpc:SERVICE or LISTEN=http:SERVICE", s)
	}
	var k registry.Key
	switch parts := strings.Split(svc, "/"); len(parts) {
	case 1:
		k.Service = parts[0]
	case 3:
		k.Namespace, k.Group, k.Service = parts[0], parts[1], parts[2]
	default:
		return Route{}, fmt.Errorf("proxy: route %q: service is NAME or NAMESPACE/GROUP/NAME", s)
	}
	if proto != "rpc" && proto != "http" {
		return Route{}, fmt.Errorf("proxy: route %q: protocol %q, want rpc or http", s, proto)
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return Route{}, fmt.Errorf("proxy: route %q: listen address: %w", s, err)
	}
	return Route{Listen: listen, Service: k, Protocol: proto}, nil
}

// Config configures a Proxy.
type Config struct {
	// Registry is how the proxy discovers instances (servers, token, disk
	// snapshot directory).
	Registry registry.ClientConfig
	Routes   []Route
	// Balancer picks instances (default balance.P2C()); Zone prefers the
	// instances of one zone.
	Balancer balance.Balancer
	Zone     string
	// DrainTimeout bounds Shutdown's wait for requests in flight (10 s).
	DrainTimeout time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// Proxy serves the routes.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	disc    *registry.Client
	fronts  []front
	metrics *metrics
	wg      sync.WaitGroup
	closed  atomic.Bool
}

type front interface {
	addr() string
	shutdown(ctx context.Context) error
	close()
}

// DefaultConfig returns the defaults (no routes; Balancer P2C).
func DefaultConfig() Config {
	return Config{Balancer: balance.P2C(), DrainTimeout: 10 * time.Second, Logger: slog.Default()}
}

// Validate checks c; it changes nothing (New fills the defaults).
func (c Config) Validate() error {
	if len(c.Routes) == 0 {
		return errors.New("proxy: no routes")
	}
	if len(c.Registry.Servers) == 0 {
		return errors.New("proxy: no registry servers (Config.Registry.Servers)")
	}
	return nil
}

// New checks cfg and returns an unstarted proxy; Start connects to the
// registry and listens.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Balancer == nil {
		cfg.Balancer = balance.P2C()
	}
	if cfg.Zone != "" {
		cfg.Balancer = balance.Zone(cfg.Zone, cfg.Balancer)
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry.Logger == nil {
		cfg.Registry.Logger = cfg.Logger
	}
	cfg.Registry.KeepOnClose = true // the proxy registers nothing
	p := &Proxy{cfg: cfg, log: cfg.Logger, metrics: newMetrics()}
	if cfg.Registerer != nil {
		if err := p.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Start connects to the registry and listens on every route; it returns
// once they serve, and they serve until Shutdown or Close.
func (p *Proxy) Start(ctx context.Context) error {
	if p.closed.Load() {
		return errors.New("proxy: closed")
	}
	if p.disc != nil {
		return errors.New("proxy: already started")
	}
	disc, err := registry.NewClient(ctx, p.cfg.Registry)
	if err != nil {
		return err
	}
	p.disc = disc
	for _, r := range p.cfg.Routes {
		ln, err := net.Listen("tcp", r.Listen)
		if err != nil {
			p.Close()
			return fmt.Errorf("proxy: listen %s: %w", r.Listen, err)
		}
		var f front
		switch r.Protocol {
		case "rpc":
			f, err = p.startRPC(ctx, r, ln)
		default:
			f, err = p.startHTTP(r, ln)
		}
		if err != nil {
			ln.Close()
			p.Close()
			return err
		}
		p.fronts = append(p.fronts, f)
		p.log.Info("proxy route", "listen", f.addr(), "protocol", r.Protocol, "service", r.Service.String())
	}
	return nil
}

// Addrs lists the listening addresses, in route order.
func (p *Proxy) Addrs() []string {
	var out []string
	for _, f := range p.fronts {
		out = append(out, f.addr())
	}
	return out
}

// Shutdown stops accepting, lets requests in flight finish (RPC clients get
// a GOAWAY), then closes.
func (p *Proxy) Shutdown(ctx context.Context) error {
	if p.closed.Swap(true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DrainTimeout)
	defer cancel()
	var errs []error
	for _, f := range p.fronts {
		errs = append(errs, f.shutdown(ctx))
	}
	p.wg.Wait()
	if p.disc != nil {
		p.disc.Close()
	}
	return errors.Join(errs...)
}

// Close stops at once.
func (p *Proxy) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	for _, f := range p.fronts {
		f.close()
	}
	p.wg.Wait()
	if p.disc == nil {
		return nil
	}
	return p.disc.Close()
}

// ---- RPC ----

type rpcFront struct {
	srv *rpc.Server
	ln  net.Listener
	c   *rpc.Client
}

func (f *rpcFront) addr() string { return f.ln.Addr().String() }
func (f *rpcFront) shutdown(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	f.c.Close()
	if errors.Is(err, rpc.ErrServerClosed) {
		return nil
	}
	return err
}
func (f *rpcFront) close() { f.srv.Close(); f.c.Close() }

func (p *Proxy) startRPC(ctx context.Context, r Route, ln net.Listener) (front, error) {
	c, err := rpc.Dial(ctx, "", rpc.WithResolver(p.disc.Resolver(r.Service)), rpc.WithBalancer(p.cfg.Balancer),
		rpc.WithLogger(p.log))
	if err != nil {
		return nil, err
	}
	route := r.Listen
	srv, err := rpc.NewServer(rpc.Config{Logger: p.log, MaxInFlight: -1,
		Fallback: func(ctx context.Context, method string, codecID uint8, body []byte) ([]byte, error) {
			var kv []string
			for k, v := range rpc.Incoming(ctx) {
				kv = append(kv, k, v)
			}
			start := time.Now()
			out, err := c.InvokeRaw(rpc.WithOutgoing(ctx, kv...), method, codecID, body)
			p.metrics.observe(route, "rpc", rpc.CodeOf(err).String(), time.Since(start))
			return out, err
		}})
	if err != nil {
		c.Close()
		return nil, err
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, rpc.ErrServerClosed) {
			p.log.Error("proxy: rpc route stopped", "listen", route, "err", err)
		}
	}()
	return &rpcFront{srv: srv, ln: ln, c: c}, nil
}

// ---- HTTP ----

type httpFront struct {
	srv *http.Server
	ln  net.Listener
	bal *pool
}

func (f *httpFront) addr() string { return f.ln.Addr().String() }
func (f *httpFront) shutdown(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	f.bal.stop()
	return err
}
func (f *httpFront) close() { f.srv.Close(); f.bal.stop() }

// pool is an HTTP route's view of its instances.
type pool struct {
	mu     sync.Mutex
	picker balance.Picker
	eps    map[string]*backend
	cancel context.CancelFunc
	done   chan struct{}
}

type backend struct {
	a           rpc.Address
	outstanding atomic.Int64
	ewma        atomic.Int64
	downUntil   atomic.Int64 // unix ns: unreachable, skipped until then
}

func (b *backend) Addr() string           { return b.a.Addr }
func (b *backend) Weight() int            { return b.a.Weight }
func (b *backend) Zone() string           { return b.a.Zone }
func (b *backend) Outstanding() int64     { return b.outstanding.Load() }
func (b *backend) Latency() time.Duration { return time.Duration(b.ewma.Load()) }

func (pl *pool) update(addrs []rpc.Address, bal balance.Balancer) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	next := map[string]*backend{}
	var eps []balance.Endpoint
	for _, a := range addrs {
		b := pl.eps[a.Addr]
		if b == nil {
			b = &backend{a: a}
		}
		b.a = a
		next[a.Addr] = b
		eps = append(eps, b)
	}
	pl.eps = next
	pl.picker = nil
	if len(eps) > 0 {
		pl.picker = bal.Build(eps)
	}
}

func (pl *pool) pick(tried []*backend) *backend {
	pl.mu.Lock()
	pk := pl.picker
	pl.mu.Unlock()
	if pk == nil {
		return nil
	}
	now := time.Now().UnixNano()
	ep, ok := pk.Pick(balance.Info{Exclude: func(e balance.Endpoint) bool {
		b := e.(*backend)
		for _, t := range tried {
			if t == b {
				return true
			}
		}
		return b.downUntil.Load() > now
	}})
	if !ok {
		return nil
	}
	return ep.(*backend)
}

func (pl *pool) stop() {
	pl.cancel()
	<-pl.done
}

// transport picks an instance per request and retries replayable requests
// on another instance when the chosen one cannot be reached.
type transport struct {
	p     *Proxy
	pl    *pool
	route string
	base  http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var tried []*backend
	start := time.Now()
	for attempt := 0; attempt < 3; attempt++ {
		b := t.pl.pick(tried)
		if b == nil {
			t.p.metrics.observe(t.route, "http", "Unavailable", time.Since(start))
			return nil, errors.New("proxy: no healthy instance")
		}
		tried = append(tried, b)
		r := req
		if attempt > 0 {
			if req.Body != nil && req.Body != http.NoBody {
				if req.GetBody == nil {
					break
				}
				body, err := req.GetBody()
				if err != nil {
					break
				}
				r = req.Clone(req.Context())
				r.Body = body
			} else {
				r = req.Clone(req.Context())
			}
		}
		r.URL.Scheme, r.URL.Host = "http", b.a.Addr
		b.outstanding.Add(1)
		t0 := time.Now()
		resp, err := t.base.RoundTrip(r)
		b.outstanding.Add(-1)
		if err == nil {
			d := time.Since(t0)
			old := b.ewma.Load()
			b.ewma.Store(old + (int64(d)-old)/8)
			t.p.metrics.observe(t.route, "http", fmt.Sprint(resp.StatusCode), time.Since(start))
			return resp, nil
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.p.metrics.observe(t.route, "http", "error", time.Since(start))
			return nil, err // the request may have reached the instance: not retried
		}
		b.downUntil.Store(time.Now().Add(5 * time.Second).UnixNano())
		t.p.log.Warn("proxy: instance unreachable; trying another", "route", t.route, "instance", b.a.Addr, "err", err)
	}
	t.p.metrics.observe(t.route, "http", "Unavailable", time.Since(start))
	return nil, errors.New("proxy: no instance reachable")
}

func (p *Proxy) startHTTP(r Route, ln net.Listener) (front, error) {
	ctx, cancel := context.WithCancel(context.Background())
	pl := &pool{eps: map[string]*backend{}, cancel: cancel, done: make(chan struct{})}
	ready := make(chan struct{})
	var once sync.Once
	werr := make(chan error, 1)
	go func() {
		defer close(pl.done)
		werr <- p.disc.Resolver(r.Service).Watch(ctx, func(addrs []rpc.Address) {
			pl.update(addrs, p.cfg.Balancer)
			once.Do(func() { close(ready) })
		})
	}()
	select {
	case <-ready:
	case err := <-werr:
		// Refused (a wrong token…): the route could never serve.
		cancel()
		if err == nil {
			err = errors.New("the watch ended")
		}
		return nil, fmt.Errorf("proxy: route %s → %s: %w", r.Listen, r.Service, err)
	case <-time.After(p.cfg.Registry.SnapshotWait + 3*time.Second):
		p.log.Warn("proxy: no instance list yet; the route answers 502 until one arrives", "service", r.Service.String())
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetXForwarded()
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "backend"
			pr.Out.Host = pr.In.Host
		},
		Transport: &transport{p: p, pl: pl, route: r.Listen, base: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("proxy: http route stopped", "listen", r.Listen, "err", err)
		}
	}()
	return &httpFront{srv: srv, ln: ln, bal: pl}, nil
}

// ---- metrics ----

type metrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_proxy_requests_total",
			Help: "Requests forwarded, by route, protocol and outcome (RPC code or HTTP status)."}, []string{"route", "protocol", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tangram_proxy_request_seconds",
			Help: "Time to forward a request and get the answer, by route.", Buckets: prometheus.DefBuckets}, []string{"route"}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	return errors.Join(reg.Register(m.requests), reg.Register(m.seconds))
}

func (m *metrics) observe(route, proto, outcome string, d time.Duration) {
	m.requests.WithLabelValues(route, proto, outcome).Inc()
	m.seconds.WithLabelValues(route).Observe(d.Seconds())
}
