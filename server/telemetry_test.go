package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace"
)

func withMetricsEvery(d time.Duration) servertest.Option {
	return func(c *server.Config) { c.MetricsEvery = d }
}

// seriesTotal is the sum of every point of the matching series.
func seriesTotal(t *testing.T, a *trace.Admin, name string, match map[string]string) (total float64, n int) {
	t.Helper()
	r, err := a.MetricSeries(context.Background(), name, match, 10)
	if err != nil {
		t.Fatalf("series %s: %v", name, err)
	}
	for _, s := range r.Series {
		for _, p := range s.Points {
			total += p.Value
		}
	}
	return total, len(r.Series)
}

// TestServerSamplesItsMetrics: the server's own metrics reach its
// collector's series store: a counter's increase and a runtime gauge, from
// the server's own node.
func TestServerSamplesItsMetrics(t *testing.T) {
	h := servertest.Start(t, withMetricsEvery(50*time.Millisecond), servertest.WithNodeName("node-m"))
	a := trace.NewAdmin(h.URL, h.Token)
	for range 5 {
		resp, err := http.Get(h.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	wait.For(t, 10*time.Second, "the goroutine gauge of node-m", func() bool {
		v, n := seriesTotal(t, a, "go_goroutines", map[string]string{"service": "tangram-server", "instance": "node-m"})
		return n == 1 && v > 0
	})
	// Five health checks at least, counted as increases since the start.
	wait.For(t, 10*time.Second, "the HTTP requests counted", func() bool {
		v, _ := seriesTotal(t, a, "tangram_http_requests_total", map[string]string{"instance": "node-m"})
		return v >= 5
	})
	// The collector's own per-span figures are not sampled back into it.
	r, err := a.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.Names {
		if strings.HasPrefix(m.Name, "tangram_trace_span_") {
			t.Errorf("sampled %s", m.Name)
		}
	}
}

// TestServerSendsMetricsToItsEndpoint: with a trace endpoint, the
// metrics go to that collector's /v1/metrics instead — with the trace
// token, to a collector that asks for one.
func TestServerSendsMetricsToItsEndpoint(t *testing.T) {
	central := servertest.Start(t, withMetricsEvery(-1), servertest.WithNodeName("central"), servertest.WithComponents("trace"),
		func(c *server.Config) { c.OTLPAuth = "on" })
	ep := "http://" + central.Srv.OTLPAddr() + "/v1/traces"
	servertest.Start(t, withMetricsEvery(50*time.Millisecond), servertest.WithNodeName("node-r"), servertest.WithComponents("config"),
		func(c *server.Config) { c.TraceEndpoint, c.TraceToken = ep, central.Token })
	a := trace.NewAdmin(central.URL, central.Token)
	wait.For(t, 10*time.Second, "node-r's goroutines at the central collector", func() bool {
		v, n := seriesTotal(t, a, "go_goroutines", map[string]string{"instance": "node-r"})
		return n == 1 && v > 0
	})
	if _, n := seriesTotal(t, a, "go_goroutines", map[string]string{"instance": "central"}); n != 0 {
		t.Errorf("the central server sampled itself with sampling off")
	}
}
