// Package server is the trace collector: OTLP/HTTP receivers for any
// OpenTelemetry SDK (POST /v1/traces, protobuf or JSON, gzip or not), a
// bounded ingest queue that never makes a sender wait — what does not fit
// is refused at once, counted, and reported to the sender as OTLP's
// partial success — a writer that appends batches to the span store, and
// the query API (a trace by ID, searches).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/tangram-dev/tangram/internal/alarm"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/trace/otlp"
	"github.com/tangram-dev/tangram/trace/rollup"
	"github.com/tangram-dev/tangram/trace/series"
	"github.com/tangram-dev/tangram/trace/store"
)

// Config is the collector's configuration.
type Config struct {
	// Dir holds the span store (required).
	Dir string
	// OTLPHTTPAddr is where OTLP/HTTP is received (default
	// 127.0.0.1:4318, OTLP's standard port; "off" receives none — spans
	// then come only through Ingest), OTLPGRPCAddr OTLP/gRPC (default
	// 127.0.0.1:4317).
	OTLPHTTPAddr string
	OTLPGRPCAddr string
	// Authenticate, when set, is asked about every OTLP request's bearer
	// token (the Authorization header: "Bearer <token>", over HTTP and as
	// gRPC metadata); a request it refuses is not read. It returns nil to
	// let the request in, an error wrapping ErrUnauthenticated for a
	// missing or bad token (HTTP 401, gRPC UNAUTHENTICATED), any other
	// error when it cannot tell (503, gRPC UNAVAILABLE: exporters retry).
	// nil: the receivers take every request, as the OpenTelemetry
	// Collector's do unless given an authenticator.
	Authenticate func(ctx context.Context, token string) error
	// QueueSpans bounds the spans waiting for the writer (default 65536).
	QueueSpans int
	// BatchSpans is how many spans the writer appends at once at most
	// (default 4096).
	BatchSpans int
	// MaxRequestBytes bounds an OTLP request body, after gzip (default 32 MiB).
	MaxRequestBytes int64
	// Store: segment size, retention, fsync (store.Config without Dir).
	SegmentBytes int64
	MaxAge       time.Duration
	MaxBytes     int64
	Sync         bool
	// RetainEvery is how often retention runs besides at each new
	// segment (default 1 minute).
	RetainEvery time.Duration
	// Rollup bounds the RED figures and dependency map kept in memory
	// (default: 60 minutes, 10,000 series).
	Rollup rollup.Config
	// Metrics bounds the metric series received as OTLP metrics (default:
	// a day, 20,000 series), kept in <Dir>/series.json across restarts.
	Metrics series.Config
	// TailSampling keeps whole traces chosen once seen (off by default:
	// every span is stored).
	TailSampling TailSampling
	// Alerts: the rules' evaluation and notifications; the rules are kept
	// in <Dir>/alerts.json.
	Alerts Alerts
	// Audit records the alert rules' changes (nil: not recorded).
	Audit func(ctx context.Context, e audit.Entry)
	// Forward lists OTLP/HTTP endpoints (Jaeger, Tempo, an OpenTelemetry
	// Collector, another Tangram) that every export received is sent on
	// to, as received: a signal's URL (…/v1/traces, …/v1/metrics,
	// …/v1/logs) takes that signal, a base URL (http://host:4318) all
	// three; ForwardRetry bounds the
	// retries of one request (default 30 s). A forward queue that is full
	// drops, never blocks.
	Forward      []string
	ForwardRetry time.Duration
	Logger       *slog.Logger
}

// DefaultConfig returns the defaults (Dir still needed).
func DefaultConfig() Config {
	return Config{
		OTLPHTTPAddr: "127.0.0.1:4318", OTLPGRPCAddr: "127.0.0.1:4317", QueueSpans: 65536, BatchSpans: 4096, MaxRequestBytes: 32 << 20,
		SegmentBytes: store.DefaultConfig().SegmentBytes, MaxAge: 7 * 24 * time.Hour, RetainEvery: time.Minute,
	}
}

