package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	configserver "github.com/tangram-dev/tangram/config/server"
	idserver "github.com/tangram-dev/tangram/idgen/server"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
	jobserver "github.com/tangram-dev/tangram/job/server"
	kvserver "github.com/tangram-dev/tangram/kv/server"
	lockserver "github.com/tangram-dev/tangram/lock/server"
	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/mq/names"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/registry"
	registryserver "github.com/tangram-dev/tangram/registry/server"
	"github.com/tangram-dev/tangram/rpc"
	traceserver "github.com/tangram-dev/tangram/trace/server"
	txnserver "github.com/tangram-dev/tangram/txn/server"
)

// Component is the contract every piece of the platform process keeps
// (docs/architecture.md). Each is made by its package's New(cfg) from a
// Config with DefaultConfig() defaults and a Validate() that only checks;
// then:
//
//   - Start(ctx) does what must succeed before the piece serves (open
//     files, load state, listen) and returns; the work it starts runs until
//     Shutdown or Close, not until ctx ends.
//   - Shutdown(ctx) stops gracefully: it stops taking work, finishes or
//     hands over what is in progress until ctx ends, then releases what it
//     holds (leases, files).
//   - Close() stops at once, and every call returns only when every
//     goroutine the piece started has ended.
//
// What a component serves is found by type assertion (HTTPMounter,
// RPCRegistrar, MetricsCollector), not by one wide interface.
type Component interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
	Close() error
}

// HTTPMounter is a component with an HTTP API: Mount registers its routes
// under /api/v1/<component>/ on mux, each handler wrapped by wrap (the
// platform's authentication).
type HTTPMounter interface {
	Mount(mux api.Mux, wrap func(http.Handler) http.Handler)
}

// RPCRegistrar is a component with Tangram RPC services (the SDKs' path).
type RPCRegistrar interface {
	RegisterRPC(srv *rpc.Server) error
}

// MetricsCollector is a component whose metrics are collected on demand
// rather than registered by the component itself.
type MetricsCollector interface {
	Collector() prometheus.Collector
}

// The components, checked at compile time.
var (
	_ Component        = (*configserver.Server)(nil)
	_ HTTPMounter      = (*configserver.Server)(nil)
	_ Component        = (*registryserver.Registry)(nil)
	_ HTTPMounter      = (*registryserver.Registry)(nil)
	_ RPCRegistrar     = (*registryserver.Registry)(nil)
	_ Component        = (*jobserver.Scheduler)(nil)
	_ HTTPMounter      = (*jobserver.Scheduler)(nil)
	_ RPCRegistrar     = (*jobserver.Scheduler)(nil)
	_ Component        = (*names.Table)(nil)
	_ RPCRegistrar     = (*names.Table)(nil)
	_ Component        = (*broker.Broker)(nil)
	_ MetricsCollector = (*broker.Broker)(nil)
	_ MetricsCollector = (*jobserver.Scheduler)(nil)
	_ Component        = (*kvserver.Server)(nil)
	_ MetricsCollector = (*kvserver.Server)(nil)
	_ Component        = (*lockserver.Server)(nil)
	_ HTTPMounter      = (*lockserver.Server)(nil)
	_ RPCRegistrar     = (*lockserver.Server)(nil)
	_ Component        = (*idserver.Server)(nil)
	_ HTTPMounter      = (*idserver.Server)(nil)
	_ RPCRegistrar     = (*idserver.Server)(nil)
	_ Component        = (*txnserver.Server)(nil)
	_ HTTPMounter      = (*txnserver.Server)(nil)
	_ RPCRegistrar     = (*txnserver.Server)(nil)
	_ Component        = (*traceserver.Server)(nil)
	_ HTTPMounter      = (*traceserver.Server)(nil)
	_ MetricsCollector = (*traceserver.Server)(nil)
)

// The names --components takes, in the order the components start (and
// the reverse of the order they stop).
const (
	CompConfig   = "config"
	CompRegistry = "registry"
	CompJob      = "job"
	CompMQ       = "mq"     // the MQ name service
	CompBroker   = "broker" // the in-process MQ broker
	CompKV       = "kv"     // the Redis-protocol store
	CompLock     = "lock"   // sessions, nodes and locks with ZooKeeper's semantics
	CompID       = "id"     // segment tags and leased snowflake worker numbers
	CompTxn      = "txn"    // the distributed-transaction coordinator
	CompTrace    = "trace"  // the trace collector (OTLP in, span store, queries)
)

// ComponentNames lists every component, in start order.
func ComponentNames() []string {
	return []string{CompConfig, CompRegistry, CompJob, CompMQ, CompBroker, CompKV, CompLock, CompID, CompTxn, CompTrace}
}

