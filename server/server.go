// Package server composes Tangram's components into the platform process:
// it opens the SQL store, bootstraps auth, starts the components, and serves
// the HTTP API, the console, health checks and metrics on one listener.
package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jobserver "github.com/tangram-dev/tangram/job/server"

	registryserver "github.com/tangram-dev/tangram/registry/server"

	configserver "github.com/tangram-dev/tangram/config/server"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tangram-dev/tangram/console"
	idserver "github.com/tangram-dev/tangram/idgen/server"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/durable"
	"github.com/tangram-dev/tangram/internal/park"
	"github.com/tangram-dev/tangram/internal/store"
	kvserver "github.com/tangram-dev/tangram/kv/server"
	lockserver "github.com/tangram-dev/tangram/lock/server"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/mq/names"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/sampler"
	traceserver "github.com/tangram-dev/tangram/trace/server"
	txnserver "github.com/tangram-dev/tangram/txn/server"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// ErrServerClosed is returned by Start after Close.
var ErrServerClosed = errors.New("server: closed")

// Version is the build's version, set with -ldflags "-X ...server.Version=…".
var Version = "0.1.0-dev"

// Config configures the platform process.
type Config struct {
	// HTTPAddr is the API/console listener. Default ":7070"; ":0" picks a port.
	HTTPAddr string
	// RPCAddr is the Tangram RPC listener: the platform's APIs for SDKs.
	// Default ":7071"; "off" disables it.
	RPCAddr string
	// DataDir holds local state (the SQLite file, the secret key). Default "./data".
	DataDir string
	// Store is the SQL store URL. Default sqlite://<DataDir>/tangram.db.
	Store string
	// SecretKey encrypts secret config items (32 bytes) and derives the
	// platform's service token. When empty it is read from SecretKeyFile,
	// which defaults to <DataDir>/secret.key and is created on first start.
	// Servers sharing a store must share the key. (The command reads it
	// from TANGRAM_SECRET_KEY; this package reads no environment.)
	SecretKey     []byte
	SecretKeyFile string
	// BootstrapToken, when set, is the first admin's API token
	// (TANGRAM_BOOTSTRAP_TOKEN) instead of a generated one.
	BootstrapToken string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// ConfigScanInterval is how often release messages from other servers
	// are scanned. Default 1s.
	ConfigScanInterval time.Duration
	// ConfigMaxHold bounds a config watch. Default 60s.
	ConfigMaxHold time.Duration
	// ConfigMaxValueBytes limits one config value. Default 1 MiB.
	ConfigMaxValueBytes int
	// SecureCookies marks console cookies Secure (behind TLS).
	SecureCookies bool
	// CheckAPIResponse, when set, sees every /api response (its pattern,
	// status and body) so conformance tests can hold them against the
	// OpenAPI document (servertest does). Nil in production.
	CheckAPIResponse func(method, path, pattern string, status int, body []byte)
	// MaxConns bounds the connections open at once on each listener (HTTP
	// and platform RPC); more are closed as they arrive. Default 10000.
	MaxConns int
	// AnonIdleTimeout closes a keep-alive HTTP connection that has carried
	// no authenticated request after it sits idle this long (authenticated
	// ones get the usual 2 minutes). Default 10 s.
	AnonIdleTimeout time.Duration
	// ConfigBlockingWatches holds each config watch on a goroutine, as a
	// plain net/http long poll does, instead of parking its connection.
	// Off by default; it exists to compare the two (bench/config).
	ConfigBlockingWatches bool
	// GossipAddr is the registry's replication listener (TCP and UDP),
	// e.g. ":7946"; empty runs the registry alone. Join lists peers'
	// gossip addresses (implies GossipAddr ":7946" when that is empty).
	GossipAddr string
	Join       []string
	// NodeName names this server among those sharing a store or a
	// registry cluster (the holder of job partitions, the owner of the
	// instances registered through it). Default: the name kept in
	// <DataDir>/node-id, drawn on the first start ("<hostname>-<hex>"), so
	// that a restarted server is the same node and takes its work back at
	// once.
	NodeName string
	// JobLeaseTTL is how long a job partition stays with a server that
	// stopped renewing it — about the longest a dead server's jobs wait. Default 3 s.
	JobLeaseTTL time.Duration
	// JobMinInterval is the tightest job schedule a non-admin may set
	// (default 1 s).
	JobMinInterval time.Duration
	// JobClaimAhead is how early a fire is claimed in the store; its run
	// goes to the executor at its exact time (default 100 ms).
	JobClaimAhead time.Duration
	// JobWebhookAllow lets job alarm and trace alert webhooks reach internal addresses
	// (CIDR prefixes, addresses or host names); default: public only.
	JobWebhookAllow []string
	// TxnAlarmWebhook and TxnAlarmEmails receive an alarm (the
	// transaction as JSON; an e-mail through SMTP) when the transaction
	// coordinator parks a transaction as failed.
	TxnAlarmWebhook string
	TxnAlarmEmails  []string
	// TxnAllow lists where transaction branches may be called
	// (txn.ParseAllow); empty: anywhere.
	TxnAllow []string
	// BrokerAddr is the in-process MQ broker's listener (default ":7072";
	// "off" runs none: brokers then run as `tangram broker`). Its data is
	// in <DataDir>/broker. BrokerName defaults to "broker-<hostname>";
	// BrokerFlush is "async" (default) or "sync"; BrokerSegmentSize is the
	// commitlog file size (default 64 MiB: a laptop's data dir does not
	// take a gigabyte at once; `tangram broker` keeps RocketMQ's 1 GiB; an
	// existing log keeps the size it was written with); BrokerNoAutoCreate
	// refuses sends to unknown topics.
	BrokerAddr         string
	BrokerName         string
	BrokerFlush        string
	BrokerSegmentSize  int
	BrokerNoAutoCreate bool
	// KVAddr is the Redis-protocol store's listener (default ":6380";
	// "off" runs none). Its append-only log is in <DataDir>/kv with
	// KVFsync "everysec" (default), "always" or "no"; KVNoPersist keeps it
	// in memory only.
	KVAddr      string
	KVFsync     string
	KVNoPersist bool
	// OTLPHTTPAddr is where the trace collector receives OTLP/HTTP
	// (default "127.0.0.1:4318", OTLP's port; "off" receives none),
	// OTLPGRPCAddr OTLP/gRPC (default "127.0.0.1:4317"). Its
	// spans are kept in <DataDir>/trace for TraceMaxAge (default 7 days),
	// at most TraceMaxBytes (0: no cap).
	OTLPHTTPAddr string
	OTLPGRPCAddr string
	// OTLPAuth says whether OTLP exports need an API token (the
	// Authorization header, "Bearer <token>"): "auto" (the default) when
	// either receiver listens beyond loopback, "on", or "off".
	OTLPAuth      string
	TraceMaxAge   time.Duration
	TraceMaxBytes int64
	// TraceEndpoint is where the server sends its own spans (its RPC and
	// HTTP calls, job dispatches, transaction branches): "" its own
	// collector when the trace component runs, "off" nowhere, or an
	// OTLP/HTTP traces URL. TraceSampleRatio is the share of new traces
	// kept (default 1).
	TraceEndpoint    string
	TraceSampleRatio float64
	// TraceToken, when set, goes with the spans and metrics the server
	// sends to a TraceEndpoint URL (Authorization: Bearer): an API token
	// of the server whose collector receives them, when that one asks
	// for tokens (OTLPAuth). Never sent to the server's own collector.
	TraceToken string
	// MetricsEvery is how often the server samples its own metrics (the
	// tangram_ families and a few runtime ones) into its collector, or
	// to the OTLP/HTTP endpoint its spans go to (…/v1/metrics beside
	// …/v1/traces), for the console's charts: default 15 s; negative
	// samples none.
	MetricsEvery time.Duration
	// TraceForward lists OTLP/HTTP endpoints (Jaeger, Tempo, an
	// OpenTelemetry Collector) the collector sends what it receives on
	// to, beside storing it: a signal's URL (…/v1/traces) gets that
	// signal, a base URL traces, metrics and logs.
	TraceForward []string
	// TraceTailSampling keeps whole traces chosen once seen: every error,
	// every slow one, a share of the rest (off by default).
	TraceTailSampling traceserver.TailSampling
	// MQNameTTL is how long the name service keeps a broker that stopped
	// registering (default 30 s; brokers register every 10 s).
	MQNameTTL time.Duration
	// SMTP, when its Addr is set, sends alarm e-mails (jobs', transactions').
	SMTP jobserver.SMTPConfig
	// DebugAddr, when set, serves net/http/pprof on its own listener (keep
	// it on loopback: it is not authenticated). Default off.
	DebugAddr string
	// Components picks the components this process runs (ComponentNames:
	// config, registry, job, mq, broker); empty runs them all.
	Components []string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{HTTPAddr: ":7070", RPCAddr: ":7071", BrokerAddr: ":7072", KVAddr: ":6380", OTLPHTTPAddr: "127.0.0.1:4318", OTLPGRPCAddr: "127.0.0.1:4317", DataDir: "./data"}
}

// withDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HTTPAddr == "" {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.RPCAddr == "" {
		c.RPCAddr = d.RPCAddr
	}
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.BrokerSegmentSize <= 0 {
		c.BrokerSegmentSize = 64 << 20
	}
	if c.BrokerAddr == "" {
		c.BrokerAddr = d.BrokerAddr
	}
	if c.KVAddr == "" {
		c.KVAddr = d.KVAddr
	}
	if c.OTLPHTTPAddr == "" {
		c.OTLPHTTPAddr = d.OTLPHTTPAddr
	}
	if c.OTLPGRPCAddr == "" {
		c.OTLPGRPCAddr = d.OTLPGRPCAddr
	}
	if c.Store == "" {
		c.Store = "sqlite://" + filepath.Join(c.DataDir, "tangram.db")
	}
	if c.SecretKeyFile == "" {
		c.SecretKeyFile = filepath.Join(c.DataDir, "secret.key")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks c; it changes nothing (New fills the defaults).
func (c Config) Validate() error {
	if len(c.SecretKey) != 0 && len(c.SecretKey) != 32 {
		return fmt.Errorf("server: SecretKey has %d bytes; want 32", len(c.SecretKey))
	}
	if _, err := c.selected(); err != nil {
		return err
	}
	if c.TraceSampleRatio < 0 || c.TraceSampleRatio > 1 {
		return fmt.Errorf("server: TraceSampleRatio %v: want 0 to 1", c.TraceSampleRatio)
	}
	switch c.OTLPAuth {
	case "", "auto", "on", "off":
	default:
		return fmt.Errorf("server: OTLPAuth %q: want auto, on or off", c.OTLPAuth)
	}
	return nil
}

// otlpAuth says whether the OTLP receivers need a token: OTLPAuth "on",
// or "auto" (or unset) with a receiver listening beyond loopback.
func (c Config) otlpAuth() bool {
	switch c.OTLPAuth {
	case "on":
		return true
	case "off":
		return false
	}
	for _, addr := range []string{c.OTLPHTTPAddr, c.OTLPGRPCAddr} {
		if addr != "off" && !loopbackOnly(addr) {
			return true
		}
	}
	return false
}

// loopbackOnly says whether listening on addr reaches only this machine:
// a loopback IP or "localhost" (an empty host is every interface).
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a running platform process.
type Server struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	st        *store.Store
	unlockDir func() // releases the data directory lock
	auth      *auth.Service
	comps     []running // started components, in start order
	config    *configserver.Server
	registry  *registryserver.Registry
	jobs      *jobserver.Scheduler
	names     *names.Table
	broker    *broker.Broker
	kv        *kvserver.Server
	traces    *traceserver.Server
	// tracing records the server's own spans (nil when off); tp is its
	// provider (a no-op one when off); self feeds its collector.
	tracing  *trace.Provider
	tp       oteltrace.TracerProvider
	self     *selfExporter
	metrics  *sampler.Sampler
	locks    *lockserver.Server
	txns     *txnserver.Server
	ids      *idserver.Server
	svcToken string
	mqMu     sync.Mutex
	mqc      *mq.Client
	httpSrv  *http.Server
	ln       net.Listener
	httpLn   *limitListener
	mux      *recordingMux
	guard    *idleGuard
	rpc      *rpc.Server
	rpcLn    net.Listener
	parker   *park.Parker
	// debugSrv serves pprof when Config.DebugAddr is set.
	debugSrv *http.Server

	bootstrapToken string
	started        atomic.Bool
	closed         atomic.Bool
	ready          chan struct{}
	serveErr       chan error
	wg             sync.WaitGroup
}

