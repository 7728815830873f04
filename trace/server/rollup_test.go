package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/rollup"
)

// sendCheckouts sends, through the SDK, 10 checkouts of web calling
// orders (a server span, a client span, orders' server span each); 3 of
// orders' spans are errors.
func sendCheckouts(t *testing.T, ep string) {
	t.Helper()
	web, err := trace.New(trace.Config{Service: "web", Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	orders, err := trace.New(trace.Config{Service: "orders", Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		ctx, root := web.Tracer("t").Start(context.Background(), "GET /checkout", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
		ctx, call := web.Tracer("t").Start(ctx, "orders.Create", oteltrace.WithSpanKind(oteltrace.SpanKindClient))
		_, srv := orders.Tracer("t").Start(ctx, "orders.Create", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
		if i < 3 {
			srv.SetStatus(codes.Error, "out of stock")
		}
		srv.End()
		call.End()
		root.End()
	}
	// The callee's spans reach the collector first or last: both orders work.
	if err := orders.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := web.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestREDAndDependencies: two services' spans, sent by the SDK over
// OTLP, give each service's figures, its operations, a minute series and
// the edge between them — computed as the spans arrived.
func TestREDAndDependencies(t *testing.T) {
	s, api := collector(t, Config{})
	sendCheckouts(t, "http://"+s.OTLPAddr()+"/v1/traces")
	wait.For(t, 10*time.Second, "30 spans stored", func() bool { return s.Counts().Stored == 30 })

	var svcs trace.ServicesReply
	if code := get(t, api+"/api/v1/trace/services", &svcs); code != 200 || len(svcs.Services) != 2 || svcs.Minutes != 15 {
		t.Fatalf("services: %d %+v", code, svcs)
	}
	byName := map[string]trace.ServiceRED{}
	for _, sv := range svcs.Services {
		byName[sv.Service] = sv
	}
	if o := byName["orders"]; o.Calls != 10 || o.Errors != 3 || o.ErrorRatio != 0.3 || o.P99MS <= 0 {
		t.Errorf("orders: %+v", o)
	}
	if w := byName["web"]; w.Calls != 10 || w.Errors != 0 {
		t.Errorf("web (entry spans only): %+v", w)
	}
	var ops trace.OperationsReply
	if code := get(t, api+"/api/v1/trace/services/web/operations?minutes=5", &ops); code != 200 || len(ops.Operations) != 2 || ops.Minutes != 5 {
		t.Fatalf("operations: %d %+v", code, ops)
	}
	var series trace.SeriesReply
	if code := get(t, api+"/api/v1/trace/series?service=orders&minutes=3", &series); code != 200 || len(series.Points) != 3 {
		t.Fatalf("series: %d %+v", code, series)
	}
	if last := series.Points[2]; last.Calls+series.Points[1].Calls != 10 {
		t.Errorf("the last minutes of orders: %+v", series.Points)
	}
	var deps trace.DependenciesReply
	if code := get(t, api+"/api/v1/trace/dependencies", &deps); code != 200 || len(deps.Edges) != 1 {
		t.Fatalf("dependencies: %d %+v", code, deps)
	}
	if e := deps.Edges[0]; e.From != "web" || e.To != "orders" || e.Calls != 10 || e.Errors != 3 {
		t.Errorf("edge %+v", e)
	}
	for _, bad := range []string{"/services?minutes=0", "/services?minutes=61", "/series", "/dependencies?minutes=x"} {
		if code := get(t, api+"/api/v1/trace"+bad, nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	// The same figures in Prometheus's form.
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "tangram_trace_span_duration_seconds" {
			continue
		}
		for _, m := range mf.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service"] == "orders" && labels["kind"] == "server" && m.Histogram.GetSampleCount() == 10 {
				found = true
			}
		}
	}
	if !found {
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Errorf("no orders server histogram of 10 spans among %s", strings.Join(names, ", "))
	}
}

// TestRollupReplayedAfterRestart: a collector restarted on its data shows
// the figures and the service map of the spans it stored before, at once;
// its totals since the start (Prometheus counters) begin again at zero.
func TestRollupReplayedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	first, _ := collector(t, Config{Dir: dir})
	sendCheckouts(t, "http://"+first.OTLPAddr()+"/v1/traces")
	wait.For(t, 10*time.Second, "30 spans stored", func() bool { return first.Counts().Stored == 30 })
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	s, api := collector(t, Config{Dir: dir})
	var svcs trace.ServicesReply
	if code := get(t, api+"/api/v1/trace/services", &svcs); code != 200 || len(svcs.Services) != 2 {
		t.Fatalf("services after the restart: %d %+v", code, svcs)
	}
	for _, sv := range svcs.Services {
		if sv.Service == "orders" && (sv.Calls != 10 || sv.Errors != 3) {
			t.Errorf("orders after the restart: %+v", sv)
		}
	}
	var deps trace.DependenciesReply
	if code := get(t, api+"/api/v1/trace/dependencies", &deps); code != 200 || len(deps.Edges) != 1 || deps.Edges[0].Calls != 10 {
		t.Fatalf("dependencies after the restart: %d %+v", code, deps)
	}
	var total uint64
	s.Rollup().Totals(func(_ rollup.OpKey, st *rollup.Stats) { total += st.Calls })
	if total != 0 {
		t.Fatalf("totals since the restart count %d replayed calls, want 0", total)
	}
}
