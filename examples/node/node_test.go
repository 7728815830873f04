// Package node holds a Node.js service instrumented with the
// OpenTelemetry JS SDK (shop.mjs) and runs it against a real server:
// traces, metrics and logs from a non-Go SDK reach the collector.
package node

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace"
)

// TestNodeOTelSDK: the OpenTelemetry JS SDK's OTLP/HTTP exporters send
// one order's trace (a server span, a failed client span under it), a log
// record written under the client span, and a counter and a histogram;
// the collector answers the trace with its log in place and the metrics
// as series.
func TestNodeOTelSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("the Node.js example's test needs node and npm: run scripts/services.sh (apt-get install nodejs npm)")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("the Node.js example's test needs npm: run scripts/services.sh (apt-get install npm)")
	}
	// The SDK's packages, as package-lock.json pins them (npm's cache
	// makes a second install quick).
	install := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, node, "shop.mjs")
	run.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+h.Srv.OTLPAddr())
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("node shop.mjs: %v\n%s", err, out)
	}
	id, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "trace ")
	if !ok || len(id) != 32 {
		t.Fatalf("node shop.mjs printed %q, want trace <id>", out)
	}
	admin := trace.NewAdmin(h.URL, h.Token)
	var tr trace.TraceReply
	wait.For(t, 15*time.Second, "the node trace with its log", func() bool {
		var err error
		tr, err = admin.Trace(ctx, id)
		return err == nil && len(tr.Spans) == 2 && len(tr.Logs) == 1
	})
	spans := map[string]trace.Span{}
	for _, s := range tr.Spans {
		spans[s.Name] = s
	}
	srv, call := spans["POST /orders"], spans["stock.Reserve"]
	if srv.Service != "node-shop" || srv.Kind != "server" || srv.ParentID != "" {
		t.Errorf("server span %+v", srv)
	}
	if call.ParentID != srv.SpanID || call.Kind != "client" || call.Status != "error" || call.StatusMessage != "out of stock" {
		t.Errorf("client span %+v (server span %s)", call, srv.SpanID)
	}
	if l := tr.Logs[0]; l.SpanID != call.SpanID || l.Body != "stock low for sku 42" || l.Severity != "WARN" || l.Service != "node-shop" || l.Attributes["sku"] != "42" {
		t.Errorf("log record %+v, want under the client span %s", l, call.SpanID)
	}
	// The counter's first cumulative point starts within the minute: all
	// of it counts; the histogram arrives as Prometheus-style buckets.
	wait.For(t, 15*time.Second, "the node metrics", func() bool {
		r, err := admin.MetricSeries(ctx, "shop_orders", map[string]string{"service": "node-shop", "channel": "web"}, 5)
		if err != nil || len(r.Series) != 1 {
			return false
		}
		total := 0.0
		for _, p := range r.Series[0].Points {
			total += p.Value
		}
		return r.Series[0].Kind == "counter" && total == 3 && r.Series[0].Labels["instance"] == "node-1"
	})
	r, err := admin.MetricSeries(ctx, "shop_order_amount_count", map[string]string{"service": "node-shop"}, 5)
	if err != nil || len(r.Series) != 1 || len(r.Series[0].Points) == 0 || r.Series[0].Points[len(r.Series[0].Points)-1].Value != 3 {
		t.Errorf("histogram count: %+v %v", r, err)
	}
}
