package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/trace"
)

func (g *globals) traceAdmin() *trace.Admin { return trace.NewAdmin(g.server, g.token) }

func num(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

func ms(nanos uint64) string { return fmt.Sprintf("%.2fms", float64(nanos)/1e6) }

func redCols(r trace.RED) []any {
	return []any{r.Calls, fmt.Sprintf("%.2f", r.PerSecond), fmt.Sprintf("%.1f%%", 100*r.ErrorRatio),
		fmt.Sprintf("%.2f", r.P50MS), fmt.Sprintf("%.2f", r.P95MS), fmt.Sprintf("%.2f", r.P99MS)}
}

var redHead = []any{"CALLS", "PER_SEC", "ERRORS", "P50_MS", "P95_MS", "P99_MS"}

func newTraceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "trace", Short: "Traces: look one up, search, RED figures per service and operation, the dependency map"}

	get := &cobra.Command{Use: "get TRACE_ID", Short: "Show a trace's spans as a tree, by start time", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		tr, err := g.traceAdmin().Trace(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return g.Print(tr, func(w *tabwriter.Writer) {
			row(w, "SPAN", "SERVICE", "OPERATION", "KIND", "START", "DURATION", "STATUS")
			depth := map[string]int{}
			var t0 uint64
			if len(tr.Spans) > 0 {
				t0 = tr.Spans[0].StartUnixNano
			}
			for _, s := range tr.Spans {
				d := 0
				if p, ok := depth[s.ParentID]; ok {
					d = p + 1
				}
				depth[s.SpanID] = d
				status := s.Status
				if s.StatusMessage != "" {
					status += ": " + s.StatusMessage
				}
				row(w, s.SpanID, s.Service, strings.Repeat("  ", d)+s.Name, s.Kind, "+"+ms(s.StartUnixNano-t0), ms(s.DurationNano), status)
			}
			// Log records sent with the trace, under the span they were
			// written in.
			for _, l := range tr.Logs {
				span, d := l.SpanID, 0
				if span == "" {
					span = "-"
				} else if p, ok := depth[span]; ok {
					d = p + 1
				}
				row(w, span, l.Service, strings.Repeat("  ", d)+"log: "+l.Body, "log", "+"+ms(l.TimeUnixNano-min(l.TimeUnixNano, t0)), "", l.Severity)
			}
		})
	}}

	var q trace.Query
	var attrs []string
	var since time.Duration
	search := &cobra.Command{Use: "search", Short: "Find traces: by service, operation, duration, errors, attributes, time", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		for _, a := range attrs {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return fmt.Errorf("--attr %q: want key=value", a)
			}
			if q.Attrs == nil {
				q.Attrs = map[string]string{}
			}
			q.Attrs[k] = v
		}
		if since > 0 {
			q.Start = time.Now().Add(-since)
		}
		out, err := g.traceAdmin().Search(cmd.Context(), q)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "TRACE", "SERVICE", "OPERATION", "START", "DURATION", "STATUS")
			for _, m := range out.Traces {
				row(w, m.TraceID, m.Service, m.Name, time.Unix(0, int64(m.StartUnixNano)).Format(time.RFC3339Nano), ms(m.DurationNano), m.Status)
			}
		})
	}}
	search.Flags().StringVar(&q.Service, "service", "", "the span's service")
	search.Flags().StringVar(&q.Operation, "operation", "", "the span's name")
	search.Flags().DurationVar(&q.MinDuration, "min-duration", 0, "at least this long")
	search.Flags().DurationVar(&q.MaxDuration, "max-duration", 0, "at most this long")
	search.Flags().BoolVar(&q.ErrorsOnly, "errors", false, "only spans with an error status")
	search.Flags().StringSliceVar(&attrs, "attr", nil, "key=value (repeatable)")
	search.Flags().DurationVar(&since, "since", 0, "started within this long ago")
	search.Flags().IntVar(&q.Limit, "limit", 20, "traces (at most 1000)")

	var minutes int
	services := &cobra.Command{Use: "services", Short: "Each service's rate, errors and latency percentiles (its entry spans)", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		out, err := g.traceAdmin().Services(cmd.Context(), minutes)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, append([]any{"SERVICE"}, redHead...)...)
			for _, s := range out.Services {
				row(w, append([]any{s.Service}, redCols(s.RED)...)...)
			}
		})
	}}
	services.Flags().IntVar(&minutes, "minutes", 15, "over the last minutes")

	var opMinutes int
	ops := &cobra.Command{Use: "operations SERVICE", Short: "A service's operations, busiest first", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		out, err := g.traceAdmin().Operations(cmd.Context(), args[0], opMinutes)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, append([]any{"OPERATION", "KIND"}, redHead...)...)
			for _, o := range out.Operations {
				row(w, append([]any{o.Name, o.Kind}, redCols(o.RED)...)...)
			}
		})
	}}
	ops.Flags().IntVar(&opMinutes, "minutes", 15, "over the last minutes")

	var depMinutes int
	var depWait time.Duration
	deps := &cobra.Command{Use: "deps", Short: "The service dependency map: who calls whom, with the callee's figures", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		var out trace.DependenciesReply
		var err error
		// --wait: spans reach the collector in batches, a moment after
		// the calls; a script that has just made some waits for the map.
		for until := time.Now().Add(depWait); ; {
			out, err = g.traceAdmin().Dependencies(cmd.Context(), depMinutes)
			if err != nil || len(out.Edges) > 0 || !time.Now().Before(until) {
				break
			}
			select {
			case <-cmd.Context().Done():
				return cmd.Context().Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, append([]any{"FROM", "TO"}, redHead...)...)
			for _, e := range out.Edges {
				row(w, append([]any{e.From, e.To}, redCols(e.RED)...)...)
			}
		})
	}}
	deps.Flags().IntVar(&depMinutes, "minutes", 15, "over the last minutes")
	deps.Flags().DurationVar(&depWait, "wait", 0, "wait up to this long for a first edge")

	stats := &cobra.Command{Use: "stats", Short: "The collector's counters (received, dropped, stored) and the store's size", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		st, err := g.traceAdmin().Stats(cmd.Context())
		if err != nil {
			return err
		}
		return g.Print(st, func(w *tabwriter.Writer) {
			row(w, "RECEIVED", "DROPPED", "STORED", "FAILED", "QUEUED", "SEGMENTS", "BYTES", "SPANS")
			row(w, st.Received, st.Dropped, st.Stored, st.Failed, st.Queued, st.Segments, st.Bytes, st.Spans)
		})
	}}
	var match []string
	var metricMinutes int
	metrics := &cobra.Command{Use: "metrics [NAME]", Short: "Metrics received over OTLP (and the servers' own): the names, or one name's series", Args: cobra.MaximumNArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			out, err := g.traceAdmin().Metrics(cmd.Context())
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				row(w, "NAME", "KIND", "SERIES")
				for _, n := range out.Names {
					row(w, n.Name, n.Kind, n.Series)
				}
			})
		}
		want := map[string]string{}
		for _, m := range match {
			k, v, ok := strings.Cut(m, "=")
			if !ok || k == "" {
				return fmt.Errorf("--match %q: want label=value", m)
			}
			want[k] = v
		}
		out, err := g.traceAdmin().MetricSeries(cmd.Context(), args[0], want, metricMinutes)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			// A counter's minute is its increase, a gauge's its value: the
			// total and the peak over the window say what each is worth.
			row(w, "LABELS", "KIND", "MINUTES", "LAST", "TOTAL", "MAX")
			for _, s := range out.Series {
				var labels []string
				for k, v := range s.Labels {
					labels = append(labels, k+"="+v)
				}
				slices.Sort(labels)
				var last, total, peak float64
				for i, p := range s.Points {
					last, total = p.Value, total+p.Value
					if i == 0 || p.Value > peak {
						peak = p.Value
					}
				}
				row(w, strings.Join(labels, ","), s.Kind, len(s.Points), num(last), num(total), num(peak))
			}
		})
	}}
	metrics.Flags().StringSliceVar(&match, "match", nil, "label=value the series must have (repeatable)")
	metrics.Flags().IntVar(&metricMinutes, "minutes", 60, "over the last minutes")
	cmd.AddCommand(get, search, services, ops, deps, stats, metrics, newTraceAlertCmd(g))
	return cmd
}

