package server

import (
	"net"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace/series"
)

// TestForwardToAnotherCollector: what a collector receives — OTLP/HTTP
// protobuf and JSON, OTLP/gRPC — reaches the collector it forwards to,
// and is stored by both.
func TestForwardToAnotherCollector(t *testing.T) {
	b, _ := collector(t, Config{})
	a, _ := collector(t, Config{Forward: []string{"http://" + b.OTLPAddr() + "/v1/traces"}})
	if code, _ := post(t, a, exportRequest(t, "fwd", 0, 10), "application/x-protobuf", ""); code != 200 {
		t.Fatalf("export: %d", code)
	}
	doc := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"fwd-json"}}]},
		"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /",
		"kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000"}]}]}]}`
	if code, _ := post(t, a, []byte(doc), "application/json", ""); code != 200 {
		t.Fatalf("JSON export: %d", code)
	}
	if _, st, msg := grpcCall(t, a.OTLPGRPCAddr(), grpcExportPath, exportRequest(t, "fwd-grpc", 100, 5), false); st != "0" {
		t.Fatalf("gRPC export: %s %s", st, msg)
	}
	const want = 30 + 1 + 15
	wait.For(t, 10*time.Second, "the forwarded spans stored", func() bool { return b.Counts().Stored == want })
	wait.For(t, 10*time.Second, "a's own copy", func() bool { return a.Counts().Stored == want })
	wait.For(t, 10*time.Second, "three requests counted as sent", func() bool { return a.Forwarded()[0].Sent == 3 })
	if f := a.Forwarded(); len(f) != 1 || f[0].Failed+f[0].Dropped != 0 {
		t.Fatalf("forward counters %+v", f)
	}
}

// TestForwardToNowhereNeverBlocks: with the forward endpoint down, exports
// are answered and stored at once; forwarding gives up after its retries
// and counts the failures.
func TestForwardToNowhereNeverBlocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	a, _ := collector(t, Config{Forward: []string{"http://" + dead + "/v1/traces"}, ForwardRetry: 300 * time.Millisecond})
	start := time.Now()
	for i := range 3 {
		if code, _ := post(t, a, exportRequest(t, "lost", i*10, 10), "application/x-protobuf", ""); code != 200 {
			t.Fatalf("export %d: %d", i, code)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("three exports took %v with the forward endpoint down", d)
	}
	wait.For(t, 10*time.Second, "stored locally", func() bool { return a.Counts().Stored == 90 })
	wait.For(t, 10*time.Second, "the forwards given up", func() bool {
		f := a.Forwarded()
		return f[0].Failed == 3 && f[0].Sent == 0
	})
}

func TestForwardEndpointValidated(t *testing.T) {
	if _, err := New(Config{Dir: t.TempDir(), Forward: []string{"jaeger:4318"}}); err == nil {
		t.Fatal("a forward endpoint without a scheme was accepted")
	}
}

// TestForwardSignalsByEndpoint: a collector's base URL gets traces,
// metrics and logs, each at its path (this process's own metrics too); a
// traces URL gets traces only.
func TestForwardSignalsByEndpoint(t *testing.T) {
	all, _ := collector(t, Config{})
	tracesOnly, _ := collector(t, Config{})
	a, _ := collector(t, Config{Forward: []string{"http://" + all.OTLPAddr(), "http://" + tracesOnly.OTLPAddr() + "/v1/traces"}})
	if code, _ := post(t, a, exportRequest(t, "fwd", 0, 2), "application/x-protobuf", ""); code != 200 {
		t.Fatalf("traces: %d", code)
	}
	if code, body := postMetrics(t, a, counterRequest(t, "fwd-m", time.Now(), 5), "application/x-protobuf"); code != 200 {
		t.Fatalf("metrics: %d %s", code, body)
	}
	if code, body := postLogs(t, a, logsExport(t, "fwd-l", 1, 1, []string{"boom"}, 0), "application/x-protobuf"); code != 200 {
		t.Fatalf("logs: %d %s", code, body)
	}
	orders := func(s *Server) int { return len(s.series.Query(series.Query{Name: "orders"})) }
	wait.For(t, 10*time.Second, "the spans and the log record at the base URL's collector", func() bool { return all.Counts().Stored == 6+1 })
	wait.For(t, 10*time.Second, "the metric at the base URL's collector", func() bool { return orders(all) == 1 })
	wait.For(t, 10*time.Second, "the spans at the traces URL's collector", func() bool { return tracesOnly.Counts().Stored == 6 })
	wait.For(t, 10*time.Second, "every request counted", func() bool {
		f := a.Forwarded()
		return f[0].Sent == 3 && f[1].Sent == 1
	})
	if orders(tracesOnly) != 0 || tracesOnly.Counts().Stored != 6 || a.Forwarded()[1].Sent != 1 {
		t.Fatalf("the traces URL got other signals: %d series, %d records, %+v", orders(tracesOnly), tracesOnly.Counts().Stored, a.Forwarded())
	}
	// The process's own metrics go the same way.
	if n := a.ExportMetrics(nil); n != 0 {
		t.Fatalf("an empty export rejected %d", n)
	}
	wait.For(t, 10*time.Second, "the own export forwarded", func() bool { return a.Forwarded()[0].Sent == 4 })
	if _, err := newForwarder("otelcol:4318", nil); err == nil {
		t.Error("a forward endpoint without a scheme taken")
	}
}
