package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace"
)

// TestTraceCollector: the platform server runs the collector: an OTLP/JSON
// export to its receiver is found through the server's API with a token,
// and refused without one; its counters are on /metrics.
func TestTraceCollector(t *testing.T) {
	h := servertest.Start(t)
	addr := h.Srv.OTLPAddr()
	if addr == "" {
		t.Fatal("the server runs no OTLP receiver")
	}
	doc := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},
		"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /",
		"kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000"}]}]}]}`
	resp, err := http.Post("http://"+addr+"/v1/traces", "application/json", bytes.NewReader([]byte(doc)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("export: %d", resp.StatusCode)
	}
	get := func(token string) (*http.Response, error) {
		req, _ := http.NewRequest("GET", h.URL+"/api/v1/trace/traces/5b8efff798038103d269b633813fc60c", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return http.DefaultClient.Do(req)
	}
	var tr trace.TraceReply
	wait.For(t, 10*time.Second, "the exported trace to be found", func() bool {
		resp, err := get(h.Token)
		if err != nil || resp.StatusCode != 200 {
			if resp != nil {
				resp.Body.Close()
			}
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&tr) == nil && len(tr.Spans) == 1
	})
	if sp := tr.Spans[0]; sp.Service != "web" || sp.Name != "GET /" || sp.DurationNano != 500_000_000 {
		t.Fatalf("the span: %+v", sp)
	}
	resp, err = get("")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("the trace without a token: %d", resp.StatusCode)
	}
	resp, err = http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^tangram_trace_spans_stored_total [1-9]`).Match(body.Bytes()) {
		t.Fatalf("/metrics lacks the collector's counters:\n%.2000s", body.String())
	}
}

// With OTLPAuth "on" the server's receivers take exports with an API
// token only: none or an unknown one gets 401.
func TestOTLPReceiversNeedATokenWhenAsked(t *testing.T) {
	h := servertest.Start(t, func(c *server.Config) { c.OTLPAuth = "on" }, servertest.WithComponents("trace"))
	doc := []byte(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},
		"scopeSpans":[{"spans":[{"traceId":"6b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /",
		"kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000"}]}]}]}`)
	export := func(token string) int {
		req, _ := http.NewRequest("POST", "http://"+h.Srv.OTLPAddr()+"/v1/traces", bytes.NewReader(doc))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := export(""); st != 401 {
		t.Errorf("export without a token: %d, want 401", st)
	}
	if st := export("tg_not-a-token"); st != 401 {
		t.Errorf("export with an unknown token: %d, want 401", st)
	}
	if st := export(h.Token); st != 200 {
		t.Fatalf("export with the admin token: %d, want 200", st)
	}
	if _, err := server.New(server.Config{OTLPAuth: "maybe"}); err == nil {
		t.Error(`OTLPAuth "maybe" accepted`)
	}
}
