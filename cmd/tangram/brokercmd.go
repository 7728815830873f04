package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/trace/sampler"
)

// tuneGC raises the garbage collector's target for the long-running
// processes (server, broker) unless GOGC is set: their live heap is small
// and their garbage rate high (message bodies, frames), so the default
// collects every few milliseconds and its pauses show in tail latency.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func newBrokerCmd(g *globals) *cobra.Command {
	var (
		listen, advertise, name, dir, servers, flush, levels, logFormat, logLevel, master, metricsAddr string
		metricsEndpoint                                                                                string
		metricsEvery                                                                                   time.Duration
		syncReplicas                                                                                   bool
		segment, maxBody                                                                               int
		autoCreate                                                                                     bool
		retainAge                                                                                      time.Duration
		retainBytes                                                                                    int64
	)
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run a message queue broker on its own (tangram server runs one in-process)",
		Long: `Run an MQ broker: a commitlog on local disk serving producers and consumers over
Tangram RPC. It registers its topics with every server given (the name service) and
checks clients' API tokens with them. Its own token (TANGRAM_TOKEN) needs the broker
role, which lets it register and replicate and nothing else:
  tangram auth create-user broker-1 --token-only --role broker
  tangram auth create-token broker-1 --user broker-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			metricsURL := ""
			if metricsEndpoint != "" {
				if metricsURL, err = sampler.MetricsURL(metricsEndpoint); err != nil {
					return fmt.Errorf("--metrics-endpoint: %w", err)
				}
			}
			tuneGC()
			token := g.token
			if token == "" {
				return errors.New("a token is needed to register with the servers: --token or TANGRAM_TOKEN")
			}
			var dls []time.Duration
			for _, f := range strings.Fields(levels) {
				d, err := time.ParseDuration(f)
				if err != nil || d <= 0 {
					return fmt.Errorf("--delay-levels %q: %q is not a duration", levels, f)
				}
				dls = append(dls, d)
			}
			if name == "" {
				host, _ := os.Hostname()
				name = "broker-" + host
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var conns []*rpc.Client
			for _, s := range strings.Split(servers, ",") {
				c, err := rpc.Dial(ctx, strings.TrimSpace(s), rpc.WithToken(token), rpc.WithLogger(log))
				if err != nil {
					return fmt.Errorf("--servers: %w", err)
				}
				defer c.Close()
				conns = append(conns, c)
			}
			authenticate, register, record := broker.Remote(conns)
			b, err := broker.New(broker.Config{
				Master: master, Token: token, SyncReplicas: syncReplicas, Addr: listen,
				Name: name, Dir: dir, AutoCreate: autoCreate, MaxBody: maxBody, DelayLevels: dls, Advertise: advertise, Logger: log,
				Store:        store.Config{SegmentSize: segment, Flush: flush, RetainAge: retainAge, RetainBytes: retainBytes},
				Authenticate: authenticate,
				Register:     register,
				Audit:        record,
			})
			if err != nil {
				return err
			}
			if err := b.Start(ctx); err != nil {
				b.Close()
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "broker %s listening on %s\n", name, b.Addr())
			reg := prometheus.NewRegistry()
			reg.MustRegister(b.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			if metricsURL != "" {
				// The console's MQ charts read what the servers' collector
				// stores: a broker of its own sends its counters there.
				sm, err := sampler.Start(sampler.Config{Gatherer: reg, Every: metricsEvery, Sink: sampler.HTTPSink(metricsURL, map[string]string{"authorization": "Bearer " + token}), Logger: log,
					Service: "tangram-broker", Instance: name, Version: server.Version, Scope: "github.com/tangram-dev/tangram/mq/broker"})
				if err != nil {
					b.Close()
					return err
				}
				defer sm.Close()
			}
			if metricsAddr != "" {
				mux := http.NewServeMux()
				mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
				mln, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					b.Close()
					return fmt.Errorf("broker: metrics listen on %s: %w", metricsAddr, err)
				}
				ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
				go func() { _ = ms.Serve(mln) }()
				defer ms.Close()
			}
			<-ctx.Done()
			log.Info("broker shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return b.Shutdown(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", ":7072", "listen address")
	f.StringVar(&advertise, "advertise", "", "address clients dial (default the listener's)")
	f.StringVar(&name, "name", "", "broker name (default broker-<hostname>)")
	f.StringVar(&dir, "dir", filepath.Join("data", "broker"), "data directory (commitlog, queues, offsets)")
	f.StringVar(&servers, "servers", envOr("TANGRAM_SERVERS", "127.0.0.1:7071"), "Tangram servers' RPC addresses, comma-separated (env TANGRAM_SERVERS)")
	f.StringVar(&flush, "flush", "async", "flush policy: async (interval) or sync (an ack means fsynced)")
	f.IntVar(&segment, "segment-size", 1<<30, "commitlog file size in bytes")
	f.IntVar(&maxBody, "max-body", wire.DefaultMaxBody, "largest message body in bytes")
	f.BoolVar(&autoCreate, "auto-create", true, "create unknown topics on first send")
	f.StringVar(&levels, "delay-levels", "", "delay levels, e.g. \"1s 5s 10s 30s 1m\" (default RocketMQ's 18, 1s … 2h)")
	f.DurationVar(&retainAge, "retain", 72*time.Hour, "delete commitlog files older than this")
	f.Int64Var(&retainBytes, "retain-bytes", 0, "delete the oldest commitlog files beyond this size (0: no limit)")
	f.StringVar(&master, "master", "", "run as a slave of the broker at this address (same --name and --segment-size): replicate it, serve reads while it is down")
	f.BoolVar(&syncReplicas, "sync-replicas", false, "acknowledge a send only once a slave has stored it (on a master)")
	f.StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics on this address (GET /metrics)")
	f.StringVar(&metricsEndpoint, "metrics-endpoint", "", "send the broker's metrics as OTLP to this collector (a tangram server's OTLP/HTTP address, e.g. http://host:4318) for the console's charts")
	f.DurationVar(&metricsEvery, "metrics-every", sampler.DefaultEvery, "how often --metrics-endpoint gets a sample")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