// New validates cfg and returns an unstarted Server.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry(), ready: make(chan struct{}), serveErr: make(chan error, 1)}, nil
}

// Start opens the store, bootstraps the admin, starts the components and
// begins serving HTTP. It returns once the server accepts requests.
func (s *Server) Start(ctx context.Context) (err error) {
	if s.closed.Load() {
		return ErrServerClosed
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("server: already started")
	}
	defer func() {
		if err != nil {
			// A start that failed stops what it started, the tracer's
			// batch processor included.
			s.stopMetrics()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.stopTracing(sctx)
			cancel()
			s.closeComponents()
		}
	}()
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("server: data directory: %w", err)
	}
	if s.unlockDir, err = lockDataDir(s.cfg.DataDir); err != nil {
		return err
	}
	if s.cfg.NodeName == "" {
		if s.cfg.NodeName, err = loadNodeName(s.cfg.DataDir); err != nil {
			return err
		}
	}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.st, err = store.Open(ctx, store.Config{DSN: s.cfg.Store, Logger: s.log, Registerer: s.reg})
	if err != nil {
		return err
	}
	s.auth = auth.New(s.st, s.log)
	if s.bootstrapToken, err = s.auth.Bootstrap(ctx, s.cfg.BootstrapToken); err != nil {
		return err
	}
	if s.bootstrapToken != "" && s.cfg.BootstrapToken == "" {
		// Kept at once, before anything else can fail: a first start that
		// dies after creating the admin must not lose its only token.
		if err := durable.WriteFile(s.InitialTokenFile(), []byte(s.bootstrapToken+"\n"), 0o600); err != nil {
			return fmt.Errorf("server: keep the first admin token: %w", err)
		}
	}
	key := s.cfg.SecretKey
	if len(key) == 0 {
		if key, err = configserver.LoadOrCreateKey(s.cfg.SecretKeyFile, true); err != nil {
			return err
		}
	}
	s.svcToken = serviceToken(key)
	s.auth.SetServiceToken(s.svcToken)
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg.HTTPAddr, err)
	}
	s.httpLn = &limitListener{Listener: ln, max: int64(s.maxConns())}
	s.ln = s.httpLn
	anonIdle := s.cfg.AnonIdleTimeout
	if anonIdle == 0 {
		anonIdle = 10 * time.Second
	}
	s.guard = newIdleGuard(anonIdle)
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tangram_http_refused_connections_total",
		Help: "HTTP connections closed on arrival at the connection limit."}, func() float64 { return float64(s.httpLn.refused.Load()) }))
	s.parker = park.New(s.ln.Addr())
	selected, _ := s.cfg.selected() // checked by New
	if err := s.startTracing(selected); err != nil {
		return err
	}
	for _, name := range selected {
		c, err := s.build(name, key)
		if err != nil {
			return fmt.Errorf("server: %s: %w", name, err)
		}
		if err := c.Start(ctx); err != nil {
			_ = c.Close()
			return fmt.Errorf("server: start %s: %w", name, err)
		}
		s.comps = append(s.comps, running{name, c})
		if name == CompTrace && s.self != nil {
			s.self.c.Store(s.traces)
		}
		if mc, ok := c.(MetricsCollector); ok {
			if err := s.reg.Register(mc.Collector()); err != nil {
				s.log.Warn("component metrics not registered", "component", name, "err", err)
			}
		}
	}
	// A token may be limited only to an environment that exists: a config
	// environment or a registry namespace.
	if s.config != nil {
		s.auth.AddEnvSource(func(ctx context.Context) ([]string, error) {
			envs, err := s.config.ListEnvs(ctx)
			names := make([]string, len(envs))
			for i, e := range envs {
				names[i] = e.Name
			}
			return names, err
		})
	}
	if s.registry != nil {
		s.auth.AddEnvSource(func(context.Context) ([]string, error) { return s.registry.Namespaces(), nil })
	}
	if s.config != nil {
		s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tangram_config_watchers", Help: "Config watches held open."},
			func() float64 { return float64(s.config.Watchers()) }))
	}
	s.startMetrics()

	handler, err := s.routes()
	if err != nil {
		return err
	}
	s.httpSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ConnState: func(c net.Conn, st http.ConnState) {
			s.parker.ConnState(c, st)
			s.guard.connState(c, st)
		},
		ConnContext: s.guard.connContext,
	}
	for _, ln := range []net.Listener{s.ln, s.parker.Listener()} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				select {
				case s.serveErr <- err:
				default:
				}
			}
		}()
	}
	if err := s.startRPC(); err != nil {
		return err
	}
	if s.cfg.DebugAddr != "" {
		if err := s.startDebug(); err != nil {
			return err
		}
	}
	close(s.ready)
	s.log.Info("tangram server started", "http", s.Addr(), "store", string(s.st.Dialect()), "version", Version,
		"components", strings.Join(selected, ","))
	return nil
}

