package console_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/lock"
	"github.com/tangram-dev/tangram/server/servertest"
)

// The locks page shows a held lock with its token and queue, and the
// sessions; ending a session there frees its lock.
func TestLocksPage(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	c, err := lock.Dial(ctx, lock.Config{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token, Owner: "report-job"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Mutex("demo/report").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hc, get := adminSession(t, h)
	body := get("/locks")
	for _, want := range []string{"demo/report", "report-job", c.Session(), `id="lock-sessions"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("locks page lacks %q:\n%.3000s", want, body)
		}
	}
	form := url.Values{"csrf": {csrfOf(t, body)}}
	req, _ := http.NewRequest("POST", h.URL+"/locks/sessions/"+c.Session()+"/end", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", h.URL+"/locks")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the lease outlived the session ended on the page")
	}
	if !errors.Is(l.Err(), lock.ErrLockLost) {
		t.Fatalf("lease Err %v", l.Err())
	}
	if body := get("/locks"); !strings.Contains(body, "No lock is held.") {
		t.Fatalf("lock still listed:\n%.3000s", body)
	}
}
