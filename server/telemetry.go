package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/tangram-dev/tangram/trace/otlp"
)

// defaultMetricsEvery is how often the server samples its own metrics.
const defaultMetricsEvery = 15 * time.Second

// runtimeMetrics are the Go and process metrics kept beside the tangram_
// ones: enough to chart a server's load without every GC detail.
var runtimeMetrics = map[string]bool{
	"go_goroutines":                 true,
	"go_memstats_heap_alloc_bytes":  true,
	"process_cpu_seconds_total":     true,
	"process_resident_memory_bytes": true,
}

// sampledFamily says whether a family is sent to the collector. The
// collector's RED histograms per service and operation are left out: it
// computes those from the spans themselves.
func sampledFamily(name string) bool {
	if strings.HasPrefix(name, "tangram_trace_span_") {
		return false
	}
	return strings.HasPrefix(name, "tangram_") || runtimeMetrics[name]
}

// metricSampler sends the server's own Prometheus metrics to a collector
// as OTLP metrics every interval, so the console charts them over time:
// to the server's own collector, or to the OTLP/HTTP endpoint its spans
// go to. It is the in-process equivalent of an OpenTelemetry Collector
// scraping /metrics.
type metricSampler struct {
	s      *Server
	every  time.Duration
	start  time.Time
	url    string // remote /v1/metrics; "" sends to the local collector
	client *http.Client
	ctx    context.Context // ends at the stop: it cuts a slow remote short
	stop   context.CancelFunc
	done   chan struct{}
}

// startMetrics starts the sampler when there is somewhere to send to.
func (s *Server) startMetrics() {
	every := s.cfg.MetricsEvery
	if every < 0 {
		return
	}
	if every == 0 {
		every = defaultMetricsEvery
	}
	m := &metricSampler{s: s, every: every, start: time.Now(), done: make(chan struct{})}
	switch ep := s.cfg.TraceEndpoint; {
	case strings.HasSuffix(ep, "/v1/traces"):
		m.url = strings.TrimSuffix(ep, "/v1/traces") + "/v1/metrics"
		m.client = &http.Client{Timeout: 10 * time.Second}
	case s.traces != nil:
	default:
		if ep != "" && ep != "off" {
			s.log.Warn("the server's metrics are not sent: the trace endpoint is not an OTLP/HTTP …/v1/traces URL", "endpoint", ep)
		}
		return
	}
	m.ctx, m.stop = context.WithCancel(context.Background())
	s.metrics = m
	go m.run()
}

// stopMetrics stops the sampler (a no-op when none runs).
func (s *Server) stopMetrics() {
	if m := s.metrics; m != nil {
		m.stop()
		<-m.done
	}
}

func (m *metricSampler) run() {
	defer close(m.done)
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			if err := m.sample(); err != nil {
				m.s.log.Warn("sampling the server's metrics", "err", err)
			}
		}
	}
}

// sample gathers once and sends what it gathered.
func (m *metricSampler) sample() error {
	rms, err := m.gather(time.Now())
	if err != nil {
		return err
	}
	if m.url == "" {
		if n := m.s.traces.IngestMetrics(rms); n > 0 {
			return fmt.Errorf("the collector refused %d points", n)
		}
		return nil
	}
	body, err := otlp.AppendMetricsRequest(nil, rms)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("send metrics: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("send metrics to %s: %s", m.url, resp.Status)
	}
	return nil
}

// gather is the server's sampled metrics as one OTLP resource.
func (m *metricSampler) gather(now time.Time) ([]*metricspb.ResourceMetrics, error) {
	fams, err := m.s.reg.Gather()
	if err != nil && len(fams) == 0 {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	kept := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		if sampledFamily(f.GetName()) {
			kept = append(kept, f)
		}
	}
	return []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			strAttr("service.name", "tangram-server"),
			strAttr("service.instance.id", m.s.cfg.NodeName),
			strAttr("service.version", Version),
		}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{
			Scope:   &commonpb.InstrumentationScope{Name: "github.com/tangram-dev/tangram/server", Version: Version},
			Metrics: otlp.FromPrometheus(kept, m.start, now),
		}},
	}}, nil
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}