// Addr is the HTTP listener's address (useful with ":0").
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL of the HTTP API.
func (s *Server) URL() string {
	addr := s.Addr()
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// BootstrapToken returns the admin token generated on the first start ("" otherwise).
func (s *Server) BootstrapToken() string { return s.bootstrapToken }

// InitialTokenFile is where the admin's first API token is kept (mode
// 0600, in the data directory) from the first start until someone deletes
// it — so a first start that fails later, or a closed terminal, loses
// nothing. `export TANGRAM_TOKEN=$(cat data/initial-admin-token)`.
func (s *Server) InitialTokenFile() string {
	return filepath.Join(s.cfg.DataDir, "initial-admin-token")
}

// Ready is closed once Start has succeeded.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Err receives a fatal serving error.
func (s *Server) Err() <-chan error { return s.serveErr }

// Components names the components this process runs, in start order.
func (s *Server) Components() []string {
	out := make([]string, len(s.comps))
	for i, r := range s.comps {
		out[i] = r.name
	}
	return out
}

// Config returns the config center component (nil when not running).
func (s *Server) Config() *configserver.Server { return s.config }

// Auth returns the auth service.
func (s *Server) Auth() *auth.Service { return s.auth }

// Jobs returns the job scheduler component (nil when not running).
func (s *Server) Jobs() *jobserver.Scheduler { return s.jobs }

// Registry returns the service registry component (nil when not running).
func (s *Server) Registry() *registryserver.Registry { return s.registry }

// Store returns the SQL store.
func (s *Server) Store() *store.Store { return s.st }

// IDs is the id component (nil when not running).
func (s *Server) IDs() *idserver.Server { return s.ids }

// Shutdown stops accepting requests, waits for in-flight ones until ctx
// ends (held watches are released at once), then stops every component.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	// The server's own spans go to its collector before that closes.
	s.stopMetrics()
	if err := s.stopTracing(ctx); err != nil {
		errs = append(errs, fmt.Errorf("server: tracing shutdown: %w", err))
	}
	// Components stop in the reverse of their start order, each within
	// ctx: config releases its held watches (so their requests end), the
	// scheduler gives up its partitions, the broker drains, the registry
	// leaves its gossip cluster (ending watch streams, which would
	// otherwise hold the RPC drain until its deadline).
	for i := len(s.comps) - 1; i >= 0; i-- {
		if err := s.comps[i].comp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("server: %s shutdown: %w", s.comps[i].name, err))
		}
	}
	if s.parker != nil {
		_ = s.parker.Close()
		s.parker.CloseIdle()
	}
	if s.rpc != nil {
		if err := s.rpc.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("server: rpc shutdown: %w", err))
		}
	}
	if s.httpSrv != nil {
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("server: http shutdown: %w", err))
			_ = s.httpSrv.Close()
		}
	}
	if s.debugSrv != nil {
		_ = s.debugSrv.Close()
	}
	s.wg.Wait()
	if s.guard != nil {
		s.guard.close()
	}
	s.closeComponents()
	return errors.Join(errs...)
}