// newTraceAlertCmd: `tangram trace alert list|set|rm|silence|ack`.
func newTraceAlertCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "alert", Short: "Alert rules on the figures: error ratio, latency percentiles, throughput, burn rate"}
	list := &cobra.Command{Use: "list", Short: "Rules with their state (ok, firing, silenced)", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		out, err := g.traceAdmin().Alerts(cmd.Context())
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "NAME", "SERVICE", "OPERATION", "METRIC", "THRESHOLD", "WINDOW", "STATUS", "VALUE", "CALLS", "SINCE", "ACKED_BY")
			for _, a := range out.Alerts {
				r := a.Rule
				cmp := ">="
				if r.Below {
					cmp = "<"
				}
				window := r.Window
				if window == 0 {
					window = 5
				}
				row(w, r.Name, r.Service, r.Operation, r.Metric, cmp+strconv.FormatFloat(r.Threshold, 'g', -1, 64), strconv.Itoa(window)+"m",
					a.Status, strconv.FormatFloat(a.Value, 'g', 4, 64), a.Calls, a.Since, a.AckedBy)
			}
		})
	}}
	var r trace.AlertRule
	var metric string
	set := &cobra.Command{Use: "set NAME --service S --metric M --threshold X", Short: "Create or replace a rule",
		Long: `Create or replace an alert rule. Metrics: error_ratio (0 to 1), p50_ms, p95_ms, p99_ms,
calls_per_min (with --below: fire when throughput drops under the threshold), and burn_rate
(with --objective 0.999: fire when the error budget burns at least --threshold times too fast over
--window and over --short-window, e.g. 14.4 over 60 and 5 minutes). Notifications go to --webhook
(a JSON POST) and --email when the rule starts firing, every hour while it fires unacknowledged,
and when it resolves.`,
		Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			r.Name, r.Metric = args[0], trace.AlertMetric(metric)
			out, err := g.traceAdmin().SetAlert(cmd.Context(), r)
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) { row(w, "SET", out.Name) })
		}}
	f := set.Flags()
	f.StringVar(&r.Service, "service", "", "the service")
	f.StringVar(&r.Operation, "operation", "", "one of its operations (default: the service's entry spans)")
	f.StringVar(&metric, "metric", "", "error_ratio, p50_ms, p95_ms, p99_ms, calls_per_min or burn_rate")
	f.Float64Var(&r.Threshold, "threshold", 0, "fire at or above this (below, with --below)")
	f.BoolVar(&r.Below, "below", false, "fire below the threshold (throughput drops)")
	f.IntVar(&r.Window, "window", 5, "minutes the metric is computed over")
	f.Float64Var(&r.Objective, "objective", 0, "burn_rate: the share of calls that should succeed (0.999)")
	f.IntVar(&r.ShortWindow, "short-window", 0, "burn_rate: the second window in minutes (default window/12)")
	f.IntVar(&r.MinCalls, "min-calls", 0, "stay quiet below this many calls in the window (default 1)")
	f.StringVar(&r.Webhook, "webhook", "", "POST a JSON notification here")
	f.StringSliceVar(&r.Emails, "email", nil, "e-mail notifications (the server's SMTP)")
	rm := &cobra.Command{Use: "rm NAME", Short: "Delete a rule", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		return g.traceAdmin().DeleteAlert(cmd.Context(), args[0])
	}}
	var silenceFor time.Duration
	silence := &cobra.Command{Use: "silence NAME --for 1h", Short: "Hold a rule's notifications for a while (--for 0 lifts it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.traceAdmin().Silence(cmd.Context(), args[0], silenceFor)
		}}
	silence.Flags().DurationVar(&silenceFor, "for", time.Hour, "how long")
	ack := &cobra.Command{Use: "ack NAME", Short: "Acknowledge a firing alert: no reminders until it resolves", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.traceAdmin().Ack(cmd.Context(), args[0])
		}}
	cmd.AddCommand(list, set, rm, silence, ack)
	return cmd
}
