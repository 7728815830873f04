package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/store"
)

func do(t *testing.T, method, url string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer test")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestAlertFiresNotifiesAndResolves: an error-ratio rule set through the
// API fires when a service starts failing — its webhook gets the
// notification once, not again after an acknowledgement — and resolves
// when the window has no more failures; rules and silences survive a
// restart; every change is audited.
func TestAlertFiresNotifiesAndResolves(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}))
	defer hook.Close()
	notes := func() []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return append([]map[string]any(nil), got...)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	var audits atomic.Int32
	dir := t.TempDir()
	cfg := Config{Dir: dir, Alerts: Alerts{EvalEvery: 20 * time.Millisecond, Repeat: 50 * time.Millisecond, WebhookAllow: []string{"127.0.0.1"}},
		Audit: func(_ context.Context, e audit.Entry) { audits.Add(1) }}
	cfg.Rollup.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	s, api := collector(t, cfg)

	rule := trace.AlertRule{Name: "pay-errors", Service: "pay", Metric: trace.ErrorRatio, Threshold: 0.2, Window: 2, Webhook: hook.URL}
	if code, b := do(t, "PUT", api+"/api/v1/trace/alerts/pay-errors", rule); code != 200 {
		t.Fatalf("set rule: %d %s", code, b)
	}
	if code, b := do(t, "PUT", api+"/api/v1/trace/alerts/bad", trace.AlertRule{Name: "bad", Service: "pay", Metric: "p42"}); code != 400 || !bytes.Contains(b, []byte("metric")) {
		t.Fatalf("a bad rule: %d %s", code, b)
	}
	// A webhook to an internal address the policy does not allow is refused.
	if code, b := do(t, "PUT", api+"/api/v1/trace/alerts/inner", trace.AlertRule{Name: "inner", Service: "pay", Metric: trace.P99, Threshold: 1, Webhook: "http://10.1.2.3/hook"}); code != 400 {
		t.Fatalf("an internal webhook: %d %s", code, b)
	}
	// Half of pay's calls fail.
	var spans []store.Span
	for i := range 20 {
		sp := store.Span{TraceID: store.TraceID{byte(i), 1}, SpanID: store.SpanID{byte(i), 1}, Service: "pay", Name: "charge", Kind: store.KindServer,
			StartUnixNano: uint64(clock.Load()), DurationNano: uint64(time.Millisecond)}
		if i%2 == 0 {
			sp.Status = store.StatusError
		}
		spans = append(spans, sp)
	}
	s.Ingest(spans)
	wait.For(t, 10*time.Second, "the firing notification", func() bool { return len(notes()) >= 1 })
	if n := notes()[0]; n["status"] != "firing" || n["alert"] != "pay-errors" || n["value"] != 0.5 {
		t.Fatalf("notification %v", n)
	}
	// Not acknowledged: reminded (Repeat 50 ms); then acknowledged: quiet.
	wait.For(t, 10*time.Second, "a reminder", func() bool { return len(notes()) >= 2 })
	if code, b := do(t, "POST", api+"/api/v1/trace/alerts/pay-errors/ack", nil); code != 204 {
		t.Fatalf("ack: %d %s", code, b)
	}
	var list trace.AlertsReply
	if get(t, api+"/api/v1/trace/alerts", &list) != 200 || len(list.Alerts) != 1 || list.Alerts[0].Status != "firing" || list.Alerts[0].AckedBy == "" {
		t.Fatalf("alerts %+v", list)
	}
	n := len(notes())
	wait.For(t, 10*time.Second, "evaluations after the acknowledgement", func() bool {
		var l trace.AlertsReply
		get(t, api+"/api/v1/trace/alerts", &l)
		return l.Alerts[0].Calls == 20
	})
	// The window moves on: no failures in it any more.
	clock.Add(int64(5 * time.Minute))
	wait.For(t, 10*time.Second, "the resolved notification", func() bool {
		ns := notes()
		return len(ns) > n && ns[len(ns)-1]["status"] == "resolved"
	})
	// Acknowledged, it was not reminded again (one reminder may have been
	// on its way when the acknowledgement came).
	if firing := len(notes()) - 1; firing > n+1 {
		t.Errorf("%d firing notifications, %d by the acknowledgement: reminded after it", firing, n)
	}
	if code, _ := do(t, "POST", api+"/api/v1/trace/alerts/pay-errors/ack", nil); code != 409 {
		t.Errorf("ack of a resolved alert: %d, want 409", code)
	}
	if code, _ := do(t, "POST", api+"/api/v1/trace/alerts/pay-errors/silence", trace.SilenceRequest{For: "1h"}); code != 204 {
		t.Errorf("silence: %d", code)
	}
	if code, _ := do(t, "POST", api+"/api/v1/trace/alerts/nope/silence", trace.SilenceRequest{For: "1h"}); code != 404 {
		t.Errorf("silence of an unknown rule: %d", code)
	}
	if audits.Load() < 3 {
		t.Errorf("%d audit entries, want the set, the ack and the silence", audits.Load())
	}
	// A restart keeps the rule and its silence.
	s.Close()
	s2, api2 := collector(t, Config{Dir: dir})
	_ = s2
	var after trace.AlertsReply
	if get(t, api2+"/api/v1/trace/alerts", &after) != 200 || len(after.Alerts) != 1 || after.Alerts[0].Status != "silenced" || after.Alerts[0].Rule.Webhook != hook.URL {
		t.Fatalf("after a restart: %+v", after)
	}
	if code, _ := do(t, "DELETE", api2+"/api/v1/trace/alerts/pay-errors", nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
}
