package main

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace"
)

// TestCollectorAndTraceCommands: `tangram collector` runs the collector
// alone; spans exported to it are seen through `tangram trace` — the map,
// the services, a search, one trace as a tree, the counters.
func TestCollectorAndTraceCommands(t *testing.T) {
	const token = "tgm_collector-test-token-0123456789abc"
	t.Setenv("TANGRAM_BOOTSTRAP_TOKEN", token)
	httpAddr, otlpAddr := port.Free(t), port.Free(t)
	for httpAddr == otlpAddr { // a port closed can come straight back
		otlpAddr = port.Free(t)
	}
	runInBackground(t, "the collector", "collector", "--http", httpAddr, "--otlp-http", otlpAddr, "--otlp-grpc", "off", "--trace-endpoint", "off", "--data", t.TempDir(), "--log-level", "error")
	wait.For(t, 20*time.Second, "the collector to answer", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	var id oteltrace.TraceID
	for _, svc := range []string{"shop", "stock"} {
		p, err := trace.New(trace.Config{Service: svc, Endpoint: "http://" + otlpAddr + "/v1/traces"})
		if err != nil {
			t.Fatal(err)
		}
		if svc == "shop" {
			_, sp := p.Tracer("t").Start(context.Background(), "GET /buy", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
			id = sp.SpanContext().TraceID()
			sp.End()
		} else {
			parent := oteltrace.ContextWithRemoteSpanContext(context.Background(), oteltrace.NewSpanContext(oteltrace.SpanContextConfig{
				TraceID: id, SpanID: oteltrace.SpanID{1}, TraceFlags: oteltrace.FlagsSampled}))
			_, sp := p.Tracer("t").Start(parent, "stock.Reserve", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
			sp.End()
		}
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--server", httpAddr, "--token", token}, args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("tangram %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	wait.For(t, 10*time.Second, "both spans stored", func() bool { return strings.Contains(run("trace", "stats", "-o", "json"), `"stored": 2`) })
	if out := run("trace", "services"); !strings.Contains(out, "shop") || !strings.Contains(out, "stock") {
		t.Errorf("trace services:\n%s", out)
	}
	if out := run("trace", "search", "--service", "stock"); !strings.Contains(out, id.String()) {
		t.Errorf("trace search:\n%s", out)
	}
	if out := run("trace", "get", id.String()); !strings.Contains(out, "GET /buy") || !strings.Contains(out, "stock.Reserve") {
		t.Errorf("trace get:\n%s", out)
	}
	if out := run("trace", "operations", "stock"); !strings.Contains(out, "stock.Reserve") {
		t.Errorf("trace operations:\n%s", out)
	}
	// A log record and a gauge over OTLP/HTTP JSON, as any SDK sends them.
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	postJSON := func(path, doc string) {
		t.Helper()
		resp, err := http.Post("http://"+otlpAddr+path, "application/json", strings.NewReader(doc))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	postJSON("/v1/logs", `{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"stock"}}]},"scopeLogs":[{"logRecords":[
{"timeUnixNano":"`+now+`","severityNumber":13,"body":{"stringValue":"low on widgets"},"traceId":"`+id.String()+`"}]}]}]}`)
	postJSON("/v1/metrics", `{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"stock"}}]},"scopeMetrics":[{"metrics":[
{"name":"widgets_left","gauge":{"dataPoints":[{"timeUnixNano":"`+now+`","asInt":"7","attributes":[{"key":"shelf","value":{"stringValue":"a"}}]}]}}]}]}]}`)
	wait.For(t, 10*time.Second, "the log with the trace", func() bool {
		return strings.Contains(run("trace", "get", id.String()), "log: low on widgets")
	})
	if out := run("trace", "metrics"); !strings.Contains(out, "widgets_left") {
		t.Errorf("trace metrics:\n%s", out)
	}
	out := run("trace", "metrics", "widgets_left", "--match", "shelf=a")
	if !strings.Contains(out, "service=stock,shelf=a") && !strings.Contains(out, "shelf=a,service=stock") || !strings.Contains(out, "gauge") || !strings.Contains(out, " 7 ") {
		t.Errorf("trace metrics widgets_left:\n%s", out)
	}
	if out := run("trace", "metrics", "widgets_left", "--match", "shelf=b", "-o", "json"); strings.Contains(out, "shelf") {
		t.Errorf("--match shelf=b matched:\n%s", out)
	}
	run("trace", "alert", "set", "stock-burn", "--service", "stock", "--metric", "burn_rate", "--objective", "0.999", "--threshold", "14.4", "--window", "60")
	if out := run("trace", "alert", "list"); !strings.Contains(out, "stock-burn") || !strings.Contains(out, "burn_rate") || !strings.Contains(out, ">=14.4") {
		t.Errorf("trace alert list:\n%s", out)
	}
	run("trace", "alert", "silence", "stock-burn", "--for", "2h")
	if out := run("trace", "alert", "list", "-o", "json"); !strings.Contains(out, `"status": "silenced"`) {
		t.Errorf("a silenced rule:\n%s", out)
	}
	run("trace", "alert", "rm", "stock-burn")
	if out := run("trace", "alert", "list", "-o", "json"); strings.Contains(out, "stock-burn") {
		t.Errorf("a deleted rule is listed:\n%s", out)
	}
}
