package console_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace/otlp"
)

// componentMetrics is ten minutes of a server's metrics as its sampler
// sends them: cumulative counters rising unevenly, gauges moving.
func componentMetrics(now time.Time) []*metricspb.ResourceMetrics {
	at := func(k int) uint64 { // k minutes ago, a second into the minute
		if k == 0 {
			return uint64(now.UnixNano())
		}
		return uint64(now.Truncate(time.Minute).Add(-time.Duration(k)*time.Minute + time.Second).UnixNano())
	}
	start := uint64(now.Add(-12 * time.Minute).UnixNano())
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	counter := func(name string, step func(k int) float64, attrs ...*commonpb.KeyValue) *metricspb.Metric {
		sum := &metricspb.Sum{IsMonotonic: true, AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}
		total := 0.0
		for k := 10; k >= 0; k-- {
			total += step(k)
			sum.DataPoints = append(sum.DataPoints, &metricspb.NumberDataPoint{Attributes: attrs, StartTimeUnixNano: start, TimeUnixNano: at(k),
				Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: total}})
		}
		return &metricspb.Metric{Name: name, Data: &metricspb.Metric_Sum{Sum: sum}}
	}
	gauge := func(name string, v func(k int) float64, attrs ...*commonpb.KeyValue) *metricspb.Metric {
		g := &metricspb.Gauge{}
		for k := 10; k >= 0; k-- {
			g.DataPoints = append(g.DataPoints, &metricspb.NumberDataPoint{Attributes: attrs, TimeUnixNano: at(k),
				Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v(k)}})
		}
		return &metricspb.Metric{Name: name, Data: &metricspb.Metric_Gauge{Gauge: g}}
	}
	wave := func(k int) float64 { return float64(10 + (k*7)%13) }
	return []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "tangram-server"), str("service.instance.id", "n1")}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
			counter("tangram_mq_messages_in_total", wave, str("broker", "b1")),
			counter("tangram_mq_messages_out_total", func(k int) float64 { return wave(k) / 2 }, str("broker", "b1")),
			counter("tangram_mq_group_consumed_total", wave, str("broker", "b1"), str("group", "billing")),
			gauge("tangram_mq_group_lag", wave, str("broker", "b1"), str("group", "billing")),
			counter("tangram_job_runs_finished_total", wave, str("status", "succeeded")),
			counter("tangram_job_runs_finished_total", func(k int) float64 { return float64(k % 3) }, str("status", "failed")),
			gauge("tangram_registry_instances", wave),
			gauge("tangram_registry_renewals", wave),
			gauge("tangram_config_watchers", wave),
			counter("tangram_config_fetches_total", wave),
		}}},
	}}
}

// TestComponentChartsBrowser: the MQ, job, registry and config pages
// chart their component's metrics from the collector's series store, and
// headless Chromium shows the lines drawing data.
func TestComponentChartsBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	h := servertest.Start(t, func(c *server.Config) { c.MetricsEvery = -1 })
	body, err := otlp.AppendMetricsRequest(nil, componentMetrics(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+h.Srv.OTLPAddr()+"/v1/metrics", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("metrics export: %s", resp.Status)
	}

	b := newTab(t)
	b.signIn(h.URL, "/mq", h.Token)
	for _, p := range []struct {
		path   string
		charts int    // charts with data on the page
		first  string // the first chart's title
		lines  int    // lines in it
	}{
		{"/mq", 1, "Messages per minute", 2},
		{"/mq/groups/billing", 2, "Messages consumed per minute", 1},
		{"/jobs", 1, "Runs finished per minute", 2},
		{"/registry", 2, "Instances", 1},
		{"/config", 2, "Watchers", 1},
	} {
		b.step(p.path, chromedp.Navigate(h.URL+p.path), chromedp.WaitVisible(chromedp.CSS(".chart-svg")))
		if n := b.eval(`document.querySelectorAll(".chart-svg").length`); int(n) != p.charts {
			t.Errorf("%s: %v charts, want %d", p.path, n, p.charts)
		}
		title, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector(".chart-svg").getAttribute("aria-label")`))
		if err != nil || title != p.first {
			t.Errorf("%s: first chart %q (%v), want %q", p.path, title, err, p.first)
		}
		// Every line of the first chart has points at several heights.
		for i := range p.lines {
			js := fmt.Sprintf(`(() => { const l = document.querySelectorAll(".chart-svg")[0].querySelectorAll("polyline.series")[%d];
				return l ? new Set(l.getAttribute("points").trim().split(" ").map(p => p.split(",")[1])).size : 0 })()`, i)
			if n := b.eval(js); n < 3 {
				t.Errorf("%s: line %d of %q has %v distinct heights, want a moving line", p.path, i, p.first, n)
			}
		}
		png, err := chromedp.Run(b.ctx, chromedp.Screenshot(chromedp.CSS(".chart-svg")))
		if err != nil {
			t.Fatal(err)
		}
		if ink := inked(t, png); ink < 0.005 {
			t.Errorf("%s: the chart draws nothing: %.4f of its pixels inked", p.path, ink)
		}
	}

	// The metrics explorer: every name, then one name's series.
	b.step("metrics", chromedp.Navigate(h.URL+"/traces/metrics"), chromedp.WaitVisible(chromedp.ID("metric-names")))
	if s := b.text("#metric-names"); !strings.Contains(s, "tangram_mq_group_lag") || !strings.Contains(s, "tangram_job_runs_finished_total") {
		t.Errorf("metric names: %q", s)
	}
	b.step("a metric", chromedp.Navigate(h.URL+"/traces/metrics/tangram_job_runs_finished_total"), chromedp.WaitVisible(chromedp.CSS(".chart-svg")))
	if n := b.eval(`document.querySelectorAll(".chart-svg").length`); n != 3 {
		t.Errorf("%v charts for two series, want 3 (their sum and each)", n)
	}
	b.step("narrowed", chromedp.SetValue(chromedp.ID("metric-match"), "status=failed"), chromedp.Submit(chromedp.ID("metric-match")),
		chromedp.WaitVisible(chromedp.CSS(".chart-svg")))
	if n := b.eval(`document.querySelectorAll(".chart-svg").length`); n != 1 {
		t.Errorf("%v charts for status=failed, want 1", n)
	}
	if title, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector(".chart-svg").getAttribute("aria-label")`)); !strings.Contains(title, "status=failed") {
		t.Errorf("the narrowed chart is %q", title)
	}
}