// selected returns the components to run: Config.Components (all when
// empty) in start order, without the broker when BrokerAddr is "off".
func (c Config) selected() ([]string, error) {
	want := c.Components
	if len(want) == 0 {
		want = ComponentNames()
	}
	all := ComponentNames()
	for _, n := range want {
		if !slices.Contains(all, n) {
			return nil, fmt.Errorf("server: component %q: want some of %s", n, strings.Join(all, ","))
		}
	}
	var out []string
	for _, n := range all {
		if !slices.Contains(want, n) || (n == CompBroker && c.BrokerAddr == "off") || (n == CompKV && c.KVAddr == "off") {
			continue
		}
		out = append(out, n)
	}
	if slices.Contains(out, CompBroker) && !slices.Contains(out, CompMQ) {
		return nil, errors.New("server: the in-process broker registers with this server's MQ name service: add mq to --components, or run brokers as `tangram broker`")
	}
	return out, nil
}

// running is a started component.
type running struct {
	name string
	comp Component
}

// build makes the named component from the platform's config and shared
// pieces (store, auth, metrics registry, parker).
func (s *Server) build(name string, key []byte) (Component, error) {
	switch name {
	case CompConfig:
		cipher, err := configserver.NewCipher(key)
		if err != nil {
			return nil, err
		}
		ccfg := configserver.Config{Store: s.st, Cipher: cipher, Logger: s.log.With("component", "config"), Registerer: s.reg,
			ScanInterval: s.cfg.ConfigScanInterval, MaxHold: s.cfg.ConfigMaxHold, MaxValueBytes: s.cfg.ConfigMaxValueBytes}
		if !s.cfg.ConfigBlockingWatches {
			ccfg.Parker = s.parker
		}
		c, err := configserver.New(ccfg)
		if err != nil {
			return nil, err
		}
		s.config = c
		return c, nil
	case CompRegistry:
		rcfg := registryserver.Config{Store: s.st, Logger: s.log.With("component", "registry"), Registerer: s.reg,
			NodeName: s.cfg.NodeName}
		gossip := s.cfg.GossipAddr
		if gossip == "" && len(s.cfg.Join) > 0 {
			gossip = ":7946"
		}
		if gossip != "" {
			rcfg.Gossip = registryserver.GossipConfig{BindAddr: gossip, Join: s.cfg.Join}
		}
		r, err := registryserver.New(rcfg)
		if err != nil {
			return nil, err
		}
		s.registry = r
		return r, nil
	case CompJob:
		var smtpCfg *jobserver.SMTPConfig
		if s.cfg.SMTP.Addr != "" {
			smtpCfg = &s.cfg.SMTP
		}
		j, err := jobserver.New(jobserver.Config{Store: s.st, Logger: s.log.With("component", "job"), NodeName: s.cfg.NodeName,
			LeaseTTL: s.cfg.JobLeaseTTL, ClaimAhead: s.cfg.JobClaimAhead, MinInterval: s.cfg.JobMinInterval, WebhookAllow: s.cfg.JobWebhookAllow, SMTP: smtpCfg,
			TracerProvider: s.tracerFor()})
		if err != nil {
			return nil, err
		}
		s.jobs = j
		return j, nil
	case CompMQ:
		t, err := names.New(names.Config{TTL: s.cfg.MQNameTTL})
		if err != nil {
			return nil, err
		}
		s.names = t
		return t, nil
	case CompBroker:
		return s.buildBroker()
	case CompKV:
		return s.buildKV()
	case CompID:
		g, err := idserver.New(idserver.Config{Store: s.st, Logger: s.log.With("component", "id")})
		if err != nil {
			return nil, err
		}
		s.ids = g
		return g, nil
	case CompTxn:
		var smtpCfg *jobserver.SMTPConfig
		if s.cfg.SMTP.Addr != "" {
			smtpCfg = &s.cfg.SMTP
		}
		tc := txnserver.DefaultConfig()
		tc.Store, tc.Logger, tc.NodeName, tc.Registerer = s.st, s.log.With("component", "txn"), s.cfg.NodeName, s.reg
		tc.AlarmWebhook, tc.AlarmEmails, tc.SMTP = s.cfg.TxnAlarmWebhook, s.cfg.TxnAlarmEmails, smtpCfg
		tc.TracerProvider = s.tp
		tc.Allow = s.cfg.TxnAllow
		// rpc://SERVICE/… branch targets are found in this server's
		// registry (read at call time: the registry is built first when
		// this process runs one).
		tc.Resolve = func(ns, group, service string) (rpc.Resolver, error) {
			if s.registry == nil {
				return nil, errors.New("this server runs no registry component; name the participant by host:port")
			}
			k := registry.Key{Namespace: ns, Group: group, Service: service}
			k.Fill()
			if err := k.Validate(); err != nil {
				return nil, err
			}
			return s.registry.Resolver(k), nil
		}
		x, err := txnserver.New(tc)
		if err != nil {
			return nil, err
		}
		s.txns = x
		return x, nil
	case CompTrace:
		tc := traceserver.DefaultConfig()
		tc.Dir, tc.OTLPHTTPAddr, tc.OTLPGRPCAddr, tc.Logger = filepath.Join(s.cfg.DataDir, "trace"), s.cfg.OTLPHTTPAddr, s.cfg.OTLPGRPCAddr, s.log.With("component", "trace")
		if s.cfg.TraceMaxAge != 0 {
			tc.MaxAge = s.cfg.TraceMaxAge
		}
		tc.MaxBytes, tc.Forward, tc.TailSampling = s.cfg.TraceMaxBytes, s.cfg.TraceForward, s.cfg.TraceTailSampling
		if s.cfg.otlpAuth() {
			// Any valid API token may export; the spans name their services.
			tc.Authenticate = func(ctx context.Context, token string) error {
				_, err := s.auth.AuthenticateToken(ctx, token)
				if errors.Is(err, auth.ErrUnauthenticated) {
					return fmt.Errorf("%w: %v", traceserver.ErrUnauthenticated, err)
				}
				return err
			}
		}
		// Alert notifications go out under the server's webhook policy and
		// SMTP, as job alarms do; rule changes are audited in the store.
		tc.Alerts.WebhookAllow = s.cfg.JobWebhookAllow
		if s.cfg.SMTP.Addr != "" {
			tc.Alerts.SMTP = &s.cfg.SMTP
		}
		tc.Audit = func(ctx context.Context, e audit.Entry) {
			if err := audit.Record(ctx, s.st, e); err != nil {
				s.log.Error("trace: audit record failed", "action", e.Action, "err", err)
			}
		}
		c, err := traceserver.New(tc)
		if err != nil {
			return nil, err
		}
		s.traces = c
		return c, nil
	case CompLock:
		l, err := lockserver.New(lockserver.Config{Store: s.st, Logger: s.log.With("component", "lock")})
		if err != nil {
			return nil, err
		}
		s.locks = l
		return l, nil
	}
	return nil, fmt.Errorf("server: no component %q", name)
}

