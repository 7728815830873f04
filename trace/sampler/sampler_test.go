package sampler

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace/otlp"
)

func TestMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://c:4318":                "http://c:4318/v1/metrics",
		"http://c:4318/":               "http://c:4318/v1/metrics",
		"https://c/otlp/v1/traces":     "https://c/otlp/v1/metrics",
		"http://c:4318/v1/metrics":     "http://c:4318/v1/metrics",
		"http://c:4318/prefix/v1/logs": "http://c:4318/prefix/v1/logs/v1/metrics",
	} {
		if got, err := MetricsURL(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "c:4318", "grpc://c:4317"} {
		if _, err := MetricsURL(bad); err == nil {
			t.Errorf("%q taken", bad)
		}
	}
}

// TestSamplerPostsOTLP: the kept families reach an OTLP/HTTP endpoint at
// the interval — a counter as its increase since the start, with the
// process named in the resource; other families stay behind.
func TestSamplerPostsOTLP(t *testing.T) {
	var mu sync.Mutex
	var got [][]*metricspb.ResourceMetrics
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rms, err := otlp.DecodeMetrics(b)
		if err != nil || r.URL.Path != "/v1/metrics" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, rms)
		mu.Unlock()
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	sent := prometheus.NewCounter(prometheus.CounterOpts{Name: "tangram_test_sent_total", Help: "h"})
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "other_gauge", Help: "h"})
	reg.MustRegister(sent, other)
	sent.Add(3)
	url, err := MetricsURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Config{Gatherer: reg, Every: 20 * time.Millisecond, Sink: HTTPSink(url, nil), Service: "svc", Instance: "i-1", Version: "v", Scope: "test"})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "two samples", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 2 })
	s.Close()
	mu.Lock()
	defer mu.Unlock()
	rm := got[len(got)-1][0]
	attrs := map[string]string{}
	for _, kv := range rm.Resource.Attributes {
		attrs[kv.Key] = kv.Value.GetStringValue()
	}
	if attrs["service.name"] != "svc" || attrs["service.instance.id"] != "i-1" {
		t.Fatalf("resource %v", attrs)
	}
	var names []string
	var value float64
	for _, m := range rm.ScopeMetrics[0].Metrics {
		names = append(names, m.Name)
		if m.Name == "tangram_test_sent_total" {
			value = m.GetSum().GetDataPoints()[0].GetAsDouble()
		}
	}
	if len(names) != 1 || value != 3 {
		t.Fatalf("metrics %v, tangram_test_sent_total %v; want only it, at 3", names, value)
	}
	if _, err := Start(Config{Gatherer: reg}); err == nil {
		t.Error("a sampler without a sink started")
	}
}
