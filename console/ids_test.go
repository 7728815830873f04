package console_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/server/servertest"
)

// The IDs page lists tags with the server's buffer and the leased worker
// numbers; its form creates a tag.
func TestIDsPage(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	c, err := idgen.Dial(ctx, idgen.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Next(ctx, "orders", 5); err != nil {
		t.Fatal(err)
	}
	l, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Holder: "billing-7"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hc, get := adminSession(t, h)
	body := get("/ids")
	for _, want := range []string{"orders", "6 in [1, 1001)", "twitter/worker", "billing-7", "leased"} {
		if !strings.Contains(body, want) {
			t.Fatalf("IDs page lacks %q:\n%.4000s", want, body)
		}
	}
	form := url.Values{"csrf": {csrfOf(t, body)}, "tag": {"users"}, "start": {"5000"}, "step": {"20"}}
	req, _ := http.NewRequest("POST", h.URL+"/ids/tags", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", h.URL+"/ids")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if sg, err := c.Segment(ctx, "users", 0); err != nil || sg.Start != 5000 || sg.End != 5020 {
		t.Fatalf("tag made on the page: %+v %v", sg, err)
	}
	form.Set("step", "x")
	req, _ = http.NewRequest("POST", h.URL+"/ids/tags", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", h.URL+"/ids")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "step &#34;x&#34;: want a whole number") {
		t.Fatalf("a bad step on the form: status %d, page lacks the reason:\n%.3000s", resp.StatusCode, b)
	}
}
