// Package sampler sends a process's own Prometheus metrics to a collector
// as OTLP metrics at an interval — the in-process equivalent of an
// OpenTelemetry Collector scraping /metrics — so that the console charts
// them over time. The tangram server samples itself into its own
// collector; a standalone broker samples itself into a remote one.
package sampler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/tangram-dev/tangram/trace/otlp"
)

// DefaultEvery is the default sampling interval.
const DefaultEvery = 15 * time.Second

// runtimeMetrics are the Go and process metrics kept beside the tangram_
// ones: enough to chart a process's load without every GC detail.
var runtimeMetrics = map[string]bool{
	"go_goroutines":                 true,
	"go_memstats_heap_alloc_bytes":  true,
	"process_cpu_seconds_total":     true,
	"process_resident_memory_bytes": true,
}

// Tangram says whether a family is worth sending: every tangram_ family
// and a few runtime ones — but the collector's RED histograms per service
// and operation, which a collector computes from the spans themselves.
func Tangram(name string) bool {
	if strings.HasPrefix(name, "tangram_trace_span_") {
		return false
	}
	return strings.HasPrefix(name, "tangram_") || runtimeMetrics[name]
}

// Sink takes one sample.
type Sink func(ctx context.Context, rms []*metricspb.ResourceMetrics) error

// Config is what to sample and where it goes.
type Config struct {
	Gatherer prometheus.Gatherer
	// Keep picks the families sent (default Tangram).
	Keep func(name string) bool
	// Every is the interval (default DefaultEvery).
	Every time.Duration
	// Service, Instance and Version name the sending process (the OTLP
	// resource's service.name, service.instance.id, service.version);
	// Scope is the instrumentation scope's name.
	Service, Instance, Version, Scope string
	Sink                              Sink
	Logger                            *slog.Logger
}

// Sampler samples until Close.
type Sampler struct {
	cfg   Config
	start time.Time
	ctx   context.Context // ends at Close: it cuts a slow sink short
	stop  context.CancelFunc
	done  chan struct{}
}

// Start starts sampling: the first sample one interval from now.
func Start(cfg Config) (*Sampler, error) {
	if cfg.Gatherer == nil || cfg.Sink == nil {
		return nil, errors.New("sampler: a Gatherer and a Sink are needed")
	}
	if cfg.Keep == nil {
		cfg.Keep = Tangram
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Sampler{cfg: cfg, start: time.Now(), done: make(chan struct{})}
	s.ctx, s.stop = context.WithCancel(context.Background())
	go s.run()
	return s, nil
}

// Close stops sampling and waits for a sample in flight.
func (s *Sampler) Close() {
	s.stop()
	<-s.done
}

func (s *Sampler) run() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if err := s.Sample(s.ctx); err != nil {
				s.cfg.Logger.Warn("sampling this process's metrics", "service", s.cfg.Service, "err", err)
			}
		}
	}
}

// Sample gathers once and hands the sample to the sink.
func (s *Sampler) Sample(ctx context.Context) error {
	rms, err := s.Gather(time.Now())
	if err != nil {
		return err
	}
	return s.cfg.Sink(ctx, rms)
}

// Gather is the kept families as one OTLP resource: counters as sums
// cumulative from the sampler's start, histograms with their buckets.
func (s *Sampler) Gather(now time.Time) ([]*metricspb.ResourceMetrics, error) {
	fams, err := s.cfg.Gatherer.Gather()
	if err != nil && len(fams) == 0 {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	kept := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		if s.cfg.Keep(f.GetName()) {
			kept = append(kept, f)
		}
	}
	return []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			strAttr("service.name", s.cfg.Service),
			strAttr("service.instance.id", s.cfg.Instance),
			strAttr("service.version", s.cfg.Version),
		}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{
			Scope:   &commonpb.InstrumentationScope{Name: s.cfg.Scope, Version: s.cfg.Version},
			Metrics: otlp.FromPrometheus(kept, s.start, now),
		}},
	}}, nil
}

// MetricsURL is the OTLP/HTTP metrics URL for endpoint: a …/v1/metrics
// URL as it is, a …/v1/traces URL's sibling, or a collector's base URL
// (http://host:4318) with /v1/metrics added.
func MetricsURL(endpoint string) (string, error) {
	e := strings.TrimRight(endpoint, "/")
	if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
		return "", fmt.Errorf("sampler: metrics endpoint %q: want an http:// or https:// URL of an OTLP/HTTP collector", endpoint)
	}
	switch {
	case strings.HasSuffix(e, "/v1/metrics"):
		return e, nil
	case strings.HasSuffix(e, "/v1/traces"):
		return strings.TrimSuffix(e, "/v1/traces") + "/v1/metrics", nil
	}
	return e + "/v1/metrics", nil
}

// HTTPSink posts each sample to url (OTLP/HTTP, protobuf) with headers
// (e.g. "authorization": "Bearer …" for a collector that asks for tokens).
func HTTPSink(url string, headers map[string]string) Sink {
	client := &http.Client{Timeout: 10 * time.Second}
	return func(ctx context.Context, rms []*metricspb.ResourceMetrics) error {
		body, err := otlp.AppendMetricsRequest(nil, rms)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, client.Timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("metrics endpoint: %w", err)
		}
		req.Header.Set("Content-Type", "application/x-protobuf")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("send metrics: %w", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("send metrics to %s: %s", url, resp.Status)
		}
		return nil
	}
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}
