package main

import (
	"github.com/tangram-dev/tangram/trace"

	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	configserver "github.com/tangram-dev/tangram/config/server"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/server"
)

func newServerCmd() *cobra.Command {
	return serverCommand("server", "Run the Tangram platform: HTTP API and console, config center, registry, job scheduler, MQ broker",
		`Run the Tangram platform in one process: the HTTP API and web console, and the
components. With no flags it keeps its state in ./data (SQLite) and listens on :7070.
Point several servers at one PostgreSQL or MySQL store to run a cluster.`, server.DefaultConfig())
}

// newCollectorCmd is the trace collector alone: the platform process with
// only its trace component (its HTTP API, console and users for the
// queries), on ports of its own so it runs beside a server.
func newCollectorCmd() *cobra.Command {
	cfg := server.DefaultConfig()
	cfg.Components = []string{server.CompTrace}
	cfg.HTTPAddr, cfg.RPCAddr, cfg.BrokerAddr, cfg.KVAddr, cfg.DataDir = ":7076", "off", "off", "off", "./data-collector"
	return serverCommand("collector", "Run the trace collector alone: OTLP/gRPC and OTLP/HTTP in, the span store, queries, console",
		`Run Tangram's trace collector on its own — the same as "tangram server --components trace"
with ports of its own: OTLP/gRPC on 127.0.0.1:4317, OTLP/HTTP on 127.0.0.1:4318, the query API and
console on :7076, state in ./data-collector. Every server flag applies.`, cfg)
}

