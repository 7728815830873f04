package server_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
)

// fetchCount reads how many fetches (GET …/configs/…) the server answered.
func fetchCount(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "tangram_http_requests_total{") && strings.Contains(l, `route="GET /api/v1/config/configs/{env}/{app}/{cluster}/{ns}"`) {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			n += int(v)
		}
	}
	return n
}

// TestWatchCarriesContent: a watch that asks for content is answered with
// what each watcher would fetch — gray rules matched on its IP, secrets in
// clear only for a caller allowed to read them — and one that does not ask
// gets the bare notification.
func TestWatchCarriesContent(t *testing.T) {
	h := servertest.Start(t)
	admin := h.Client()
	ctx := context.Background()
	mustDo(t, admin, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, admin, "application", "color", "blue")
	setItem(t, admin, "application", "size", "m")
	mustDo(t, admin, "PUT", ns("application")+"/items/db.password", map[string]any{"value": "s3cr3t", "secret": true}, nil)
	publish(t, admin, "application", "base")
	mustDo(t, admin, "POST", ns("application")+"/gray", config.GrayEdit{Set: []config.Item{{Key: "color", Value: "green"}}, Rules: &config.Rules{IPs: []string{"10.1.2.3"}}}, nil)
	mustDo(t, admin, "POST", ns("application")+"/gray/publish", config.PublishRequest{}, nil)

	var tok struct{ Token string }
	mustDo(t, admin, "POST", "/api/v1/auth/users", map[string]any{"name": "vic", "token_only": true, "bindings": []map[string]string{{"role": "viewer", "app": "demo"}}}, nil)
	mustDo(t, admin, "POST", "/api/v1/auth/tokens", map[string]string{"user": "vic", "name": "t"}, &tok)
	viewer := apiclient.New(h.URL, tok.Token)
	mustDo(t, admin, "POST", "/api/v1/auth/users", map[string]any{"name": "demo-app", "token_only": true, "bindings": []map[string]string{{"role": "client", "env": "dev", "app": "demo"}}}, nil)
	mustDo(t, admin, "POST", "/api/v1/auth/tokens", map[string]string{"user": "demo-app", "name": "t"}, &tok)
	app := apiclient.New(h.URL, tok.Token)

	req := func(id int64, ip string, content bool) config.WatchRequest {
		return config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application", ID: id}}, Content: content, IP: ip, Instance: "i-" + ip}
	}
	// Answered at once (the client holds nothing yet), with content.
	var first struct{ Changes []config.Notification }
	mustDo(t, app, "POST", "/api/v1/config/watch", req(-1, "10.1.2.3", true), &first)
	if len(first.Changes) != 1 || first.Changes[0].Config == nil {
		t.Fatalf("first answer carries no content: %+v", first)
	}
	if cfg := first.Changes[0].Config; cfg.Items["color"] != "green" || !cfg.Gray || cfg.Items["db.password"] != "s3cr3t" || cfg.NotificationID != first.Changes[0].ID {
		t.Fatalf("first answer's content: %+v", cfg)
	}
	id := first.Changes[0].ID

	// Held watches, answered by one release's fan-out.
	type watcher struct {
		name    string
		c       *apiclient.Client
		req     config.WatchRequest
		check   func(*config.Payload) bool
		answer  chan config.Notification
		wantCfg bool
	}
	gray := func(p *config.Payload) bool {
		return p.Items["color"] == "green" && p.Items["size"] == "l" && p.Gray && p.Items["db.password"] == "s3cr3t"
	}
	main := func(p *config.Payload) bool {
		return p.Items["color"] == "blue" && p.Items["size"] == "l" && !p.Gray && p.Items["db.password"] == "s3cr3t"
	}
	masked := func(p *config.Payload) bool {
		return p.Items["color"] == "blue" && p.Items["size"] == "l" && p.Items["db.password"] == config.Masked
	}
	ws := []*watcher{
		{name: "gray client", c: app, req: req(id, "10.1.2.3", true), check: gray, wantCfg: true},
		{name: "second gray client", c: app, req: req(id, "10.1.2.3", true), check: gray, wantCfg: true},
		{name: "main client", c: app, req: req(id, "10.9.9.9", true), check: main, wantCfg: true},
		{name: "viewer", c: viewer, req: req(id, "10.9.9.8", true), check: masked, wantCfg: true},
		{name: "no content asked", c: app, req: req(id, "10.9.9.7", false)},
	}
	for _, w := range ws {
		w.answer = make(chan config.Notification, 1)
		go func() {
			var out struct{ Changes []config.Notification }
			if err := w.c.Do(ctx, "POST", "/api/v1/config/watch?timeout=30s", w.req, &out); err != nil || len(out.Changes) != 1 {
				t.Errorf("%s: %v %+v", w.name, err, out)
				close(w.answer)
				return
			}
			w.answer <- out.Changes[0]
		}()
	}
	wait.For(t, 5*time.Second, "the watches to be held", func() bool { return h.Srv.Config().Watchers() == len(ws) })
	setItem(t, admin, "application", "size", "l")
	publish(t, admin, "application", "size l")
	for _, w := range ws {
		select {
		case n, ok := <-w.answer:
			if !ok {
				t.FailNow()
			}
			if n.ID <= id {
				t.Errorf("%s: answered id %d, held %d", w.name, n.ID, id)
			}
			if !w.wantCfg {
				if n.Config != nil {
					t.Errorf("%s: content it did not ask for: %+v", w.name, n.Config)
				}
				continue
			}
			if n.Config == nil || !w.check(n.Config) || n.Config.NotificationID != n.ID {
				t.Errorf("%s: content %+v", w.name, n.Config)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no answer within 5 s of the release", w.name)
		}
	}
	// Answered with content, the instances are recorded as holding the
	// release, as a fetch records them.
	wait.For(t, 5*time.Second, "the watchers to be listed with the new release", func() bool {
		var out struct{ Items []config.Instance }
		mustDo(t, admin, "GET", ns("application")+"/instances", nil, &out)
		n := 0
		for _, in := range out.Items {
			if in.Instance == "i-10.1.2.3" && in.Gray || in.Instance == "i-10.9.9.9" && !in.Gray {
				n++
			}
		}
		return n == 2
	})

	// Bad input names the problem.
	bad := req(id, strings.Repeat("1", 65), true)
	wantStatus(t, app.Do(ctx, "POST", "/api/v1/config/watch", bad, nil), 400, "ip")
	bad = req(id, "10.0.0.1", true)
	bad.Labels = []string{strings.Repeat("x", 1100)}
	wantStatus(t, app.Do(ctx, "POST", "/api/v1/config/watch", bad, nil), 400, "labels")
}

// TestClientAppliesWatchContent: the SDK takes a change from the watch
// answer — the application's callback runs and no fetch reaches the server.
func TestClientAppliesWatchContent(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, c, "application", "greeting", "hello")
	publish(t, c, "application", "first")
	cl, err := config.NewClient(context.Background(), config.ClientConfig{Servers: []string{h.URL}, Token: h.Token, Env: "dev", App: "demo",
		CacheDir: servertest.CacheDir(t), Instance: "sdk-1", WatchTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	events := make(chan config.ChangeEvent, 10)
	cl.OnChange(func(ev config.ChangeEvent) { events <- ev })
	wait.For(t, 5*time.Second, "the client's watch to be held", func() bool { return h.Srv.Config().Watchers() == 1 })
	before := fetchCount(t, h.URL)
	for i, v := range []string{"hi", "hey", "yo"} {
		setItem(t, c, "application", "greeting", v)
		publish(t, c, "application", strconv.Itoa(i))
		select {
		case ev := <-events:
			if len(ev.Changes) != 1 || ev.Changes[0].New != v {
				t.Fatalf("change %d: %+v", i, ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("change %d: no event within 5 s", i)
		}
		if got := cl.String("greeting", ""); got != v {
			t.Fatalf("greeting %q, want %q", got, v)
		}
	}
	if after := fetchCount(t, h.URL); after != before {
		t.Fatalf("the client fetched %d times for changes its watch answers carried", after-before)
	}
}