// Close shuts down with a 10 s grace period.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

func (s *Server) closeComponents() {
	if s.parker != nil {
		_ = s.parker.Close()
	}
	if s.ln != nil && s.httpSrv == nil {
		_ = s.ln.Close() // Start failed before serving
	}
	if s.rpc != nil {
		_ = s.rpc.Close()
	} else if s.rpcLn != nil {
		_ = s.rpcLn.Close()
	}
	s.mqMu.Lock()
	if s.mqc != nil {
		_ = s.mqc.Close()
		s.mqc = nil
	}
	s.mqMu.Unlock()
	for i := len(s.comps) - 1; i >= 0; i-- {
		_ = s.comps[i].comp.Close()
	}
	if s.st != nil {
		_ = s.st.Close()
	}
	if s.unlockDir != nil {
		s.unlockDir()
		s.unlockDir = nil
	}
}

func (s *Server) maxConns() int {
	if s.cfg.MaxConns == 0 {
		return 10000
	}
	return s.cfg.MaxConns
}

// require is the authentication every API route is wrapped in; a request
// that passes it makes its connection trusted (idleGuard).
func (s *Server) require(next http.Handler) http.Handler {
	return s.auth.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.guard.markAuthed(r.Context())
		next.ServeHTTP(w, r)
	}))
}

