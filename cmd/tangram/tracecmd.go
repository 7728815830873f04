package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/trace"
)

func (g *globals) traceAdmin() *trace.Admin { return trace.NewAdmin(g.server, g.token) }

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
	cmd.AddCommand(get, search, services, ops, deps, stats)
	return cmd
}