// Validate checks cfg.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("trace: Dir is required")
	}
	if t := c.TailSampling; t.Enabled && (t.Ratio < 0 || t.Ratio > 1 || t.Slow < 0 || t.Wait < 0 || t.MaxHeld < 0) {
		return errors.New("trace: TailSampling: Ratio is 0 to 1; Slow, Wait and MaxHeld cannot be negative")
	}
	if err := c.Metrics.Validate(); err != nil {
		return err
	}
	if c.QueueSpans < 0 || c.BatchSpans < 0 || c.MaxRequestBytes < 0 || c.RetainEvery < 0 {
		return errors.New("trace: QueueSpans, BatchSpans, MaxRequestBytes and RetainEvery cannot be negative")
	}
	for _, f := range c.Forward {
		if _, err := newForwarder(f, nil); err != nil {
			return err
		}
	}
	return store.Config{Dir: c.Dir, SegmentBytes: c.SegmentBytes, MaxAge: c.MaxAge, MaxBytes: c.MaxBytes}.Validate()
}

// ErrServerClosed is returned by Start after Close.
var ErrServerClosed = errors.New("trace: server closed")

// ErrUnauthenticated is what Config.Authenticate wraps to refuse a
// request's token.
var ErrUnauthenticated = errors.New("trace: missing or invalid API token")

// Server is the collector.
type Server struct {
	cfg Config
	log *slog.Logger

	st     *store.Store
	roll   *rollup.Rollup
	series *series.Store // metrics, from Start
	fwd    []*forwarder
	alerts *alerter
	hooks  *alarm.Policy // where alert webhooks may go
	alarms *alarm.Sender // from Start
	ln     net.Listener  // OTLP/HTTP
	grpcLn net.Listener  // OTLP/gRPC
	// receivers are the OTLP servers (HTTP, gRPC) running.
	receivers []*http.Server
	queue     chan []store.Span
	queued    atomic.Int64 // spans in queue
	// stopping refuses Ingest once Shutdown or Close has begun; ingestMu
	// makes a send that saw it false finish before the writer's last
	// drain.
	ingestMu sync.RWMutex
	stopping bool
	// pause, set before Start by tests of a full queue, makes the writer
	// wait until it is closed.
	pause chan struct{}

	received, dropped, stored, failed atomic.Int64
	sampledOut                        atomic.Int64 // left out by tail sampling
	metricsReceived, metricsRefused   atomic.Int64 // metric data points
	logsReceived, logsUntraced        atomic.Int64 // log records; those without a trace ID (not kept)

	mu       sync.Mutex
	started  bool
	closed   bool
	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New makes a collector; no I/O until Start.
func New(cfg Config) (*Server, error) {
	d := DefaultConfig()
	if cfg.OTLPHTTPAddr == "" {
		cfg.OTLPHTTPAddr = d.OTLPHTTPAddr
	}
	if cfg.OTLPGRPCAddr == "" {
		cfg.OTLPGRPCAddr = d.OTLPGRPCAddr
	}
	if cfg.QueueSpans == 0 {
		cfg.QueueSpans = d.QueueSpans
	}
	if cfg.BatchSpans == 0 {
		cfg.BatchSpans = d.BatchSpans
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = d.MaxRequestBytes
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = d.SegmentBytes
	}
	if cfg.RetainEvery == 0 {
		cfg.RetainEvery = d.RetainEvery
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ForwardRetry <= 0 {
		cfg.ForwardRetry = 30 * time.Second
	}
	if cfg.Alerts.EvalEvery <= 0 {
		cfg.Alerts.EvalEvery = 15 * time.Second
	}
	if cfg.Alerts.Repeat <= 0 {
		cfg.Alerts.Repeat = time.Hour
	}
	hooks, err := alarm.NewPolicy(cfg.Alerts.WebhookAllow)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, stop: make(chan struct{}), roll: rollup.New(cfg.Rollup), hooks: hooks}
	for _, ep := range cfg.Forward {
		f, err := newForwarder(ep, log)
		if err != nil {
			return nil, err
		}
		s.fwd = append(s.fwd, f)
	}
	return s, nil
}

// Start opens the store, listens for OTLP and starts the writer.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	if s.started {
		return errors.New("trace: already started")
	}
	st, err := store.Open(store.Config{Dir: s.cfg.Dir, SegmentBytes: s.cfg.SegmentBytes, MaxAge: s.cfg.MaxAge, MaxBytes: s.cfg.MaxBytes, Sync: s.cfg.Sync, Logger: s.log})
	if err != nil {
		return err
	}
	s.st = st
	s.replay()
	mcfg := s.cfg.Metrics
	mcfg.Path = filepath.Join(s.cfg.Dir, "series.json")
	if s.series, err = series.Open(mcfg); err != nil {
		st.Close()
		return err
	}
	if s.alerts, err = newAlerter(s); err != nil {
		st.Close()
		return err
	}
	if s.alarms, err = alarm.New(alarm.Config{SMTP: s.cfg.Alerts.SMTP, Policy: s.hooks, UserAgent: "tangram-trace-alert", Logger: s.log}); err != nil {
		st.Close()
		return err
	}
	// The queue holds batches; QueueSpans bounds the spans in them.
	s.queue = make(chan []store.Span, max(16, s.cfg.QueueSpans/64))
	// Both listeners first, so that a taken port leaves nothing running.
	var lns [2]net.Listener
	for i, addr := range []string{s.cfg.OTLPHTTPAddr, s.cfg.OTLPGRPCAddr} {
		if addr == "off" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				if l != nil {
					l.Close()
				}
			}
			st.Close()
			return fmt.Errorf("trace: listen for OTLP/%s: %w", []string{"HTTP", "gRPC"}[i], err)
		}
		lns[i] = ln
	}
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	if lns[0] != nil {
		mux := http.NewServeMux()
		mux.Handle("POST /v1/traces", http.HandlerFunc(s.receiveHTTP))
		mux.Handle("POST /v1/metrics", http.HandlerFunc(s.receiveMetricsHTTP))
		mux.Handle("POST /v1/logs", http.HandlerFunc(s.receiveLogsHTTP))
		s.serve(lns[0], &http.Server{Handler: s.authHTTP(mux), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}, "OTLP/HTTP")
		s.ln = lns[0]
	}
	if lns[1] != nil {
		// gRPC is HTTP/2 without TLS ("prior knowledge"), which net/http
		// serves itself: no gRPC library.
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		s.serve(lns[1], &http.Server{Handler: s.authGRPC(http.HandlerFunc(s.receiveGRPC)), Protocols: &p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}, "OTLP/gRPC")
		s.grpcLn = lns[1]
	}
	s.wg.Add(3)
	go s.writer()
	go s.saveSeries()
	go func() { defer s.wg.Done(); s.alerts.run(s.stop) }()
	for _, f := range s.fwd {
		f.wg.Add(1)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); f.run(s.stop, s.cfg.ForwardRetry) }()
	}
	s.started = true
	return nil
}

