// Package trace is the SDK side of Tangram's tracing, built on the
// OpenTelemetry Go API and SDK (no tracer of its own):
//
//   - New sets up a TracerProvider for a service — parent-based ratio
//     sampling, a bounded batch queue that drops rather than blocks, and
//     an OTLP/HTTP Exporter written with protowire (the SDK links no gRPC
//     and no generated OTLP code) — for Tangram's collector or any other;
//   - HTTPHandler and Transport trace HTTP servers and clients through
//     the W3C traceparent header (rpc.ServerTracing and the mq package do
//     the same for RPC and messages);
//   - NewLogHandler stamps trace and span IDs on log/slog records and can
//     record them as span events, so logs travel with their trace;
//   - the shapes the collector's query API answers with (TraceReply,
//     SearchReply, StatsReply).
//
// The collector itself is trace/server; its span store trace/store; the
// OTLP decoders trace/otlp.
package trace

// Span is a stored span as the query API returns it: IDs in hex, times in
// nanoseconds since the Unix epoch, attributes as JSON values.
type Span struct {
	TraceID       string         `json:"trace_id"`
	SpanID        string         `json:"span_id"`
	ParentID      string         `json:"parent_id,omitempty"`
	Service       string         `json:"service"`
	Name          string         `json:"name"`
	Kind          string         `json:"kind"`
	StartUnixNano uint64         `json:"start_unix_nano"`
	DurationNano  uint64         `json:"duration_nano"`
	Status        string         `json:"status"`
	StatusMessage string         `json:"status_message,omitempty"`
	Attributes    map[string]any `json:"attributes,omitempty"`
	Resource      map[string]any `json:"resource,omitempty"`
	Events        []Event        `json:"events,omitempty"`
	Links         []Link         `json:"links,omitempty"`
}

// Event is a span's timestamped note.
type Event struct {
	TimeUnixNano uint64         `json:"time_unix_nano"`
	Name         string         `json:"name"`
	Attributes   map[string]any `json:"attributes,omitempty"`
}

// Link points to another span.
type Link struct {
	TraceID    string         `json:"trace_id"`
	SpanID     string         `json:"span_id"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// TraceReply is GET /api/v1/trace/traces/{id}: the trace's spans by start.
type TraceReply struct {
	TraceID string `json:"trace_id"`
	Spans   []Span `json:"spans"`
	// Logs are the log records sent with the trace's context (OTLP
	// logs), by time.
	Logs []LogRecord `json:"logs,omitempty"`
}

// LogRecord is a log record kept with its trace: written under span
// SpanID (empty when under none) by service.
type LogRecord struct {
	TimeUnixNano uint64         `json:"time_unix_nano"`
	SpanID       string         `json:"span_id,omitempty"`
	Service      string         `json:"service"`
	Severity     string         `json:"severity,omitempty"`
	Body         string         `json:"body"`
	Attributes   map[string]any `json:"attributes,omitempty"`
}

// Match is one trace a search found, named by its first matching span.
type Match struct {
	TraceID       string `json:"trace_id"`
	Service       string `json:"service"`
	Name          string `json:"name"`
	StartUnixNano uint64 `json:"start_unix_nano"`
	DurationNano  uint64 `json:"duration_nano"`
	Status        string `json:"status"`
}

// SearchReply is GET /api/v1/trace/traces: matching traces, newest first.
type SearchReply struct {
	Traces []Match `json:"traces"`
}

// StatsReply is GET /api/v1/trace/stats.
type StatsReply struct {
	Received int64 `json:"received"`
	Dropped  int64 `json:"dropped"`
	Stored   int64 `json:"stored"`
	Failed   int64 `json:"failed"`
	Queued   int64 `json:"queued"`
	// SampledOut counts spans tail sampling left out.
	SampledOut int64 `json:"sampled_out"`
	Segments   int   `json:"segments"`
	Bytes      int64 `json:"bytes"`
	Spans      int   `json:"spans"`
}

// RED is a service's, an operation's or a dependency's figures over some
// minutes: calls, errors, their rate and ratio, and duration percentiles
// (milliseconds, read from a histogram whose buckets are 26 % wide).
type RED struct {
	Calls      uint64  `json:"calls"`
	Errors     uint64  `json:"errors"`
	PerSecond  float64 `json:"per_second"`
	ErrorRatio float64 `json:"error_ratio"`
	MeanMS     float64 `json:"mean_ms"`
	P50MS      float64 `json:"p50_ms"`
	P95MS      float64 `json:"p95_ms"`
	P99MS      float64 `json:"p99_ms"`
}

// ServiceRED is a service's figures: its entry spans (server and consumer
// spans, and roots).
type ServiceRED struct {
	Service string `json:"service"`
	RED
}

// OperationRED is an operation's figures.
type OperationRED struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	RED
}

// ServicesReply is GET /api/v1/trace/services.
type ServicesReply struct {
	Minutes  int          `json:"minutes"`
	Services []ServiceRED `json:"services"`
}

// OperationsReply is GET /api/v1/trace/services/{service}/operations.
type OperationsReply struct {
	Service    string         `json:"service"`
	Minutes    int            `json:"minutes"`
	Operations []OperationRED `json:"operations"`
}

// Point is one minute of a series.
type Point struct {
	Time string `json:"time"` // RFC 3339, the minute's start
	RED
}

// SeriesReply is GET /api/v1/trace/series: minute by minute, oldest first.
type SeriesReply struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation,omitempty"`
	Points    []Point `json:"points"`
}

