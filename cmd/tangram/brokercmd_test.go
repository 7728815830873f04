package main

import (
	"context"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace"
)

// TestBrokerSendsItsMetrics: a standalone broker with --metrics-endpoint
// sends its counters to the server's collector as OTLP, where the
// console's MQ charts read them, named by the broker.
func TestBrokerSendsItsMetrics(t *testing.T) {
	h := servertest.Start(t, servertest.WithComponents("mq", "trace"))
	runInBackground(t, "the broker", "broker", "--token", h.Token, "--servers", h.Srv.RPCAddr(), "--listen", port.Free(t), "--name", "broker-m",
		"--dir", t.TempDir(), "--segment-size", "8388608", "--log-level", "error",
		"--metrics-endpoint", "http://"+h.Srv.OTLPAddr(), "--metrics-every", "100ms")
	a := trace.NewAdmin(h.URL, h.Token)
	wait.For(t, 20*time.Second, "the broker's goroutine gauge at the server's collector", func() bool {
		r, err := a.MetricSeries(context.Background(), "go_goroutines", map[string]string{"service": "tangram-broker", "instance": "broker-m"}, 10)
		if err != nil {
			t.Fatalf("series: %v", err)
		}
		return len(r.Series) == 1 && len(r.Series[0].Points) > 0
	})
	if err := func() error {
		root := newRoot()
		root.SetArgs([]string{"broker", "--token", h.Token, "--servers", h.Srv.RPCAddr(), "--metrics-endpoint", "localhost:4318"})
		return root.ExecuteContext(context.Background())
	}(); err == nil {
		t.Error("a --metrics-endpoint without http:// was taken")
	}
}