func serverCommand(use, short, long string, cfg server.Config) *cobra.Command {
	var logFormat, logLevel string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", logLevel, err)
			}
			opts := &slog.HandlerOptions{Level: level}
			var h slog.Handler
			switch logFormat {
			case "text":
				h = slog.NewTextHandler(os.Stderr, opts)
			case "json":
				h = slog.NewJSONHandler(os.Stderr, opts)
			default:
				return fmt.Errorf("--log-format %q: want text or json", logFormat)
			}
			// Records logged under a span carry its trace and span IDs;
			// warnings and errors are also kept with the trace.
			cfg.Logger = slog.New(trace.NewLogHandler(h, trace.LogOptions{SpanEvents: true, MinEventLevel: slog.LevelWarn}))
			if cfg.TraceSampleRatio == 0 {
				cfg.TraceEndpoint = "off"
			}
			if cfg.MetricsEvery <= 0 {
				cfg.MetricsEvery = -1 // the flag's 0 is "never"; the Config's is the default
			}
			cfg.TraceTailSampling.Enabled = cfg.TraceTailSampling.Ratio < 1
			tuneGC()
			cfg.BootstrapToken = os.Getenv("TANGRAM_BOOTSTRAP_TOKEN")
			cfg.SMTP.Password = os.Getenv("TANGRAM_SMTP_PASSWORD")
			cfg.TraceToken = os.Getenv("TANGRAM_TRACE_TOKEN")
			if path, _ := cmd.Flags().GetString("secret-key-file"); path != "" {
				cfg.SecretKeyFile = path
			}
			if env := os.Getenv("TANGRAM_SECRET_KEY"); env != "" {
				key, err := configserver.ParseKey(env)
				if err != nil {
					return fmt.Errorf("TANGRAM_SECRET_KEY: %w", err)
				}
				cfg.SecretKey = key
			}
			srv, err := server.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := srv.Start(ctx); err != nil {
				return err
			}
			if tok := srv.BootstrapToken(); tok != "" && cfg.BootstrapToken == "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "\n  First start: created user \"admin\" with API token\n\n    %s\n\n  Kept in %s until you delete it. Use it as TANGRAM_TOKEN\n  (export TANGRAM_TOKEN=$(cat %s)), or to sign in to the console at %s\n\n",
					tok, srv.InitialTokenFile(), srv.InitialTokenFile(), srv.URL())
			} else if _, err := os.Stat(srv.InitialTokenFile()); err == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "\n  The admin's first API token is kept in %s: delete the file once you have stored the token elsewhere.\n\n", srv.InitialTokenFile())
			}
			select {
			case <-ctx.Done():
			case err := <-srv.Err():
				cfg.Logger.Error("server failed", "err", err)
			}
			cfg.Logger.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP listen address for the API and console")
	f.StringVar(&cfg.RPCAddr, "rpc", cfg.RPCAddr, "Tangram RPC listen address for SDKs (\"off\" disables it)")
	f.StringVar(&cfg.GossipAddr, "gossip", "", "registry replication listener, TCP+UDP (e.g. :7946); empty runs the registry alone")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip addresses of servers to form a registry cluster with (implies --gossip :7946)")
	f.StringVar(&cfg.NodeName, "node-name", "", "this server's name among the servers sharing a store or registry cluster (default: kept in <data>/node-id, drawn on first start)")
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory")
	f.DurationVar(&cfg.JobLeaseTTL, "job-lease-ttl", 3*time.Second, "how long a job partition stays with a server that stopped renewing it (about the longest a dead server's jobs wait)")
	f.IntVar(&cfg.MaxConns, "max-conns", 10000, "connections open at once per listener (HTTP, RPC); more are closed on arrival")
	f.DurationVar(&cfg.AnonIdleTimeout, "anon-idle-timeout", 10*time.Second, "close an idle keep-alive connection that carried no authenticated request after this long")
	f.DurationVar(&cfg.JobMinInterval, "job-min-interval", time.Second, "the tightest job schedule a non-admin may set")
	f.StringSliceVar(&cfg.JobWebhookAllow, "job-webhook-allow", nil, "internal destinations job alarm and trace alert webhooks may reach (CIDR, address or host name; default: public addresses only)")
	f.StringVar(&cfg.Store, "store", "", "SQL store: sqlite://PATH (default <data>/tangram.db), postgres://… or mysql://user:pass@host:port/db")
	f.String("secret-key-file", "", "file with the 32-byte key (hex) encrypting secret config items (default <data>/secret.key; env TANGRAM_SECRET_KEY)")
	f.DurationVar(&cfg.ConfigScanInterval, "config-scan-interval", time.Second, "how often releases made on other servers are picked up")
	f.IntVar(&cfg.ConfigMaxValueBytes, "config-max-value", 1<<20, "largest config value in bytes")
	f.BoolVar(&cfg.SecureCookies, "secure-cookies", false, "mark console cookies Secure (serve behind TLS)")
	f.BoolVar(&cfg.ConfigBlockingWatches, "config-blocking-watches", false, "hold config watches on a goroutine each instead of parking them (for comparison)")
	_ = f.MarkHidden("config-blocking-watches")
	f.StringVar(&cfg.KVAddr, "kv", cfg.KVAddr, "Redis-protocol store listen address (\"off\" runs none)")
	f.StringVar(&cfg.OTLPHTTPAddr, "otlp-http", cfg.OTLPHTTPAddr, "trace collector's OTLP/HTTP listen address (\"off\" receives none)")
	f.StringVar(&cfg.OTLPGRPCAddr, "otlp-grpc", cfg.OTLPGRPCAddr, "trace collector's OTLP/gRPC listen address (\"off\" receives none)")
	f.StringVar(&cfg.OTLPAuth, "otlp-auth", "auto", "whether OTLP exports need an API token (Authorization: Bearer <token>): auto (when a receiver listens beyond loopback), on or off")
	f.DurationVar(&cfg.TraceMaxAge, "trace-max-age", 7*24*time.Hour, "drop stored spans older than this")
	f.Int64Var(&cfg.TraceMaxBytes, "trace-max-bytes", 0, "drop the oldest stored spans past this many bytes (0: no cap)")
	f.StringVar(&cfg.TraceEndpoint, "trace-endpoint", "", "where the server sends its own spans: its own collector (default, when the trace component runs), \"off\", or an OTLP/HTTP traces URL")
	f.StringSliceVar(&cfg.TraceForward, "trace-forward", nil, "also send every export the collector receives to these OTLP/HTTP endpoints: a signal's URL (http://jaeger:4318/v1/traces) gets that signal, a collector's base URL (http://otelcol:4318) traces, metrics and logs")
	f.Float64Var(&cfg.TraceTailSampling.Ratio, "trace-keep-ratio", 1, "tail sampling: the share of ordinary traces the collector stores (below 1 turns it on; traces with an error or a slow span are always kept)")
	f.DurationVar(&cfg.TraceTailSampling.Slow, "trace-keep-slower-than", time.Second, "tail sampling: always keep traces with a span at least this long")
	f.DurationVar(&cfg.TraceTailSampling.Wait, "trace-decision-wait", 5*time.Second, "tail sampling: how long a trace's spans are held for its decision")
	f.DurationVar(&cfg.MetricsEvery, "metrics-every", 15*time.Second, "how often the server samples its own metrics into its collector (or the trace endpoint's /v1/metrics) for the console's charts (0: never)")
	f.Float64Var(&cfg.TraceSampleRatio, "trace-sample-ratio", 1, "share of the server's new traces recorded (0 to 1; parent-based: a caller's decision is kept)")
	f.StringVar(&cfg.KVFsync, "kv-fsync", "everysec", "kv append-only log fsync policy: always, everysec or no")
	f.BoolVar(&cfg.KVNoPersist, "kv-no-persist", false, "keep kv data in memory only (no append-only log in <data>/kv)")
	f.StringVar(&cfg.BrokerAddr, "broker", cfg.BrokerAddr, "in-process MQ broker listen address (\"off\" runs none; brokers then run as \"tangram broker\")")
	f.StringVar(&cfg.BrokerName, "broker-name", "", "the in-process broker's name (default broker-<hostname>)")
	f.StringVar(&cfg.BrokerFlush, "broker-flush", "async", "broker flush policy: async (interval) or sync (an ack means fsynced)")
	f.IntVar(&cfg.BrokerSegmentSize, "broker-segment-size", 64<<20, "in-process broker's commitlog file size in bytes (tangram broker: 1 GiB; an existing log keeps its size)")
	f.BoolVar(&cfg.BrokerNoAutoCreate, "broker-no-auto-create", false, "refuse sends to topics that do not exist")
	f.StringVar(&cfg.TxnAlarmWebhook, "txn-alarm-webhook", "", "URL that receives a transaction parked as failed (JSON, POST)")
	f.StringSliceVar(&cfg.TxnAlarmEmails, "txn-alarm-email", nil, "addresses e-mailed when a transaction is parked as failed (needs --smtp-addr)")
	f.StringSliceVar(&cfg.TxnAllow, "txn-allow", nil, "where transaction branches may be called: host or service names, *.domain, addresses, networks (10.0.0.0/8); empty: anywhere")
	f.StringVar(&cfg.SMTP.Addr, "smtp-addr", "", "mail server (host:port) for alarm e-mails (jobs, transactions)")
	f.StringVar(&cfg.SMTP.From, "smtp-from", "tangram@localhost", "sender of alarm e-mails")
	f.StringVar(&cfg.SMTP.Username, "smtp-user", "", "SMTP user (password in TANGRAM_SMTP_PASSWORD); PLAIN auth needs TLS or a local server")
	f.StringSliceVar(&cfg.Components, "components", cfg.Components, "components this process runs, comma-separated: "+strings.Join(server.ComponentNames(), ",")+" (default all)")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "serve net/http/pprof on this address (unauthenticated: keep it on loopback)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
