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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/proxy"
	"github.com/tangram-dev/tangram/registry"
)

func newProxyCmd(g *globals) *cobra.Command {
	var servers, routes []string
	var zone, cacheDir, metricsAddr string
	cmd := &cobra.Command{
		Use:   "proxy --route LISTEN=rpc|http:SERVICE …",
		Short: "Forward Tangram RPC and HTTP traffic to healthy instances found in the registry (sidecar or central proxy)",
		Example: `  tangram proxy --registry 10.0.0.1:7071 --route :9001=rpc:orders --route :8080=http:web
  tangram proxy --route 127.0.0.1:9001=rpc:prod/default/payments --zone az1 --metrics :9100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := proxy.Config{Zone: zone, Logger: slog.Default(),
				Registry: registry.ClientConfig{Servers: servers, Token: g.token, CacheDir: cacheDir}}
			for _, s := range routes {
				r, err := proxy.ParseRoute(s)
				if err != nil {
					return err
				}
				cfg.Routes = append(cfg.Routes, r)
			}
			reg := prometheus.NewRegistry()
			cfg.Registerer = reg
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p, err := proxy.New(cfg)
			if err != nil {
				return err
			}
			if err := p.Start(ctx); err != nil {
				return err
			}
			for i, a := range p.Addrs() {
				fmt.Fprintf(g.Out, "%s → %s %s\n", a, cfg.Routes[i].Protocol, cfg.Routes[i].Service)
			}
			var ms *http.Server
			if metricsAddr != "" {
				ln, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					p.Close()
					return err
				}
				ms = &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
				go func() {
					if err := ms.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
						slog.Error("proxy metrics listener", "err", err)
					}
				}()
			}
			<-ctx.Done()
			fmt.Fprintln(g.Out, "draining")
			if ms != nil {
				ms.Close()
			}
			return p.Shutdown(context.Background())
		},
	}
	cmd.Flags().StringSliceVar(&servers, "registry", []string{"127.0.0.1:7071"}, "registry servers' RPC addresses")
	cmd.Flags().StringArrayVar(&routes, "route", nil, "LISTEN=rpc:SERVICE or LISTEN=http:SERVICE (SERVICE: NAME or NAMESPACE/GROUP/NAME); repeatable")
	cmd.Flags().StringVar(&zone, "zone", "", "prefer instances in this zone")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "keep disk snapshots of the instance lists here")
	cmd.Flags().StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics on this address")
	return cmd
}
