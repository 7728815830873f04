package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/txn"
)

// The transactions pages list a parked saga under failed, show its
// branches and timeline, and its Retry button resumes it (audited).
func TestTxnPages(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	var down atomic.Bool
	down.Store(true)
	part := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() && strings.HasSuffix(r.URL.Path, "/ship") {
			http.Error(w, "warehouse offline", http.StatusServiceUnavailable)
			return
		}
		txn.WriteResult(w, nil)
	}))
	defer part.Close()
	c, err := txn.Dial(ctx, txn.Config{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token, App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, err := c.NewSaga(txn.Options{RetryMs: 10, RetryMaxMs: 20, MaxAttempts: 2}).
		Add(part.URL+"/pay", part.URL+"/refund", nil).
		Add(part.URL+"/ship", part.URL+"/unship", nil).
		Submit(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, "the saga parked", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusFailed
	})
	hc, get := adminSession(t, h)
	body := get("/txns?status=failed")
	for _, want := range []string{g.XID, `id="txn-counts"`, "warehouse offline"} {
		if !strings.Contains(body, want) {
			t.Fatalf("transactions page lacks %q:\n%.3000s", want, body)
		}
	}
	body = get("/txns/" + g.XID)
	for _, want := range []string{`id="txn-timeline"`, "/ship", "HTTP 503", "Retry now", "Abort"} {
		if !strings.Contains(body, want) {
			t.Fatalf("transaction page lacks %q:\n%.3000s", want, body)
		}
	}
	down.Store(false)
	form := url.Values{"csrf": {csrfOf(t, body)}}
	req, _ := http.NewRequest("POST", h.URL+"/txns/"+g.XID+"/retry", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", h.URL+"/txns/"+g.XID)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wait.For(t, 15*time.Second, "the saga committed after the retry", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusCommitted
	})
	if body := get("/audit"); !strings.Contains(body, "txn.retry") {
		t.Fatalf("retry not audited:\n%.3000s", body)
	}
	if body := get("/txns/" + g.XID); strings.Contains(body, "Retry now") {
		t.Fatalf("a committed transaction offers Retry:\n%.3000s", body)
	}
}