// OTLPAddr is the OTLP/HTTP receiver's address (after Start).
func (s *Server) OTLPAddr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// OTLPGRPCAddr is the OTLP/gRPC listener's address ("" when off).
func (s *Server) OTLPGRPCAddr() string {
	if s.grpcLn == nil {
		return ""
	}
	return s.grpcLn.Addr().String()
}

// serve runs a receiver until it is stopped.
func (s *Server) serve(ln net.Listener, h *http.Server, what string) {
	s.receivers = append(s.receivers, h)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := h.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("trace: receiver stopped", "receiver", what, "err", err)
		}
	}()
}

// Ingest queues spans for the store without waiting. It returns how many
// were refused because the queue is full (all or none of a call's).
func (s *Server) Ingest(spans []store.Span) (rejected int) {
	if len(spans) == 0 {
		return 0
	}
	s.received.Add(int64(len(spans)))
	s.ingestMu.RLock()
	defer s.ingestMu.RUnlock()
	if s.stopping || !s.isStarted() {
		s.dropped.Add(int64(len(spans)))
		return len(spans)
	}
	if s.queued.Add(int64(len(spans))) > int64(s.cfg.QueueSpans) {
		s.queued.Add(-int64(len(spans)))
		s.dropped.Add(int64(len(spans)))
		return len(spans)
	}
	select {
	case s.queue <- spans:
		return 0
	default:
		s.queued.Add(-int64(len(spans)))
		s.dropped.Add(int64(len(spans)))
		return len(spans)
	}
}

// IngestLogs queues log records (store.KindLog records, from
// otlp.DecodeLogs) with their traces' spans, without waiting; untraced
// is how many the export held without a trace ID, which are counted and
// not kept. It returns how many were refused: the untraced ones and, when
// the queue is full, the rest.
func (s *Server) IngestLogs(records []store.Span, untraced int) (rejected int) {
	s.logsReceived.Add(int64(len(records) + untraced))
	s.logsUntraced.Add(int64(untraced))
	return untraced + s.Ingest(records)
}

