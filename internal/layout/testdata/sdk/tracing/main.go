// A traced service: the trace SDK (provider, OTLP exporter, slog handler,
// HTTP middleware and transport) with the RPC client's interceptor.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/trace"
)

func main() {
	cfg := trace.EnvConfig()
	cfg.Service = "demo"
	p, err := trace.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	log := slog.New(trace.NewLogHandler(slog.NewJSONHandler(os.Stderr, nil), trace.LogOptions{SpanEvents: true}))
	_ = rpc.ClientTracing(p.TracerProvider())
	http.Handle("/", trace.HTTPHandler(p.TracerProvider(), http.NotFoundHandler(), nil))
	client := &http.Client{Transport: trace.Transport(p.TracerProvider(), nil)}
	log.InfoContext(context.Background(), "ready", "client", client != nil)
}
