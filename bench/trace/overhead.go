package main

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/trace"
)

// discard is an exporter that drops what it is given: the comparison is
// of the span's cost in the request path, not of exporting.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// nopWriter is a ResponseWriter that keeps nothing.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// overhead measures, per round, ns per HTTP server span through
// trace.HTTPHandler (a ServeMux route, a traceparent header to extract)
// and through the bare SDK doing the same span by hand: the parent's
// context extracted from the header, Start with the same attributes, the
// handler given the span's context, the route and status set, End. Both providers batch into a discarding exporter.
func overhead(rounds int) (ours, bare []float64) {
	const n = 200_000
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for r := range rounds {
		// The two take turns going first.
		if r%2 == 0 {
			ours = append(ours, measureOurs(n, parent))
			bare = append(bare, measureBare(n, parent))
		} else {
			bare = append(bare, measureBare(n, parent))
			ours = append(ours, measureOurs(n, parent))
		}
	}
	return ours, bare
}

func route() (*http.ServeMux, *http.Request, *nopWriter) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/orders/{id}", func(http.ResponseWriter, *http.Request) {})
	req, _ := http.NewRequest("GET", "http://x/api/orders/7", nil)
	req.RemoteAddr = "127.0.0.1:5000"
	return mux, req, &nopWriter{h: http.Header{}}
}

func measureOurs(n int, parent string) float64 {
	p, err := trace.New(trace.Config{Service: "bench", Exporter: discard{}})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	mux, req, w := route()
	req.Header.Set("traceparent", parent)
	h := trace.HTTPHandler(p.TracerProvider(), mux, nil)
	runtime.GC()
	t0 := time.Now()
	for range n {
		h.ServeHTTP(w, req)
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(n)
}

// measureBare is the same span written by hand with the SDK.
func measureBare(n int, parent string) float64 {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}))
	defer tp.Shutdown(context.Background())
	tr := tp.Tracer("bench")
	mux, req, w := route()
	req.Header.Set("traceparent", parent)
	prop := propagation.TraceContext{}
	runtime.GC()
	t0 := time.Now()
	for range n {
		// What any HTTP instrumentation must do: the caller's context
		// from the header, the span, the handler given its context.
		ctx := prop.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
		ctx, span := tr.Start(ctx, "GET", oteltrace.WithSpanKind(oteltrace.SpanKindServer), oteltrace.WithAttributes(
			attribute.String("http.request.method", "GET"), attribute.String("url.path", "/api/orders/7"), attribute.String("client.address", "127.0.0.1")))
		mux.ServeHTTP(w, req.WithContext(ctx))
		span.SetName("GET /api/orders/{id}")
		span.SetAttributes(attribute.String("http.route", "/api/orders/{id}"), attribute.Int("http.response.status_code", 200))
		span.End()
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(n)
}
