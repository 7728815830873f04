package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/wait"
)

// jaegerVersion is the Jaeger release testdata/jaeger builds (Jaeger v2,
// shipped in the v1.75.0 module).
const jaegerVersion = "v1.75.0"

// jaegerBin builds Jaeger from testdata/jaeger once per machine (into the
// user's cache directory: the first build fetches and compiles hundreds
// of modules, minutes; later runs reuse it).
func jaegerBin(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "tangram-test", "jaeger-"+jaegerVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	t.Logf("building Jaeger %s from testdata/jaeger into %s (the first build takes minutes)", jaegerVersion, bin)
	cmd := exec.Command(goBin, "build", "-o", tmp, "github.com/jaegertracing/jaeger/cmd/jaeger")
	cmd.Dir = filepath.Join("testdata", "jaeger")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build Jaeger: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil { // another test process may have won: either binary does
		t.Fatal(err)
	}
	return bin
}

// startJaeger runs Jaeger with in-memory storage, OTLP/HTTP and its query
// API on ports of its own; it returns the two addresses.
func startJaeger(t *testing.T) (otlp, query string) {
	t.Helper()
	bin := jaegerBin(t)
	otlp, query, health, qgrpc := port.Free(t), port.Free(t), port.Free(t), port.Free(t)
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %s
receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`, query, qgrpc, health, otlp)
	path := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	cmd := exec.Command(bin, "--config", "file:"+path)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("jaeger's log:\n%s", log.String())
		}
	})
	wait.For(t, 30*time.Second, "Jaeger to be healthy", func() bool {
		resp, err := http.Get("http://" + health + "/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return otlp, query
}

// jaegerTrace is a trace as Jaeger's query API answers it.
type jaegerTrace struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			ProcessID     string `json:"processID"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			Tags []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
}

// TestForwardToJaeger: a collector forwarding to a real Jaeger — OTLP/HTTP
// protobuf and JSON in, forwarded as they came — and the traces read
// back through Jaeger's own query API: every span, its operation, its
// parent, its service, its error.
func TestForwardToJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Jaeger")
	}
	otlp, query := startJaeger(t)
	a, _ := collector(t, Config{Forward: []string{"http://" + otlp + "/v1/traces"}})
	if code, _ := post(t, a, exportRequest(t, "jaeger-fwd", 0, 2), "application/x-protobuf", ""); code != 200 {
		t.Fatalf("export: %d", code)
	}
	doc := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"jaeger-json"}}]},
		"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /json",
		"kind":2,"startTimeUnixNano":"` + itoa(time.Now().UnixNano()) + `","endTimeUnixNano":"` + itoa(time.Now().Add(time.Millisecond).UnixNano()) + `"}]}]}]}`
	if code, _ := post(t, a, []byte(doc), "application/json", ""); code != 200 {
		t.Fatalf("JSON export: %d", code)
	}
	get := func(id string) (jaegerTrace, bool) {
		var jt jaegerTrace
		resp, err := http.Get("http://" + query + "/api/traces/" + id)
		if err != nil {
			return jt, false
		}
		defer resp.Body.Close()
		return jt, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&jt) == nil && len(jt.Data) == 1
	}
	var jt jaegerTrace
	wait.For(t, 20*time.Second, "trace 0 in Jaeger", func() bool {
		var ok bool
		jt, ok = get(tid(0))
		return ok && len(jt.Data[0].Spans) == 3
	})
	tr := jt.Data[0]
	ids := map[string]string{} // operation → span ID
	for _, s := range tr.Spans {
		ids[s.OperationName] = s.SpanID
		if svc := tr.Processes[s.ProcessID].ServiceName; svc != "jaeger-fwd" {
			t.Errorf("span %s of service %q", s.OperationName, svc)
		}
	}
	for _, s := range tr.Spans {
		var parent string
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				parent = r.SpanID
			}
		}
		want := map[string]string{"op0": "", "op1": ids["op0"], "op2": ids["op1"]}[s.OperationName]
		if parent != want {
			t.Errorf("%s: parent %q, want %q", s.OperationName, parent, want)
		}
		failed := slices.ContainsFunc(s.Tags, func(tg struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		}) bool {
			return tg.Key == "error" && tg.Value == true
		})
		if failed != (s.OperationName == "op2") { // trace 0's last span failed
			t.Errorf("%s: error %v", s.OperationName, failed)
		}
	}
	wait.For(t, 20*time.Second, "the JSON export's trace in Jaeger", func() bool {
		jt, ok := get("5b8efff798038103d269b633813fc60c")
		return ok && len(jt.Data[0].Spans) == 1 && jt.Data[0].Spans[0].OperationName == "GET /json"
	})
	wait.For(t, 10*time.Second, "both requests counted as sent", func() bool { return a.Forwarded()[0].Sent == 2 })
	if f := a.Forwarded(); len(f) != 1 || f[0].Failed+f[0].Dropped != 0 {
		t.Errorf("forward counters %+v", f)
	}
}