// Edge is a dependency: From's spans calling To's (the callee's figures).
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	RED
}

// DependenciesReply is GET /api/v1/trace/dependencies: the service map,
// kept up to date as spans arrive.
type DependenciesReply struct {
	Minutes  int          `json:"minutes"`
	Services []ServiceRED `json:"services"`
	Edges    []Edge       `json:"edges"`
}

// AlertMetric is what an alert rule watches.
type AlertMetric string

// The alert metrics.
const (
	ErrorRatio  AlertMetric = "error_ratio"   // errors ÷ calls, 0 to 1
	P50         AlertMetric = "p50_ms"        // latency percentiles, milliseconds
	P95         AlertMetric = "p95_ms"        //
	P99         AlertMetric = "p99_ms"        //
	CallsPerMin AlertMetric = "calls_per_min" // throughput
	// BurnRate is how fast the error budget of Objective is spent: the
	// error ratio over 1 − Objective, over the window and over the short
	// window (a twelfth of it by default); the rule fires when both are at
	// least Threshold — the multi-window burn rate of Google's SRE
	// workbook (14.4 over 1 h and 5 min spends 2 % of a 30-day budget in
	// an hour).
	BurnRate AlertMetric = "burn_rate"
)

// AlertRule is one alert rule of the collector.
type AlertRule struct {
	Name      string      `json:"name"`
	Service   string      `json:"service"`
	Operation string      `json:"operation,omitempty"` // empty: the service's entry spans
	Metric    AlertMetric `json:"metric"`
	// Threshold: the rule fires when the metric is at least this (below
	// it, with Below: a throughput that drops).
	Threshold float64 `json:"threshold"`
	Below     bool    `json:"below,omitempty"`
	// Window is how many minutes the metric is computed over (default 5;
	// at most the collector's window, 60).
	Window int `json:"window_minutes,omitempty"`
	// Objective (burn_rate only): the share of calls that should succeed,
	// e.g. 0.999. ShortWindow: its second window (default Window/12, at
	// least 1).
	Objective   float64 `json:"objective,omitempty"`
	ShortWindow int     `json:"short_window_minutes,omitempty"`
	// MinCalls: below this many calls in the window the rule stays quiet
	// (default 1; an idle service has no error ratio).
	MinCalls int `json:"min_calls,omitempty"`
	// Where notifications go: an http(s) webhook (a POST of JSON) and
	// e-mails.
	Webhook string   `json:"webhook,omitempty"`
	Emails  []string `json:"emails,omitempty"`
}

// Alert is a rule with its state: "ok", "firing", or "silenced" (firing
// or not, notifications held until SilencedUntil).
type Alert struct {
	Rule   AlertRule `json:"rule"`
	Status string    `json:"status"`
	// Value is the metric at the last evaluation (the long window's burn
	// rate; Short the short window's), over Calls calls.
	Value float64 `json:"value"`
	Short float64 `json:"short,omitempty"`
	Calls uint64  `json:"calls"`
	// Firing since (RFC 3339), when it is.
	Since         string `json:"since,omitempty"`
	SilencedUntil string `json:"silenced_until,omitempty"`
	// AckedBy: who acknowledged the firing alert (no more reminders until
	// it resolves).
	AckedBy string `json:"acked_by,omitempty"`
}

// AlertsReply is GET /api/v1/trace/alerts.
type AlertsReply struct {
	Alerts []Alert `json:"alerts"`
}

// SilenceRequest is POST /api/v1/trace/alerts/{name}/silence.
type SilenceRequest struct {
	For string `json:"for"` // a Go duration: 30m, 2h
}

// MetricName is a metric series name the collector keeps, with its kind
// (gauge: the minute's last value; counter: the minute's increase) and
// how many series (label sets) have it.
type MetricName struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Series int    `json:"series"`
}

// MetricsReply lists the metric names and the series store's counters.
type MetricsReply struct {
	Names []MetricName `json:"names"`
	// Series kept, data points received and refused (without a value,
	// beyond the series bound, outside the window).
	Series  int   `json:"series"`
	Points  int64 `json:"points"`
	Refused int64 `json:"refused"`
	Minutes int   `json:"minutes"`
}

// MetricSeries is one series' values minute by minute (a minute with no
// value is absent).
type MetricSeries struct {
	Labels map[string]string `json:"labels"`
	Kind   string            `json:"kind"`
	Points []MetricPoint     `json:"points"`
}

// MetricPoint is a minute's value (time in RFC 3339: the minute's start).
type MetricPoint struct {
	Time  string  `json:"time"`
	Value float64 `json:"value"`
}

// MetricSeriesReply is the series of one name matching the labels asked.
type MetricSeriesReply struct {
	Name    string         `json:"name"`
	Minutes int            `json:"minutes"`
	Series  []MetricSeries `json:"series"`
}
