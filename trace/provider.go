package trace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// DefaultEndpoint is where a service sends its spans unless told
// otherwise: the OTLP/HTTP receiver of a `tangram server` on this machine.
const DefaultEndpoint = "http://127.0.0.1:4318/v1/traces"

// Config configures a Provider: the OpenTelemetry SDK set up the way
// Tangram's pieces expect.
type Config struct {
	// Service is the service.name every span carries (required).
	Service string
	// Endpoint is the OTLP/HTTP traces URL (default DefaultEndpoint).
	Endpoint string
	// Headers go with every export (e.g. "authorization": "Bearer …").
	Headers map[string]string
	// SampleRatio is the share of new traces recorded, 0 to 1 (default
	// 1: all). It is parent-based: a span whose caller sampled (or
	// dropped) its trace does the same, so traces are never cut in half.
	SampleRatio float64
	// SampleNone records nothing (SampleRatio cannot say 0: zero means
	// the default).
	SampleNone bool
	// QueueSize bounds the spans waiting for export (default 8192). When
	// it is full new spans are dropped and counted — a slow or absent
	// collector never blocks the application or grows its memory.
	QueueSize int
	// BatchSize is the most spans per export (default 512); BatchTimeout
	// the longest a span waits for its batch to fill (default 1 s).
	BatchSize    int
	BatchTimeout time.Duration
	// ExportTimeout bounds one export with its retries (default 10 s).
	ExportTimeout time.Duration
	// Resource holds more resource attributes (service.version,
	// deployment.environment, host.name …).
	Resource map[string]string
	// Exporter replaces the OTLP/HTTP exporter (the server uses one that
	// writes into its own collector; tests use an in-memory one).
	Exporter sdktrace.SpanExporter
	// Logger receives export failures (default: none).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults (Service still needed).
func DefaultConfig() Config {
	return Config{Endpoint: DefaultEndpoint, SampleRatio: 1, QueueSize: 8192, BatchSize: 512,
		BatchTimeout: time.Second, ExportTimeout: 10 * time.Second}
}

// EnvConfig is DefaultConfig with OpenTelemetry's standard environment
// variables applied: OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// (or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces),
// OTEL_EXPORTER_OTLP_HEADERS (k=v,k=v), OTEL_TRACES_SAMPLER_ARG (the ratio)
// and OTEL_RESOURCE_ATTRIBUTES. A program calls it; the package itself
// reads no environment.
func EnvConfig() Config {
	c := DefaultConfig()
	c.Service = os.Getenv("OTEL_SERVICE_NAME")
	if v := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		c.Endpoint = v
	} else if v := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		c.Endpoint = strings.TrimSuffix(v, "/") + "/v1/traces"
	}
	if h := pairs(os.Getenv("OTEL_EXPORTER_OTLP_HEADERS")); len(h) > 0 {
		c.Headers = h
	}
	if r, err := strconv.ParseFloat(os.Getenv("OTEL_TRACES_SAMPLER_ARG"), 64); err == nil {
		if r == 0 {
			c.SampleNone = true
		} else {
			c.SampleRatio = r
		}
	}
	if a := pairs(os.Getenv("OTEL_RESOURCE_ATTRIBUTES")); len(a) > 0 {
		c.Resource = a
	}
	return c
}

func pairs(s string) map[string]string {
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(p, "="); ok && strings.TrimSpace(k) != "" {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Endpoint == "" {
		c.Endpoint = d.Endpoint
	}
	if c.SampleRatio == 0 {
		c.SampleRatio = d.SampleRatio
	}
	if c.QueueSize <= 0 {
		c.QueueSize = d.QueueSize
	}
	if c.BatchSize <= 0 {
		c.BatchSize = d.BatchSize
	}
	if c.BatchTimeout <= 0 {
		c.BatchTimeout = d.BatchTimeout
	}
	if c.ExportTimeout <= 0 {
		c.ExportTimeout = d.ExportTimeout
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Service) == "" {
		errs = append(errs, errors.New("trace: Service is required (the service.name of every span)"))
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("trace: SampleRatio %v: want 0 to 1", c.SampleRatio))
	}
	if c.BatchSize > 0 && c.QueueSize > 0 && c.BatchSize > c.QueueSize {
		errs = append(errs, fmt.Errorf("trace: BatchSize %d is larger than QueueSize %d", c.BatchSize, c.QueueSize))
	}
	return errors.Join(errs...)
}

// Provider is an OpenTelemetry TracerProvider exporting to a collector
// through a bounded batch queue. Hand TracerProvider() to Tangram's
// interceptors and clients (or set it as otel's global provider).
type Provider struct {
	tp  *sdktrace.TracerProvider
	exp sdktrace.SpanExporter
}

// New makes a Provider. Its batch processor's goroutine runs until
// Shutdown or Close.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	exp := cfg.Exporter
	if exp == nil {
		e, err := NewExporter(cfg.Endpoint, cfg.Headers, cfg.Logger)
		if err != nil {
			return nil, err
		}
		exp = e
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.Service),
		attribute.String("telemetry.sdk.name", "opentelemetry"), attribute.String("telemetry.sdk.language", "go")}
	for k, v := range cfg.Resource {
		if k != "service.name" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	var sampler sdktrace.Sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))
	if cfg.SampleNone {
		sampler = sdktrace.ParentBased(sdktrace.NeverSample())
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sampler),
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(cfg.QueueSize), sdktrace.WithMaxExportBatchSize(cfg.BatchSize),
			sdktrace.WithBatchTimeout(cfg.BatchTimeout), sdktrace.WithExportTimeout(cfg.ExportTimeout)))
	return &Provider{tp: tp, exp: exp}, nil
}

// TracerProvider is the provider to pass to instrumentation.
func (p *Provider) TracerProvider() oteltrace.TracerProvider { return p.tp }

// Tracer is TracerProvider().Tracer(name).
func (p *Provider) Tracer(name string) oteltrace.Tracer { return p.tp.Tracer(name) }

// Exporter is the exporter spans go to.
func (p *Provider) Exporter() sdktrace.SpanExporter { return p.exp }

// ForceFlush exports every finished span now.
func (p *Provider) ForceFlush(ctx context.Context) error { return p.tp.ForceFlush(ctx) }

// Shutdown exports what is queued (bounded by ctx) and stops.
func (p *Provider) Shutdown(ctx context.Context) error {
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("trace: shutdown: %w", err)
	}
	return nil
}

// Close is Shutdown with five seconds to export what is queued.
func (p *Provider) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Shutdown(ctx)
}