// buildKV makes the Redis-protocol store: its append-only log in
// <data>/kv (unless KVNoPersist), AUTH taking this server's API tokens
// (AUTH <token> or AUTH <any user> <token>).
func (s *Server) buildKV() (Component, error) {
	cfg := kvserver.Config{
		Addr:    s.cfg.KVAddr,
		Fsync:   s.cfg.KVFsync,
		Logger:  s.log.With("component", "kv"),
		Version: Version,
		Authenticate: func(ctx context.Context, _, token string) error {
			_, err := s.auth.AuthenticateToken(ctx, token)
			return err
		},
	}
	if !s.cfg.KVNoPersist {
		cfg.Dir = filepath.Join(s.cfg.DataDir, "kv")
	}
	k, err := kvserver.New(cfg)
	if err != nil {
		return nil, err
	}
	s.kv = k
	return k, nil
}

// buildBroker makes the in-process MQ broker: its data in <data>/broker,
// registered with this server's name service directly, clients
// authenticated with this server's tokens.
func (s *Server) buildBroker() (Component, error) {
	name := s.cfg.BrokerName
	if name == "" {
		host, _ := os.Hostname()
		name = "broker-" + sanitizeName(host)
	}
	b, err := broker.New(broker.Config{
		Name:       name,
		Dir:        filepath.Join(s.cfg.DataDir, "broker"),
		Addr:       s.cfg.BrokerAddr,
		Store:      store.Config{SegmentSize: s.cfg.BrokerSegmentSize, Flush: s.cfg.BrokerFlush},
		AutoCreate: !s.cfg.BrokerNoAutoCreate,
		Authenticate: func(ctx context.Context, token string) (*auth.Principal, error) {
			return s.auth.AuthenticateToken(ctx, token)
		},
		Register: func(_ context.Context, info wire.BrokerInfo) error { return s.names.Register(info) },
		Audit:    s.recordBrokerAudit,
		Logger:   s.log.With("component", "broker"),
	})
	if err != nil {
		return nil, err
	}
	s.broker = b
	return b, nil
}