func (s *Server) isStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// writer appends queued spans to the store, several requests' spans per
// append, and runs retention now and then.
func (s *Server) writer() {
	defer s.wg.Done()
	retain := time.NewTicker(s.cfg.RetainEvery)
	defer retain.Stop()
	var batch, keep []store.Span
	var tl *tail
	var decideC <-chan time.Time
	if s.cfg.TailSampling.Enabled {
		tl = newTail(s.cfg.TailSampling)
		tick := time.NewTicker(tl.cfg.Wait / 4)
		defer tick.Stop()
		decideC = tick.C
	}
	// flush stores the batch — through the tail sampler when there is
	// one, which also settles the traces whose wait is over (all of them
	// when final).
	flush := func(final bool) {
		if len(batch) == 0 && tl == nil {
			return
		}
		// The figures and the map count every span received, stored or not.
		s.roll.Add(batch)
		out := batch
		if tl != nil {
			now := time.Now()
			var d1, d2 int
			keep, d1 = tl.add(batch, now, keep[:0])
			keep, d2 = tl.decide(now, final, keep)
			s.sampledOut.Add(int64(d1 + d2))
			out = keep
		}
		if len(out) > 0 {
			if err := s.st.Append(out); err != nil {
				s.failed.Add(int64(len(out)))
				s.log.Error("trace: store append failed; spans lost", "spans", len(out), "err", err)
			} else {
				s.stored.Add(int64(len(out)))
			}
		}
		s.queued.Add(-int64(len(batch)))
		clear(batch)
		batch = batch[:0]
		clear(keep)
	}
	for {
		select {
		case spans := <-s.queue:
			if p := s.pause; p != nil {
				<-p
			}
			batch = append(batch, spans...)
		more:
			for len(batch) < s.cfg.BatchSpans {
				select {
				case spans := <-s.queue:
					batch = append(batch, spans...)
				default:
					break more
				}
			}
			flush(false)
		case <-decideC:
			flush(false)
		case <-retain.C:
			s.st.Retain(time.Now())
		case <-s.stop:
			// Drain what was queued before the stop.
			for {
				select {
				case spans := <-s.queue:
					batch = append(batch, spans...)
					if len(batch) >= s.cfg.BatchSpans {
						flush(false)
					}
				default:
					flush(true)
					return
				}
			}
		}
	}
}

// saveSeries writes the metric series' snapshot every minute and at the
// stop.
func (s *Server) saveSeries() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.stop:
			if err := s.series.Save(); err != nil {
				s.log.Error("trace: saving the metric series failed", "err", err)
			}
			return
		}
		if err := s.series.Save(); err != nil {
			s.log.Warn("trace: saving the metric series failed", "err", err)
		}
	}
}

// IngestMetrics records metrics (what OTLP metrics receivers decoded, or
// a process's own sampled in process). It returns how many data points
// were refused: without a value, beyond the series bound, outside the
// window.
func (s *Server) IngestMetrics(rms []*metricspb.ResourceMetrics) (rejected int) {
	samples, skipped := otlp.Samples(rms)
	if !s.isStarted() {
		s.metricsRefused.Add(int64(len(samples) + skipped))
		return len(samples) + skipped
	}
	refused := s.series.Add(samples) + skipped
	s.metricsReceived.Add(int64(len(samples) + skipped))
	s.metricsRefused.Add(int64(refused))
	return refused
}

// Series is the metric series, for queries in process (after Start).
func (s *Server) Series() *series.Store { return s.series }

// Rollup is the RED figures and the dependency map, for queries in process.
// Bounds on the replay at start: the rollup's window of a busy collector
// may hold many millions of spans; the newest are replayed first.
const (
	replayMaxSpans = 5_000_000
	replayBudget   = 3 * time.Second
)

// replay refills the rollup's window (RED figures by minute, the service
// map) from the spans stored before this start, so that a restarted
// collector does not show empty figures until new spans arrive. Totals
// since the start stay at zero (rollup.Replay). It runs before ingest.
func (s *Server) replay() {
	began := time.Now()
	since := began.Add(-time.Duration(s.roll.Window()) * time.Minute)
	n, cut := 0, false
	err := s.st.ScanRecent(since, func(b []store.Span) bool {
		s.roll.Replay(b)
		n += len(b)
		cut = n >= replayMaxSpans || time.Since(began) >= replayBudget
		return !cut
	})
	switch {
	case err != nil:
		s.log.Warn("trace: replaying stored spans into the rollup", "err", err)
	case cut:
		s.log.Info("trace: rollup replayed in part (the newest spans of its window)", "spans", n, "took", time.Since(began))
	case n > 0:
		s.log.Info("trace: rollup replayed from the store", "spans", n, "took", time.Since(began))
	}
}