func (s *Server) routes() (http.Handler, error) {
	doc, err := OpenAPI()
	if err != nil {
		return nil, err
	}
	s.mux = &recordingMux{ServeMux: http.NewServeMux()}
	mux := s.mux
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.st.Ping(ctx); err != nil || s.closed.Load() {
			http.Error(w, "not ready: store unreachable or shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /api/v1/version", s.require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, map[string]string{"version": Version, "store": string(s.st.Dialect())})
	})))
	mux.Handle("GET /api/v1/openapi.yaml", s.require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
		_, _ = w.Write(doc)
	})))
	s.auth.Register(mux, s.require)
	for _, r := range s.comps {
		if m, ok := r.comp.(HTTPMounter); ok {
			m.Mount(mux, s.require)
		}
	}
	ccfg := console.Config{Auth: s.auth, Config: s.config, Registry: s.registry, Jobs: s.jobs, Store: s.st, Logger: s.log, SecureCookies: s.cfg.SecureCookies, Version: Version, API: APIRoutes()}
	if s.names != nil {
		ccfg.MQ = s.mqClient
	}
	ccfg.KV = s.kv
	ccfg.Locks = s.locks
	ccfg.IDs = s.ids
	ccfg.Txns = s.txns
	ccfg.Traces = s.traces
	con, err := console.New(ccfg)
	if err != nil {
		return nil, err
	}
	con.Register(mux.ServeMux)
	// Unknown API paths answer 404 only to an authenticated caller, so
	// routes cannot be enumerated without a token.
	mux.Handle("/api/", s.require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, api.NotFound("no API at %s %s", r.Method, r.URL.Path))
	})))
	h := s.instrument(mux)
	if s.tracingOn() {
		h = trace.HTTPHandler(s.tp, h, untraced)
	}
	return h, nil
}

func (s *Server) instrument(next http.Handler) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_http_requests_total", Help: "HTTP requests by route, method and status."}, []string{"route", "method", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tangram_http_request_seconds", Help: "HTTP request latency by route (long polls included).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"route", "method"})
	s.reg.MustRegister(requests, latency)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		check := s.cfg.CheckAPIResponse != nil && strings.HasPrefix(r.URL.Path, "/api/")
		if check {
			sw.body = &bytes.Buffer{}
		}
		next.ServeHTTP(sw, r)
		if check && sw.wrote { // not a watch parked and answered elsewhere
			s.cfg.CheckAPIResponse(r.Method, r.URL.Path, r.Pattern, sw.code, sw.body.Bytes())
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.code)).Inc()
		latency.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
	body  *bytes.Buffer // a copy of the body, when API responses are checked
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wrote = true
	if w.body != nil && w.body.Len() < 4<<20 {
		w.body.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) startDebug() error {
	ln, err := net.Listen("tcp", s.cfg.DebugAddr)
	if err != nil {
		return fmt.Errorf("server: debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.debugSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.debugSrv.Serve(ln)
	}()
	s.log.Info("pprof debug listener", "addr", ln.Addr().String())
	return nil
}
