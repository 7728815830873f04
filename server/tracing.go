package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tangram-dev/tangram/trace"
	traceserver "github.com/tangram-dev/tangram/trace/server"
)

// selfExporter hands the server's own spans to its collector once the
// trace component has started (it starts after the others); spans ended
// before that, or with no collector, are dropped.
type selfExporter struct {
	c atomic.Pointer[traceserver.Server]
}

func (e *selfExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	c := e.c.Load()
	if c == nil {
		return nil
	}
	return c.Exporter().ExportSpans(ctx, spans)
}

func (e *selfExporter) Shutdown(context.Context) error { return nil }

// startTracing sets up the tracer provider the server's own pieces use
// (RPC and HTTP servers, the scheduler, the transaction coordinator):
// by default its own collector, when the trace component runs; an
// OTLP/HTTP URL in TraceEndpoint sends the spans there instead; "off"
// records none.
func (s *Server) startTracing(selected []string) error {
	s.tp = noop.NewTracerProvider()
	ep := s.cfg.TraceEndpoint
	if ep == "off" || (ep == "" && !slices.Contains(selected, CompTrace)) {
		return nil
	}
	cfg := trace.DefaultConfig()
	cfg.Service, cfg.Logger = "tangram-server", s.log.With("component", "trace")
	cfg.Resource = map[string]string{"service.instance.id": s.cfg.NodeName, "service.version": Version}
	if s.cfg.TraceSampleRatio > 0 {
		cfg.SampleRatio = s.cfg.TraceSampleRatio
	}
	if ep == "" {
		s.self = &selfExporter{}
		cfg.Exporter = s.self
	} else {
		cfg.Endpoint = ep
		if s.cfg.TraceToken != "" {
			cfg.Headers = map[string]string{"authorization": "Bearer " + s.cfg.TraceToken}
		}
	}
	p, err := trace.New(cfg)
	if err != nil {
		return err
	}
	s.tracing, s.tp = p, p.TracerProvider()
	return nil
}

// tracingOn says whether the server records spans.
func (s *Server) tracingOn() bool { return s.tracing != nil }

// stopTracing exports what is queued — before the collector closes — and
// stops the provider.
func (s *Server) stopTracing(ctx context.Context) error {
	if s.tracing == nil {
		return nil
	}
	err := s.tracing.Shutdown(ctx)
	s.tracing = nil
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil // what did not fit in the grace period is dropped
	}
	return err
}

// untraced are requests not worth a span: probes, metrics scrapes and
// the console's static files.
func untraced(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics", "/favicon.ico":
		return true
	}
	return strings.HasPrefix(r.URL.Path, "/static/")
}

// TracerProvider is the provider the server records its own spans with (a
// no-op one when tracing is off).
func (s *Server) TracerProvider() oteltrace.TracerProvider { return s.tp }

// tracerFor is the provider for a component whose tracing is optional:
// nil when tracing is off, so it skips the work altogether.
func (s *Server) tracerFor() oteltrace.TracerProvider {
	if s.tracing == nil {
		return nil
	}
	return s.tp
}