func (s *Server) Rollup() *rollup.Rollup { return s.roll }

// Store is the span store (after Start), for queries in process.
func (s *Server) Store() *store.Store { return s.st }

// Shutdown stops receiving — letting requests in flight finish until ctx
// ends — writes what was accepted, and closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.stopWith(func(h *http.Server) error {
		err := h.Shutdown(ctx)
		if err != nil {
			h.Close()
		}
		return err
	})
}

// Close stops at once: receivers closed, what was accepted written, the
// store closed; it returns when every goroutine has ended.
func (s *Server) Close() error {
	return s.stopWith(func(h *http.Server) error { h.Close(); return nil })
}

// stopWith stops the collector once, receivers stopped by stopHTTP; a
// later or concurrent Shutdown or Close waits for that stop and returns
// its result.
func (s *Server) stopWith(stopHTTP func(*http.Server) error) error {
	s.mu.Lock()
	started := s.started
	s.closed = true
	s.mu.Unlock()
	if !started {
		return nil
	}
	s.stopOnce.Do(func() {
		s.ingestMu.Lock()
		s.stopping = true
		s.ingestMu.Unlock()
		var errs []error
		for _, h := range s.receivers {
			errs = append(errs, stopHTTP(h))
		}
		err := errors.Join(errs...)
		close(s.stop)
		s.wg.Wait()
		s.alarms.Close()
		if cerr := s.st.Close(); err == nil {
			err = cerr
		}
		s.stopErr = err
	})
	return s.stopErr
}

// forward offers a received export of sig to every forwarding endpoint
// that takes it.
func (s *Server) forward(sig signal, body []byte, contentType string) {
	for _, f := range s.fwd {
		f.offer(sig, body, contentType)
	}
}

// forwards says whether any forwarding endpoint takes sig.
func (s *Server) forwards(sig signal) bool {
	for _, f := range s.fwd {
		if f.takes(sig) {
			return true
		}
	}
	return false
}

// ExportMetrics is IngestMetrics for this process's own metrics (the
// server's sampler): they are forwarded too, encoded, to the endpoints
// that take metrics.
func (s *Server) ExportMetrics(rms []*metricspb.ResourceMetrics) (rejected int) {
	if s.forwards(sigMetrics) {
		if b, err := otlp.AppendMetricsRequest(nil, rms); err == nil {
			s.forward(sigMetrics, b, "application/x-protobuf")
		}
	}
	return s.IngestMetrics(rms)
}

// Forwarded returns each forwarding endpoint's counters.
func (s *Server) Forwarded() []ForwardCounts {
	out := make([]ForwardCounts, len(s.fwd))
	for i, f := range s.fwd {
		out[i] = f.counts()
	}
	return out
}

// Collector returns the collector's metrics.
func (s *Server) Collector() prometheus.Collector { return (*metrics)(s) }

type metrics Server

var (
	descReceived = prometheus.NewDesc("tangram_trace_spans_received_total", "Spans received by the collector.", nil, nil)
	descDropped  = prometheus.NewDesc("tangram_trace_spans_dropped_total", "Spans refused because the ingest queue was full.", nil, nil)
	descStored   = prometheus.NewDesc("tangram_trace_spans_stored_total", "Spans written to the span store.", nil, nil)
	descFailed   = prometheus.NewDesc("tangram_trace_spans_failed_total", "Spans lost to a store write error.", nil, nil)
	descQueued   = prometheus.NewDesc("tangram_trace_spans_queued", "Spans waiting for the writer.", nil, nil)
	descFiring   = prometheus.NewDesc("tangram_trace_alerts_firing", "Alert rules firing now.", nil, nil)
	descSampled  = prometheus.NewDesc("tangram_trace_spans_sampled_out_total", "Spans left out by tail sampling (their traces had no error and were not slow).", nil, nil)
	descPoints   = prometheus.NewDesc("tangram_trace_metric_points_received_total", "Metric data points received (OTLP metrics and the server's own samples).", nil, nil)
	descRefused  = prometheus.NewDesc("tangram_trace_metric_points_refused_total", "Metric data points refused: no value, beyond the series bound, outside the window.", nil, nil)
	descSeries   = prometheus.NewDesc("tangram_trace_metric_series", "Metric series kept.", nil, nil)
	descLogs     = prometheus.NewDesc("tangram_trace_log_records_received_total", "OTLP log records received (kept with their trace's spans; the spans counters include them).", nil, nil)
	descUntraced = prometheus.NewDesc("tangram_trace_log_records_untraced_total", "OTLP log records received without a trace ID, which are not kept.", nil, nil)
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReceived
	ch <- descDropped
	ch <- descStored
	ch <- descFailed
	ch <- descQueued
	ch <- descSampled
	ch <- descFiring
	ch <- descPoints
	ch <- descRefused
	ch <- descSeries
	ch <- descLogs
	ch <- descUntraced
	ch <- descDuration
	ch <- descErrors
	ch <- descForward
}

