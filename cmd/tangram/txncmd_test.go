package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/txn"
)

// A saga whose participant is down parks as failed after its attempts;
// the CLI lists it, shows its timeline, and resumes it once the
// participant is back.
func TestTxnCLI(t *testing.T) {
	h := servertest.Start(t)
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
	c, err := txn.Dial(context.Background(), txn.Config{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, err := c.NewSaga(txn.Options{RetryMs: 10, RetryMaxMs: 20, MaxAttempts: 2}).
		Add(part.URL+"/pay", part.URL+"/refund", map[string]int{"order": 7}).
		Add(part.URL+"/ship", part.URL+"/unship", map[string]int{"order": 7}).
		Submit(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, "the saga parked", func() bool {
		x, err := c.Get(context.Background(), g.XID)
		return err == nil && x.Status == txn.StatusFailed
	})
	if out := run(t, h, "txn", "list", "--status", "failed"); !strings.Contains(out, g.XID) || !strings.Contains(out, "warehouse offline") {
		t.Fatalf("list: %s", out)
	}
	out := run(t, h, "txn", "get", g.XID)
	for _, want := range []string{"failed", "DECISION", "commit", "/ship", "error", "HTTP 503"} {
		if !strings.Contains(out, want) {
			t.Fatalf("get: no %q in\n%s", want, out)
		}
	}
	if _, err := runErr(h, "txn", "get", "no-such-xid"); err == nil || !strings.Contains(err.Error(), "transaction no-such-xid") {
		t.Fatalf("get unknown: %v", err)
	}
	down.Store(false)
	if out := run(t, h, "txn", "retry", g.XID); !strings.Contains(out, "committed") {
		t.Fatalf("retry: %s", out)
	}
	if _, err := runErr(h, "txn", "abort", g.XID); err == nil || !strings.Contains(err.Error(), "committed") {
		t.Fatalf("abort of a committed saga: %v", err)
	}
}
