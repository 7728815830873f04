package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/store"
)

// storedTrace waits until the collector holds n spans of the trace.
func storedTrace(t *testing.T, s *Server, id oteltrace.TraceID, n int) []store.Span {
	t.Helper()
	var spans []store.Span
	wait.For(t, 10*time.Second, "the trace stored", func() bool {
		var err error
		spans, err = s.Store().Trace(store.TraceID(id))
		return err == nil && len(spans) == n
	})
	return spans
}

// makeTrace records a server span with a client child (an error, an
// event, a link to the root) and returns the trace ID.
func makeTrace(tr oteltrace.Tracer) oteltrace.TraceID {
	ctx, root := tr.Start(context.Background(), "GET /orders", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
	_, child := tr.Start(ctx, "orders.Get", oteltrace.WithSpanKind(oteltrace.SpanKindClient),
		oteltrace.WithAttributes(attribute.String("db", "orders"), attribute.StringSlice("tags", []string{"a", "b"})),
		oteltrace.WithLinks(oteltrace.Link{SpanContext: root.SpanContext()}))
	child.AddEvent("retry", oteltrace.WithAttributes(attribute.Int("attempt", 2)))
	child.SetStatus(codes.Error, "timeout")
	child.End()
	root.End()
	return root.SpanContext().TraceID()
}

func checkTrace(t *testing.T, spans []store.Span, service string) {
	t.Helper()
	var root, child *store.Span
	for i := range spans {
		switch spans[i].Name {
		case "GET /orders":
			root = &spans[i]
		case "orders.Get":
			child = &spans[i]
		}
	}
	if root == nil || child == nil {
		t.Fatalf("spans %+v", spans)
	}
	if child.ParentID != root.SpanID || root.ParentID != (store.SpanID{}) || child.Service != service || root.Kind != store.KindServer {
		t.Errorf("root %+v child %+v", root, child)
	}
	if child.Status != store.StatusError || child.StatusMessage != "timeout" || len(child.Events) != 1 || len(child.Links) != 1 ||
		child.Links[0].SpanID != root.SpanID {
		t.Errorf("child %+v", child)
	}
	attrs := map[string]string{}
	for _, a := range child.Attrs {
		attrs[a.Key] = a.Value.Str
	}
	if attrs["db"] != "orders" || attrs["tags"] != `["a","b"]` {
		t.Errorf("attributes %v", child.Attrs)
	}
}

// TestProviderExportsToCollector: the SDK's Provider, over OTLP/HTTP,
// into a real collector; the trace comes back whole.
func TestProviderExportsToCollector(t *testing.T) {
	s, _ := collector(t, Config{})
	p, err := trace.New(trace.Config{Service: "orders", Endpoint: "http://" + s.OTLPAddr() + "/v1/traces", BatchTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	id := makeTrace(p.Tracer("test"))
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkTrace(t, storedTrace(t, s, id, 2), "orders")
	if e := p.Exporter().(*trace.Exporter); e.Sent() != 2 || e.Rejected() != 0 {
		t.Errorf("sent %d rejected %d", e.Sent(), e.Rejected())
	}
}

// TestLocalExporter: the in-process exporter stores what OTLP would.
func TestLocalExporter(t *testing.T) {
	s, _ := collector(t, Config{})
	p, err := trace.New(trace.Config{Service: "self", Exporter: s.Exporter()})
	if err != nil {
		t.Fatal(err)
	}
	id := makeTrace(p.Tracer("test"))
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkTrace(t, storedTrace(t, s, id, 2), "self")
	p.Close()
}

// TestExporterCountsRejected: a collector whose queue is full answers
// with a partial success; the exporter counts the refused spans and does
// not retry them.
func TestExporterCountsRejected(t *testing.T) {
	hold := make(chan struct{})
	s, _ := collector(t, Config{QueueSpans: 2}, func(s *Server) { s.pause = hold })
	defer close(hold)
	p, err := trace.New(trace.Config{Service: "x", Endpoint: "http://" + s.OTLPAddr() + "/v1/traces", BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	tr := p.Tracer("t")
	for range 4 {
		_, sp := tr.Start(context.Background(), "op")
		sp.End()
	}
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := p.Exporter().(*trace.Exporter)
	if e.Rejected() != 4 || e.Sent() != 0 {
		t.Errorf("rejected %d sent %d: want all 4 refused", e.Rejected(), e.Sent())
	}
	p.Close()
}

// TestExporterGivesUpAtDeadline: with no collector listening, an export
// retries until its context ends and says so.
func TestExporterGivesUpAtDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e, err := trace.NewExporter("http://"+addr+"/v1/traces", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := trace.New(trace.Config{Service: "x", Exporter: e})
	if err != nil {
		t.Fatal(err)
	}
	_, sp := p.Tracer("t").Start(context.Background(), "op")
	sp.End()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = p.ForceFlush(ctx)
	if err == nil || !(strings.Contains(err.Error(), "gave up") || errors.Is(err, context.DeadlineExceeded)) {
		t.Errorf("flush to nowhere: %v", err)
	}
	p.Close()
	if err := e.ExportSpans(context.Background(), nil); !errors.Is(err, trace.ErrExporterClosed) {
		t.Errorf("export after shutdown: %v", err)
	}
}
