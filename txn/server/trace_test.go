package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/txn"
	txnserver "github.com/tangram-dev/tangram/txn/server"
)

// TestBranchCallsAreSpans: each branch call is a client span naming the
// transaction, branch and operation, and the participant receives its
// context in the traceparent header.
func TestBranchCallsAreSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var mu sync.Mutex
	var parents []string
	part := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		parents = append(parents, r.Header.Get("traceparent"))
		mu.Unlock()
	}))
	t.Cleanup(part.Close)
	cfg := txnserver.DefaultConfig()
	cfg.Store = storetest.Open(t, store.SQLite)
	cfg.TracerProvider = tp
	s, err := txnserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	g, err := s.Submit(ctxT(t), txn.SubmitRequest{XID: "traced-1", Mode: txn.ModeSaga, App: "a", Wait: true,
		Steps: []txn.Step{{Action: part.URL + "/a", Compensate: part.URL + "/a-undo"}, {Action: part.URL + "/b", Compensate: part.URL + "/b-undo"}}})
	if err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("saga: %+v %v", g, err)
	}
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want one per branch call", len(spans))
	}
	for i, sp := range spans {
		attrs := map[string]string{}
		for _, kv := range sp.Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if sp.Name() != "txn.branch action" || attrs["txn.xid"] != "traced-1" || attrs["txn.op"] != "action" || attrs["txn.result"] != "ok" {
			t.Fatalf("span %d: %s %v", i, sp.Name(), attrs)
		}
		if !strings.Contains(parents[i], sp.SpanContext().TraceID().String()) {
			t.Fatalf("participant got traceparent %q, want trace %s", parents[i], sp.SpanContext().TraceID())
		}
	}
}
