package console_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	_ "image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace"
)

// inked is the share of a PNG's pixels that are not near white: a chart
// or graph that draws nothing is all background.
func inked(t *testing.T, png []byte) float64 {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(png))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	b := img.Bounds()
	n, dark := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			n++
			if r < 0xd000 || g < 0xd000 || bl < 0xd000 {
				dark++
			}
		}
	}
	return float64(dark) / float64(n)
}

// TestTracePagesBrowser: with spans from two services (one calling the
// other, some failing, a log recorded on a span), headless Chromium shows
// the services' figures, a trace's waterfall with its log inline, a
// service's charts drawing data, and the service map drawing both
// services and the call between them.
func TestTracePagesBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	h := servertest.Start(t)
	ep := "http://" + h.Srv.OTLPAddr() + "/v1/traces"
	web, err := trace.New(trace.Config{Service: "web", Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	db, err := trace.New(trace.Config{Service: "ledger", Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	var last oteltrace.TraceID
	var lastSrv oteltrace.SpanID
	for i := range 20 {
		ctx, root := web.Tracer("t").Start(context.Background(), "GET /pay", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
		ctx, call := web.Tracer("t").Start(ctx, "ledger.Debit", oteltrace.WithSpanKind(oteltrace.SpanKindClient))
		_, srv := db.Tracer("t").Start(ctx, "ledger.Debit", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
		srv.AddEvent("log", oteltrace.WithAttributes(attribute.String("log.message", fmt.Sprintf("debited account %d", i))))
		if i%4 == 0 {
			srv.SetStatus(codes.Error, "insufficient funds")
		}
		srv.End()
		call.End()
		root.End()
		last, lastSrv = root.SpanContext().TraceID(), srv.SpanContext().SpanID()
	}
	for _, p := range []*trace.Provider{web, db} {
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// A log record sent over OTLP under the last trace's ledger span (as a
	// service's log SDK sends it) and one under no span of the trace.
	logs := fmt.Sprintf(`{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"ledger"}}]},"scopeLogs":[{"logRecords":[
{"timeUnixNano":"%d","severityNumber":13,"body":{"stringValue":"balance below limit"},"traceId":"%s","spanId":"%s"},
{"timeUnixNano":"%d","severityNumber":9,"body":{"stringValue":"batch closed"},"traceId":"%s"}]}]}]}`,
		time.Now().UnixNano(), last, lastSrv, time.Now().UnixNano(), last)
	resp, err := http.Post("http://"+h.Srv.OTLPAddr()+"/v1/logs", "application/json", strings.NewReader(logs))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	admin := trace.NewAdmin(h.URL, h.Token)
	wait.For(t, 10*time.Second, "the logs kept with the trace", func() bool {
		tr, err := admin.Trace(context.Background(), last.String())
		return err == nil && len(tr.Logs) == 2
	})
	if _, err := admin.SetAlert(context.Background(), trace.AlertRule{Name: "ledger-errors", Service: "ledger", Metric: trace.ErrorRatio, Threshold: 0.1}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, "the call between the services", func() bool {
		d, err := admin.Dependencies(context.Background(), 5)
		return err == nil && len(d.Edges) == 1 && d.Edges[0].Calls == 20
	})

	b := newTab(t)
	b.signIn(h.URL, "/traces", h.Token)
	step, eval, text, id := b.step, b.eval, b.text, func(s string) chromedp.ID { return chromedp.ID(s) }
	page := b.page
	step("services", chromedp.Navigate(h.URL+"/traces"), chromedp.WaitVisible(id("trace-services")))
	if s := text("#trace-services"); !strings.Contains(s, "web") || !strings.Contains(s, "ledger") || !strings.Contains(s, "25.0%") {
		t.Errorf("services table: %q (want web, ledger, and ledger's 25.0%% errors)", s)
	}
	if s := text("#trace-alerts"); !strings.Contains(s, "ledger-errors") || !strings.Contains(s, "error_ratio") {
		t.Errorf("alerts table: %q", s)
	}
	step("search", chromedp.SetValue(chromedp.CSS("input[name=service]"), "ledger"), chromedp.Click(chromedp.CSS("input[name=errors]")),
		chromedp.Submit(chromedp.CSS("input[name=service]")), chromedp.WaitVisible(id("trace-found")))
	if n := eval(`document.querySelectorAll("#trace-found a").length`); n != 5 {
		t.Errorf("%v traces with an error found, want 5\n%.2000s", n, page())
	}

	step("waterfall", chromedp.Navigate(h.URL+"/traces/"+last.String()), chromedp.WaitVisible(id("waterfall")))
	if n := eval(`document.querySelectorAll("#waterfall rect.span-bar").length`); n != 3 {
		t.Errorf("%v span bars, want 3", n)
	}
	if w := eval(`Math.min(...[...document.querySelectorAll("#waterfall rect.span-bar")].map(r => r.getBoundingClientRect().width))`); w < 1 {
		t.Errorf("a span bar %v pixels wide", w)
	}
	if s := text("#waterfall"); !strings.Contains(s, "debited account 19") || !strings.Contains(s, "ledger.Debit") {
		t.Errorf("waterfall without the span's log inline: %q", s)
	}
	// The OTLP log record sits under its span, not as a span of its own.
	if s := text("#waterfall"); !strings.Contains(s, "WARN balance below limit") {
		t.Errorf("waterfall without the OTLP log record inline: %q", s)
	}
	if s := text("#trace-logs"); !strings.Contains(s, "INFO batch closed") {
		t.Errorf("the log of no span: %q", s)
	}

	step("service", chromedp.Navigate(h.URL+"/traces/services/ledger"), chromedp.WaitVisible(chromedp.CSS(".chart-svg")))
	if n := eval(`document.querySelectorAll("polyline.series").length`); n != 5 {
		t.Errorf("%v chart lines, want 5 (calls, errors, p50, p95, p99)", n)
	}
	// The calls line is not flat: the last minute has the 20 calls.
	if n := eval(`new Set(document.querySelector("polyline.line-calls").getAttribute("points").trim().split(" ").map(p => p.split(",")[1])).size`); n < 2 {
		t.Errorf("the calls line is flat (%v distinct heights)", n)
	}
	png, err := chromedp.Run(b.ctx, chromedp.Screenshot(chromedp.CSS(".chart-svg")))
	if err != nil {
		t.Fatal(err)
	}
	if ink := inked(t, png); ink < 0.005 {
		t.Errorf("the calls chart draws nothing: %.4f of its pixels inked", ink)
	}

	step("map", chromedp.Navigate(h.URL+"/traces/map"), chromedp.WaitVisible(id("service-map")))
	// web, ledger, and tangram-server (the server traces itself).
	if n := eval(`document.querySelectorAll("#service-map circle").length`); n != 3 {
		t.Errorf("%v services drawn, want 3", n)
	}
	if l := eval(`(() => { const e = document.querySelector("#service-map line.edge").getBoundingClientRect(); return Math.hypot(e.width, e.height) })()`); l < 50 {
		t.Errorf("the edge is %v pixels long", l)
	}
	labels, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById("service-map").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if s := labels; !strings.Contains(s, "web") || !strings.Contains(s, "ledger") || !strings.Contains(s, "25.0% err") {
		t.Errorf("map labels: %q", s)
	}
	png, err = chromedp.Run(b.ctx, chromedp.Screenshot(id("service-map")))
	if err != nil {
		t.Fatal(err)
	}
	if ink := inked(t, png); ink < 0.01 {
		t.Errorf("the map draws nothing: %.4f of its pixels inked", ink)
	}
	for i, path := range []string{"/traces", "/traces/map", "/traces/services/ledger", "/traces/" + last.String()} {
		fits(t, b.ctx, h.URL, path)
		// TANGRAM_TEST_SCREENSHOTS=DIR keeps each page as a PNG to look at.
		if dir := os.Getenv("TANGRAM_TEST_SCREENSHOTS"); dir != "" {
			png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
			if err == nil {
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("traces-%d.png", i)), png, 0o644)
			}
		}
	}
}
