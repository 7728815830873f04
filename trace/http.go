package trace

import (
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// ScopeHTTP is the instrumentation scope of the HTTP spans.
const ScopeHTTP = "github.com/tangram-dev/tangram/trace/http"

var traceContext = propagation.TraceContext{}

// HTTPHandler starts a server span for each request, joined to the
// caller's trace through the W3C traceparent header, named by the method
// and the ServeMux pattern that served it ("GET /api/v1/orders/{id}"),
// with OpenTelemetry's HTTP attributes; a 5xx answer marks it an error.
// Requests for which skip returns true (health checks, static files) are
// not traced; skip may be nil.
func HTTPHandler(tp oteltrace.TracerProvider, next http.Handler, skip func(*http.Request) bool) http.Handler {
	tr := tp.Tracer(ScopeHTTP)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if skip != nil && skip(r) {
			next.ServeHTTP(w, r)
			return
		}
		ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		var buf [4]attribute.KeyValue
		attrs := append(buf[:0], attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path))
		if i := strings.LastIndexByte(r.RemoteAddr, ':'); i > 0 {
			attrs = append(attrs, attribute.String("client.address", strings.Trim(r.RemoteAddr[:i], "[]")))
		}
		if ua := r.Header.Get("User-Agent"); ua != "" {
			attrs = append(attrs, attribute.String("user_agent.original", ua))
		}
		ctx, span := tr.Start(ctx, r.Method, oteltrace.WithSpanKind(oteltrace.SpanKindServer), oteltrace.WithAttributes(attrs...))
		defer span.End()
		sw := &codeWriter{ResponseWriter: w, code: http.StatusOK}
		r2 := r.WithContext(ctx)
		next.ServeHTTP(sw, r2)
		if p := r2.Pattern; p != "" {
			route := routeOf(p)
			if len(route) == len(p) || p[:len(p)-len(route)-1] != r.Method { // no method in the pattern, or another (HEAD on GET)
				p = r.Method + " " + route
			}
			span.SetName(p)
			span.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", sw.code))
		} else {
			span.SetAttributes(attribute.Int("http.response.status_code", sw.code))
		}
		if sw.code >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(sw.code))
		}
	})
}

// routeOf is a ServeMux pattern without its method ("GET /x" → "/x").
func routeOf(pattern string) string {
	for i := 0; i < len(pattern); i++ {
		switch pattern[i] {
		case ' ':
			return pattern[i+1:]
		case '/':
			return pattern
		}
	}
	return pattern
}

type codeWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *codeWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// deadlines, hijacking for long polls).
func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport wraps base (nil: http.DefaultTransport) so that every request
// is a client span whose context travels in the traceparent header; a
// 4xx or 5xx answer or a transport error marks the span an error.
func Transport(tp oteltrace.TracerProvider, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{tr: tp.Tracer(ScopeHTTP), base: base}
}

type transport struct {
	tr   oteltrace.Tracer
	base http.RoundTripper
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, span := t.tr.Start(r.Context(), r.Method, oteltrace.WithSpanKind(oteltrace.SpanKindClient),
		oteltrace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("server.address", r.URL.Hostname()),
			attribute.String("url.full", r.URL.Redacted())))
	defer span.End()
	r = r.Clone(ctx)
	traceContext.Inject(ctx, propagation.HeaderCarrier(r.Header))
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, resp.Status)
	}
	return resp, nil
}