// The RED series in Prometheus's form, per operation: a duration
// histogram (its buckets summed from the rollup's finer ones) and errors.
var (
	descDuration = prometheus.NewDesc("tangram_trace_span_duration_seconds", "Durations of the spans received, per service, operation and kind (computed at ingest).",
		[]string{"service", "operation", "kind"}, nil)
	descErrors = prometheus.NewDesc("tangram_trace_span_errors_total", "Spans received with an error status, per service, operation and kind.",
		[]string{"service", "operation", "kind"}, nil)
	promBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
)

var descForward = prometheus.NewDesc("tangram_trace_forward_requests_total", "Export requests forwarded, by endpoint and outcome (sent, failed after retries, dropped by a full queue).",
	[]string{"endpoint", "outcome"}, nil)

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, f := range (*Server)(m).Forwarded() {
		for outcome, n := range map[string]int64{"sent": f.Sent, "failed": f.Failed, "dropped": f.Dropped} {
			if c, err := prometheus.NewConstMetric(descForward, prometheus.CounterValue, float64(n), strings.ToValidUTF8(f.Endpoint, "?"), outcome); err == nil {
				ch <- c
			}
		}
	}
	type op struct {
		k  rollup.OpKey
		st rollup.Stats
	}
	var ops []op
	m.roll.Totals(func(k rollup.OpKey, st *rollup.Stats) { ops = append(ops, op{k, *st}) })
	for _, o := range ops {
		buckets := make(map[float64]uint64, len(promBuckets))
		for _, b := range promBuckets {
			buckets[b] = o.st.Hist.CountBelow(b * 1e9)
		}
		// Names come from senders: label values must be UTF-8.
		svc, name, kind := strings.ToValidUTF8(o.k.Service, "?"), strings.ToValidUTF8(o.k.Operation, "?"), kindNames[o.k.Kind]
		if h, err := prometheus.NewConstHistogram(descDuration, o.st.Calls, float64(o.st.SumNano)/1e9, buckets, svc, name, kind); err == nil {
			ch <- h
		}
		if c, err := prometheus.NewConstMetric(descErrors, prometheus.CounterValue, float64(o.st.Errors), svc, name, kind); err == nil {
			ch <- c
		}
	}
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(m.received.Load()))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(m.dropped.Load()))
	ch <- prometheus.MustNewConstMetric(descStored, prometheus.CounterValue, float64(m.stored.Load()))
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(m.failed.Load()))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(m.queued.Load()))
	ch <- prometheus.MustNewConstMetric(descSampled, prometheus.CounterValue, float64(m.sampledOut.Load()))
	ch <- prometheus.MustNewConstMetric(descPoints, prometheus.CounterValue, float64(m.metricsReceived.Load()))
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(m.metricsRefused.Load()))
	ch <- prometheus.MustNewConstMetric(descLogs, prometheus.CounterValue, float64(m.logsReceived.Load()))
	ch <- prometheus.MustNewConstMetric(descUntraced, prometheus.CounterValue, float64(m.logsUntraced.Load()))
	if m.series != nil {
		ch <- prometheus.MustNewConstMetric(descSeries, prometheus.GaugeValue, float64(m.series.Stats().Series))
	}
	if m.alerts != nil {
		ch <- prometheus.MustNewConstMetric(descFiring, prometheus.GaugeValue, float64((*Server)(m).Firing()))
	}
}

// Counts are the collector's counters.
type Counts struct{ Received, Dropped, Stored, Failed, Queued, SampledOut int64 }

// Counts returns the counters.
func (s *Server) Counts() Counts {
	return Counts{s.received.Load(), s.dropped.Load(), s.stored.Load(), s.failed.Load(), s.queued.Load(), s.sampledOut.Load()}
}
