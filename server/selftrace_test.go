package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace"
)

// traceOf waits until the server's trace API holds a trace with a span
// for which ok is true, and returns the trace.
func traceOf(t *testing.T, h *servertest.Harness, id string, ok func(trace.Span) bool) trace.TraceReply {
	t.Helper()
	var tr trace.TraceReply
	wait.For(t, 15*time.Second, "trace "+id, func() bool {
		req, _ := http.NewRequest("GET", h.URL+"/api/v1/trace/traces/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+h.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		tr = trace.TraceReply{} // decoding into the last poll's spans would merge them
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&tr) != nil {
			return false
		}
		for _, s := range tr.Spans {
			if ok(s) {
				return true
			}
		}
		return false
	})
	return tr
}

// TestServerTracesItself: the server records its HTTP and RPC calls into
// its own collector, joined to the caller's trace.
func TestServerTracesItself(t *testing.T) {
	h := servertest.Start(t)
	// HTTP: the caller's traceparent is the server span's parent.
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest("GET", h.URL+"/api/v1/version", nil)
	req.Header.Set("Authorization", "Bearer "+h.Token)
	req.Header.Set("traceparent", "00-"+tid+"-"+sid+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr := traceOf(t, h, tid, func(s trace.Span) bool { return s.Name == "GET /api/v1/version" })
	for _, s := range tr.Spans {
		if s.Name == "GET /api/v1/version" && (s.Service != "tangram-server" || s.ParentID != sid || s.Kind != "server" ||
			s.Attributes["http.response.status_code"] != float64(200)) {
			t.Errorf("the server's HTTP span: %+v", s)
		}
	}
	// RPC: a traced client's call; the server's span is its child.
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	c, err := rpc.Dial(context.Background(), h.Srv.RPCAddr(), rpc.WithInterceptors(rpc.ClientTracing(tp)), rpc.WithToken(h.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := rpc.Call[server.WhoAmIReply](context.Background(), c, "tangram.Platform/WhoAmI", &server.Empty{}); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("client spans: %d", len(spans))
	}
	client := spans[0].SpanContext
	traceOf(t, h, client.TraceID().String(), func(s trace.Span) bool {
		return s.Name == "tangram.Platform/WhoAmI" && s.Kind == "server" && s.ParentID == client.SpanID().String()
	})
}

// TestJobRunTrace: each run is a trace — the scheduler's dispatch span in
// the server, the executor's span of the run under it (exported by the
// executor's own SDK over OTLP/HTTP), and what the handler records under
// that; a failed run is an error span.
func TestJobRunTrace(t *testing.T) {
	h := servertest.Start(t)
	p, err := trace.New(trace.Config{Service: "billing-worker", Endpoint: "http://" + h.Srv.OTLPAddr() + "/v1/traces", BatchTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, App: "billing",
		HeartbeatInterval: 200 * time.Millisecond, ShutdownGrace: time.Second, TracerProvider: p.TracerProvider()})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan string, 2)
	e.Handle("settle", func(ctx context.Context, jc *job.Context) error {
		_, span := p.Tracer("billing").Start(ctx, "settle accounts")
		span.End()
		ran <- jc.Params
		if jc.Params == "fail" {
			return errors.New("ledger locked")
		}
		return nil
	})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c := h.Client()
	var j job.Job
	if err := c.Do(context.Background(), "POST", "/api/v1/jobs", map[string]any{"name": "settle", "app": "billing", "handler": "settle",
		"enabled": true, "trigger": map[string]any{"kind": "manual"}}, &j); err != nil {
		t.Fatal(err)
	}
	for _, params := range []string{"ok", "fail"} {
		var tr struct{ Runs []int64 }
		wait.For(t, 10*time.Second, "the executor registered", func() bool {
			return c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", j.ID), map[string]any{"params": params}, &tr) == nil
		})
		wait.Receive(t, 10*time.Second, "the run", ran)
	}
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Find the runs' traces by searching for the executor's spans.
	var found trace.SearchReply
	wait.For(t, 15*time.Second, "two traces of billing-worker", func() bool {
		req, _ := http.NewRequest("GET", h.URL+"/api/v1/trace/traces?service=billing-worker&operation=run+settle", nil)
		req.Header.Set("Authorization", "Bearer "+h.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		found = trace.SearchReply{}
		return json.NewDecoder(resp.Body).Decode(&found) == nil && len(found.Traces) == 2
	})
	failed := 0
	for _, m := range found.Traces {
		tr := traceOf(t, h, m.TraceID, func(s trace.Span) bool { return s.Service == "tangram-server" })
		by := map[string]trace.Span{}
		for _, s := range tr.Spans {
			by[s.Name] = s
		}
		dispatch, run, work := by["job settle"], by["run settle"], by["settle accounts"]
		if dispatch.SpanID == "" || run.ParentID != dispatch.SpanID || work.ParentID != run.SpanID || dispatch.ParentID != "" {
			t.Errorf("trace %s: want job settle ← run settle ← settle accounts, got %+v", m.TraceID, tr.Spans)
		}
		if run.Status == "error" {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d failed run spans, want 1", failed)
	}
}
