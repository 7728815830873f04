package server_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace"
)

// TestCollectorKill9KeepsWhatWasStored: `tangram collector` killed with
// SIGKILL while spans pour in reopens its store with every span it had
// reported stored — the torn tail cut — and answers for them.
func TestCollectorKill9KeepsWhatWasStored(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	data := t.TempDir()
	httpAddr, otlpAddr := port.Free(t), port.Free(t)
	const token = "tgm_collector-crash-token-0123456789ab"
	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "collector", "--http", httpAddr, "--otlp-http", otlpAddr, "--otlp-grpc", "off", "--trace-endpoint", "off",
			"--data", data, "--log-level", "error")
		cmd.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		wait.For(t, 30*time.Second, "the collector to answer", func() bool {
			resp, err := http.Get("http://" + httpAddr + "/healthz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		})
		return cmd
	}
	c := start()
	admin := trace.NewAdmin("http://"+httpAddr, token)
	p, err := trace.New(trace.Config{Service: "pour", Endpoint: "http://" + otlpAddr + "/v1/traces", BatchTimeout: 5 * time.Millisecond, BatchSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var first oteltrace.TraceID
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // bounded: at most 200,000 spans, until the kill
		defer wg.Done()
		for i := 0; i < 200000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, sp := p.Tracer("t").Start(context.Background(), "op")
			if i == 0 {
				first = sp.SpanContext().TraceID()
			}
			sp.End()
		}
	}()
	var stored int64
	wait.For(t, 30*time.Second, "spans stored", func() bool {
		st, err := admin.Stats(context.Background())
		stored = st.Stored
		return err == nil && st.Stored >= 5000
	})
	if err := c.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	close(stop)
	wg.Wait()
	start()
	st, err := admin.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if int64(st.Spans) < stored {
		t.Fatalf("after kill -9: %d spans in the store, %d were reported stored before it", st.Spans, stored)
	}
	tr, err := admin.Trace(context.Background(), first.String())
	if err != nil || len(tr.Spans) != 1 {
		t.Fatalf("the first trace after the restart: %+v, %v", tr, err)
	}
	t.Logf("%d spans reported stored before the kill, %d in the store after", stored, st.Spans)
}
