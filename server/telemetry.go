package server

import (
	"context"
	"fmt"
	"strings"

	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/tangram-dev/tangram/trace/sampler"
)

// startMetrics starts sampling the server's own Prometheus metrics as OTLP
// metrics (trace/sampler) when there is somewhere to send them: the
// server's own collector, or the OTLP/HTTP endpoint its spans go to
// (…/v1/metrics beside …/v1/traces), so that one collector charts a
// cluster.
func (s *Server) startMetrics() {
	if s.cfg.MetricsEvery < 0 {
		return
	}
	var sink sampler.Sink
	switch ep := s.cfg.TraceEndpoint; {
	case strings.HasSuffix(ep, "/v1/traces"):
		url, err := sampler.MetricsURL(ep)
		if err != nil {
			s.log.Warn("the server's metrics are not sent", "err", err)
			return
		}
		var hdr map[string]string
		if s.cfg.TraceToken != "" {
			hdr = map[string]string{"authorization": "Bearer " + s.cfg.TraceToken}
		}
		sink = sampler.HTTPSink(url, hdr)
	case s.traces != nil:
		sink = func(_ context.Context, rms []*metricspb.ResourceMetrics) error {
			if n := s.traces.ExportMetrics(rms); n > 0 {
				return fmt.Errorf("the collector refused %d points", n)
			}
			return nil
		}
	default:
		if ep != "" && ep != "off" {
			s.log.Warn("the server's metrics are not sent: the trace endpoint is not an OTLP/HTTP …/v1/traces URL", "endpoint", ep)
		}
		return
	}
	m, err := sampler.Start(sampler.Config{
		Gatherer: s.reg, Every: s.cfg.MetricsEvery, Sink: sink, Logger: s.log,
		Service: "tangram-server", Instance: s.cfg.NodeName, Version: Version,
		Scope: "github.com/tangram-dev/tangram/server",
	})
	if err != nil {
		s.log.Warn("the server's metrics are not sampled", "err", err)
		return
	}
	s.metrics = m
}

// stopMetrics stops the sampler (a no-op when none runs).
func (s *Server) stopMetrics() {
	if s.metrics != nil {
		s.metrics.Close()
	}
}
