package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
)

const nsBase = "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces/"

func ns(name string) string { return nsBase + name }

func mustDo(t *testing.T, c *apiclient.Client, method, path string, body, out any) {
	t.Helper()
	if err := c.Do(context.Background(), method, path, body, out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

func wantStatus(t *testing.T, err error, status int, contains string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %d, got %v", status, err)
	}
	if ae.Status != status || !strings.Contains(ae.Message, contains) {
		t.Fatalf("want %d containing %q, got %d %q", status, contains, ae.Status, ae.Message)
	}
}

func setItem(t *testing.T, c *apiclient.Client, nsName, key, value string) {
	t.Helper()
	mustDo(t, c, "PUT", ns(nsName)+"/items/"+key, map[string]any{"value": value}, nil)
}

func publish(t *testing.T, c *apiclient.Client, nsName, comment string) config.Release {
	t.Helper()
	var rel config.Release
	mustDo(t, c, "POST", ns(nsName)+"/publish", config.PublishRequest{Comment: comment}, &rel)
	return rel
}

func fetch(t *testing.T, c *apiclient.Client, q string) config.Payload {
	t.Helper()
	var cfg config.Payload
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/application?"+q, nil, &cfg)
	return cfg
}

// TestConfigFlowAllStores runs the core flow (the README tour through the
// API) on SQLite, PostgreSQL and MariaDB.
func TestConfigFlowAllStores(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			h := servertest.Start(t, servertest.WithStore(storetest.DSN(t, d)))
			c := h.Client()
			mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
			setItem(t, c, "application", "greeting", "hello")
			r1 := publish(t, c, "application", "first")
			var it config.Item
			mustDo(t, c, "GET", ns("application")+"/items/greeting", nil, &it)
			if it.Value != "hello" {
				t.Fatalf("released greeting = %q", it.Value)
			}
			setItem(t, c, "application", "greeting", "hi")
			r2 := publish(t, c, "application", "second")
			if r2.Version != r1.Version+1 || len(r2.Changes) != 1 || r2.Changes[0].Op != "modified" {
				t.Fatalf("second release %+v", r2)
			}
			var rb config.Release
			mustDo(t, c, "POST", ns("application")+"/rollback", config.RollbackRequest{}, &rb)
			if rb.Kind != config.KindRollback || rb.BaseID != r1.ID {
				t.Fatalf("rollback release %+v", rb)
			}
			mustDo(t, c, "GET", ns("application")+"/items/greeting", nil, &it)
			if it.Value != "hello" {
				t.Fatalf("after rollback greeting = %q, want hello", it.Value)
			}
			// History is never rewritten: three releases.
			var hist api.List[config.Release]
			mustDo(t, c, "GET", ns("application")+"/releases", nil, &hist)
			if len(hist.Items) != 3 {
				t.Fatalf("history has %d releases, want 3", len(hist.Items))
			}
			// The draft follows the rollback: nothing pending.
			var diff api.List[config.Change]
			mustDo(t, c, "GET", ns("application")+"/diff", nil, &diff)
			if len(diff.Items) != 0 {
				t.Fatalf("pending after rollback: %+v", diff.Items)
			}
			// Diff any two releases.
			mustDo(t, c, "GET", fmt.Sprintf("%s/diff?from=%d&to=%d", ns("application"), r1.ID, r2.ID), nil, &diff)
			if len(diff.Items) != 1 || diff.Items[0].Old != "hello" || diff.Items[0].New != "hi" {
				t.Fatalf("diff r1..r2 = %+v", diff.Items)
			}
			cfg := fetch(t, c, "instance=i1")
			if cfg.Items["greeting"] != "hello" {
				t.Fatalf("client sees %v", cfg.Items)
			}
		})
	}
}

func TestRollbackChain(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	for _, v := range []string{"a", "b", "c"} {
		setItem(t, c, "application", "k", v)
		publish(t, c, "application", v)
	}
	get := func() string {
		var it config.Item
		mustDo(t, c, "GET", ns("application")+"/items/k", nil, &it)
		return it.Value
	}
	mustDo(t, c, "POST", ns("application")+"/rollback", config.RollbackRequest{}, nil)
	if v := get(); v != "b" {
		t.Fatalf("first rollback: %q, want b", v)
	}
	mustDo(t, c, "POST", ns("application")+"/rollback", config.RollbackRequest{}, nil)
	if v := get(); v != "a" {
		t.Fatalf("second rollback: %q, want a", v)
	}
	err := c.Do(context.Background(), "POST", ns("application")+"/rollback", config.RollbackRequest{}, nil)
	wantStatus(t, err, 400, "no earlier release")
	// Roll back "forward" to a named release.
	var hist api.List[config.Release]
	mustDo(t, c, "GET", ns("application")+"/releases?limit=100", nil, &hist)
	var cID int64
	for _, r := range hist.Items {
		if r.Comment == "c" {
			cID = r.ID
		}
	}
	mustDo(t, c, "POST", ns("application")+"/rollback", config.RollbackRequest{To: cID}, nil)
	if v := get(); v != "c" {
		t.Fatalf("rollback to c: %q", v)
	}
}

func TestBadInput(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	mustDo(t, c, "POST", "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces", config.NamespaceSpec{Name: "db.yaml"}, nil)
	mustDo(t, c, "POST", "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces", config.NamespaceSpec{Name: "svc", Format: "json"}, nil)

	// Invalid yaml is refused at publish with the line of the error.
	setItem(t, c, "db.yaml", "content", "a: 1\nb: [1, 2\nc: 3\n")
	err := c.Do(ctx, "POST", ns("db.yaml")+"/publish", config.PublishRequest{}, nil)
	wantStatus(t, err, 400, "line")
	setItem(t, c, "svc", "content", "{\n  \"a\": 1,\n  \"b\": }\n")
	err = c.Do(ctx, "POST", ns("svc")+"/publish", config.PublishRequest{}, nil)
	wantStatus(t, err, 400, "invalid json at line 3")
	// Items of document namespaces are only "content".
	err = c.Do(ctx, "PUT", ns("svc")+"/items/other", map[string]string{"value": "x"}, nil)
	wantStatus(t, err, 400, `"content"`)
	// Values over the limit.
	err = c.Do(ctx, "PUT", ns("application")+"/items/big", map[string]string{"value": strings.Repeat("x", config.MaxValueBytes+1)}, nil)
	wantStatus(t, err, 413, "limit")
	// Bad keys and names.
	err = c.Do(ctx, "PUT", ns("application")+"/items/bad%20key", map[string]string{"value": "x"}, nil)
	wantStatus(t, err, 400, "key")
	err = c.Do(ctx, "POST", "/api/v1/config/apps", config.App{Name: "../etc"}, nil)
	wantStatus(t, err, 400, "app name")
	// Unknown env/app/namespace: 404 naming it.
	err = c.Do(ctx, "GET", "/api/v1/config/envs/nope/apps/demo/clusters/default/namespaces/application", nil, nil)
	wantStatus(t, err, 404, `environment "nope"`)
	err = c.Do(ctx, "GET", "/api/v1/config/envs/dev/apps/ghost/clusters/default/namespaces/application", nil, nil)
	wantStatus(t, err, 404, `app "ghost"`)
	err = c.Do(ctx, "GET", ns("missing"), nil, nil)
	wantStatus(t, err, 404, `namespace "missing"`)
	// Malformed JSON bodies and unknown fields.
	err = c.Do(ctx, "POST", "/api/v1/config/apps", map[string]any{"name": "x", "bogus": 1}, nil)
	wantStatus(t, err, 400, "bogus")
	// Duplicate app.
	err = c.Do(ctx, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	wantStatus(t, err, 409, "demo")
	// Optimistic concurrency: a stale draft version gets 409 with the current one.
	var v map[string]int64
	mustDo(t, c, "PUT", ns("application")+"/items/k", map[string]any{"value": "1"}, &v)
	cur := v["draft_version"]
	mustDo(t, c, "PUT", ns("application")+"/items/k", map[string]any{"value": "2", "version": cur}, nil)
	err = c.Do(ctx, "PUT", ns("application")+"/items/k", map[string]any{"value": "3", "version": cur}, nil)
	wantStatus(t, err, 409, fmt.Sprintf("current version is %d", cur+1))
}

func TestWatchPush(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, c, "application", "k", "v1")
	publish(t, c, "application", "one")

	// A watch from -1 returns the current id at once.
	var first struct{ Changes []config.Notification }
	mustDo(t, c, "POST", "/api/v1/config/watch", config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application", ID: -1}}}, &first)
	if len(first.Changes) != 1 || first.Changes[0].ID <= 0 {
		t.Fatalf("initial watch: %+v", first)
	}
	id := first.Changes[0].ID
	// A watch with the current id times out empty.
	start := time.Now()
	var none struct{ Changes []config.Notification }
	mustDo(t, c, "POST", "/api/v1/config/watch?timeout=300ms", config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application", ID: id}}}, &none)
	if len(none.Changes) != 0 || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("idle watch returned %+v after %v", none, time.Since(start))
	}
	// A held watch is answered as soon as a release lands.
	got := make(chan []config.Notification, 1)
	go func() {
		var out struct{ Changes []config.Notification }
		err := c.Do(ctx, "POST", "/api/v1/config/watch?timeout=30s", config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application", ID: id}}}, &out)
		if err != nil {
			t.Error(err)
		}
		got <- out.Changes
	}()
	wait.For(t, 5*time.Second, "the watch to be held", func() bool { return h.Srv.Config().Watchers() > 0 })
	setItem(t, c, "application", "k", "v2")
	pubAt := time.Now()
	publish(t, c, "application", "two")
	select {
	case ch := <-got:
		if len(ch) != 1 || ch[0].ID <= id {
			t.Fatalf("watch answer %+v", ch)
		}
		t.Logf("notified %v after publish returned", time.Since(pubAt))
	case <-time.After(5 * time.Second):
		t.Fatal("watch not answered within 5s of the publish")
	}
	// Watch with a named cluster also hears default-cluster releases.
	var cl struct{ Changes []config.Notification }
	mustDo(t, c, "POST", "/api/v1/config/watch", config.WatchRequest{Env: "dev", App: "demo", Cluster: "dc1", Namespaces: []config.Notification{{NS: "application", ID: id}}}, &cl)
	if len(cl.Changes) != 1 {
		t.Fatalf("cluster watch: %+v", cl)
	}
	// A client that hangs up stops holding a watch at once (no waiting for
	// the hold to end).
	if runtime.GOOS == "linux" {
		conn, err := net.Dial("tcp", h.Srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		var cur struct{ Changes []config.Notification }
		mustDo(t, c, "POST", "/api/v1/config/watch", config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application", ID: -1}}}, &cur)
		body := fmt.Sprintf(`{"env":"dev","app":"demo","namespaces":[{"ns":"application","id":%d}]}`, cur.Changes[0].ID)
		fmt.Fprintf(conn, "POST /api/v1/config/watch?timeout=60s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", h.Token, len(body), body)
		wait.For(t, 5*time.Second, "raw watch to be held", func() bool { return h.Srv.Config().Watchers() == 1 })
		conn.Close()
		wait.For(t, 5*time.Second, "hung-up watch to be dropped", func() bool { return h.Srv.Config().Watchers() == 0 })
	}
	// Bad watch input.
	err := c.Do(ctx, "POST", "/api/v1/config/watch", config.WatchRequest{Env: "dev", App: "demo"}, nil)
	wantStatus(t, err, 400, "at least one namespace")
	err = c.Do(ctx, "POST", "/api/v1/config/watch?timeout=soon", config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application"}}}, nil)
	wantStatus(t, err, 400, "timeout")
	// The watch rules every watch API shares: at most 60 s (refused above,
	// not silently shortened), and 404 for a target that does not exist
	// (a typo must not look like an empty config).
	for _, path := range []string{"/api/v1/config/watch?timeout=10m"} {
		err = c.Do(ctx, "POST", path, config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application"}}}, nil)
		wantStatus(t, err, 400, "up to 1m0s")
	}
	err = c.Do(ctx, "GET", "/api/v1/registry/services/public/default/web/watch?timeout=10m", nil, nil)
	wantStatus(t, err, 400, "up to 1m0s")
	for _, bad := range []config.WatchRequest{
		{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "applicaton"}}},
		{Env: "dev", App: "dmeo", Namespaces: []config.Notification{{NS: "application"}}},
		{Env: "dve", App: "demo", Namespaces: []config.Notification{{NS: "application"}}},
	} {
		err = c.Do(ctx, "POST", "/api/v1/config/watch?timeout=1s", bad, nil)
		wantStatus(t, err, 404, "")
	}
}

func TestGrayRelease(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, c, "application", "color", "blue")
	setItem(t, c, "application", "size", "m")
	setItem(t, c, "application", "old", "x")
	publish(t, c, "application", "base")

	var g config.Gray
	mustDo(t, c, "POST", ns("application")+"/gray", config.GrayEdit{
		Set:    []config.Item{{Key: "color", Value: "green"}, {Key: "new", Value: "n"}},
		Delete: []string{"old"},
		Rules:  &config.Rules{IPs: []string{"10.1.2.3", "192.168.0.0/24"}, Labels: []string{"canary"}},
	}, &g)
	if len(g.Changes) != 3 {
		t.Fatalf("gray changes: %+v", g.Changes)
	}
	// Not published yet: nobody sees it.
	if cfg := fetch(t, c, "ip=10.1.2.3&instance=a"); cfg.Items["color"] != "blue" || cfg.Gray {
		t.Fatalf("unpublished gray visible: %+v", cfg)
	}
	mustDo(t, c, "POST", ns("application")+"/gray/publish", config.PublishRequest{}, nil)
	cases := []struct {
		q    string
		gray bool
	}{
		{"ip=10.1.2.3&instance=a", true},
		{"ip=192.168.0.77&instance=b", true},
		{"ip=10.9.9.9&labels=x,canary&instance=c", true},
		{"ip=10.9.9.9&instance=d", false},
		{"ip=10.1.2.4&labels=stable&instance=e", false},
	}
	for _, tc := range cases {
		cfg := fetch(t, c, tc.q)
		if tc.gray {
			if cfg.Items["color"] != "green" || cfg.Items["new"] != "n" || cfg.Items["size"] != "m" || cfg.Items["old"] != "" || !cfg.Gray {
				t.Errorf("%s: gray client sees %+v", tc.q, cfg.Items)
			}
		} else if cfg.Items["color"] != "blue" || cfg.Items["old"] != "x" || cfg.Items["new"] != "" || cfg.Gray {
			t.Errorf("%s: non-gray client sees %+v", tc.q, cfg.Items)
		}
	}
	// Main releases keep flowing under the gray overlay.
	setItem(t, c, "application", "size", "l")
	publish(t, c, "application", "size l")
	if cfg := fetch(t, c, "ip=10.1.2.3"); cfg.Items["size"] != "l" || cfg.Items["color"] != "green" {
		t.Fatalf("gray after main release: %+v", cfg.Items)
	}
	// Percentages are stable per instance.
	mustDo(t, c, "POST", ns("application")+"/gray", config.GrayEdit{Rules: &config.Rules{Percent: 30}}, nil)
	mustDo(t, c, "POST", ns("application")+"/gray/publish", config.PublishRequest{}, nil)
	inGray := 0
	coord := config.Coord{Env: "dev", App: "demo", Cluster: "default", NS: "application"}
	for i := 0; i < 60; i++ {
		inst := fmt.Sprintf("inst-%d", i)
		cfg := fetch(t, c, "ip=10.9.9.9&instance="+inst)
		want := config.Bucket(coord, inst) < 30
		if cfg.Gray != want {
			t.Fatalf("%s: gray=%v want %v", inst, cfg.Gray, want)
		}
		if cfg.Gray {
			inGray++
		}
	}
	if inGray == 0 || inGray == 60 {
		t.Fatalf("30%% rule selected %d of 60", inGray)
	}
	// Promote merges into the main release for everyone and ends the branch.
	var rel config.Release
	mustDo(t, c, "POST", ns("application")+"/gray/promote", config.PublishRequest{}, &rel)
	if rel.Kind != config.KindPromote {
		t.Fatalf("promote kind %q", rel.Kind)
	}
	if cfg := fetch(t, c, "ip=10.9.9.9&instance=zzz"); cfg.Items["color"] != "green" || cfg.Items["old"] != "" || cfg.Gray {
		t.Fatalf("after promote: %+v", cfg)
	}
	err := c.Do(ctx, "GET", ns("application")+"/gray", nil, nil)
	wantStatus(t, err, 404, "no gray branch")
	// History shows each main release's changes against the main release it
	// replaced (not against the gray release listed between them).
	var hist api.List[config.Release]
	mustDo(t, c, "GET", ns("application")+"/releases?limit=2", nil, &hist)
	if hist.Items[0].Kind != config.KindPromote || len(hist.Items[0].Changes) != 3 || hist.Items[1].Kind != config.KindGray || len(hist.Items[1].Changes) != 3 {
		t.Fatalf("history changes: %+v", hist.Items)
	}
	var diff api.List[config.Change]
	mustDo(t, c, "GET", ns("application")+"/diff", nil, &diff)
	if len(diff.Items) != 0 {
		t.Fatalf("draft differs from promoted release: %+v", diff.Items)
	}

	// Gray works for document namespaces too; abandon returns clients to main.
	mustDo(t, c, "POST", "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces", config.NamespaceSpec{Name: "app.yaml"}, nil)
	setItem(t, c, "app.yaml", "content", "level: info\n")
	publish(t, c, "app.yaml", "y1")
	err = c.Do(ctx, "POST", ns("app.yaml")+"/gray", config.GrayEdit{Set: []config.Item{{Key: "content", Value: "level: [debug\n"}}}, nil)
	wantStatus(t, err, 400, "line")
	mustDo(t, c, "POST", ns("app.yaml")+"/gray", config.GrayEdit{Set: []config.Item{{Key: "content", Value: "level: debug\n"}}, Rules: &config.Rules{Instances: []string{"pod-7"}}}, nil)
	mustDo(t, c, "POST", ns("app.yaml")+"/gray/publish", config.PublishRequest{}, nil)
	var y config.Payload
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/app.yaml?instance=pod-7", nil, &y)
	if y.Content() != "level: debug\n" {
		t.Fatalf("yaml gray: %q", y.Content())
	}
	mustDo(t, c, "POST", ns("app.yaml")+"/gray/abandon", nil, nil)
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/app.yaml?instance=pod-7", nil, &y)
	if y.Content() != "level: info\n" {
		t.Fatalf("after abandon: %q", y.Content())
	}
}

func TestApprovals(t *testing.T) {
	h := servertest.Start(t)
	admin := h.Client()
	ctx := context.Background()
	mustDo(t, admin, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	tok := func(user, role string) *apiclient.Client {
		mustDo(t, admin, "POST", "/api/v1/auth/users", map[string]any{"name": user, "token_only": true, "bindings": []map[string]string{{"role": role, "env": "dev", "app": "demo"}}}, nil)
		var out struct{ Token string }
		mustDo(t, admin, "POST", "/api/v1/auth/tokens", map[string]string{"user": user, "name": "t"}, &out)
		return apiclient.New(h.URL, out.Token)
	}
	alice, bob, eve := tok("alice", "releaser"), tok("bob", "releaser"), tok("eve", "editor")
	mustDo(t, admin, "PATCH", ns("application"), map[string]bool{"require_approval": true}, nil)
	setItem(t, alice, "application", "limit", "10")
	err := alice.Do(ctx, "POST", ns("application")+"/publish", config.PublishRequest{}, nil)
	wantStatus(t, err, 409, "approved release request")
	var req config.ReleaseRequest
	mustDo(t, alice, "POST", ns("application")+"/requests", map[string]string{"comment": "raise limit"}, &req)
	if len(req.Changes) != 1 || req.Changes[0].New != "10" {
		t.Fatalf("request diff %+v", req.Changes)
	}
	path := fmt.Sprintf("%s/requests/%d/", ns("application"), req.ID)
	err = alice.Do(ctx, "POST", path+"approve", config.Decision{}, nil)
	wantStatus(t, err, 403, "own request")
	err = eve.Do(ctx, "POST", path+"approve", config.Decision{}, nil)
	wantStatus(t, err, 403, "release permission")
	var rel config.Release
	mustDo(t, bob, "POST", path+"approve", config.Decision{Comment: "ok"}, &rel)
	if rel.Kind != config.KindApproved || rel.Author != "alice" {
		t.Fatalf("approved release %+v", rel)
	}
	err = bob.Do(ctx, "POST", path+"approve", config.Decision{}, nil)
	wantStatus(t, err, 409, "already approved")
	// A request made stale by another release cannot be approved.
	setItem(t, alice, "application", "limit", "20")
	mustDo(t, alice, "POST", ns("application")+"/requests", map[string]string{}, &req)
	setItem(t, bob, "application", "limit", "30")
	var emergency config.Release
	mustDo(t, bob, "POST", ns("application")+"/publish", config.PublishRequest{Emergency: true, Comment: "hotfix"}, &emergency)
	if emergency.Kind != config.KindEmergency {
		t.Fatalf("emergency kind %q", emergency.Kind)
	}
	err = alice.Do(ctx, "POST", fmt.Sprintf("%s/requests/%d/approve", ns("application"), req.ID), config.Decision{}, nil)
	wantStatus(t, err, 403, "own request")
	err = bob.Do(ctx, "POST", fmt.Sprintf("%s/requests/%d/approve", ns("application"), req.ID), config.Decision{}, nil)
	wantStatus(t, err, 409, "was released since")
	// The emergency publish is audited as such.
	var log api.List[audit.Entry]
	mustDo(t, admin, "GET", "/api/v1/audit?action=config.publish.emergency", nil, &log)
	if len(log.Items) != 1 || log.Items[0].Actor != "bob" {
		t.Fatalf("emergency audit: %+v", log.Items)
	}
	// Emergency publish can be switched off per environment.
	mustDo(t, admin, "PUT", "/api/v1/config/envs/dev", config.Env{EmergencyPublish: false}, nil)
	err = bob.Do(ctx, "POST", ns("application")+"/publish", config.PublishRequest{Emergency: true}, nil)
	wantStatus(t, err, 403, "switched off")

	// Separate publisher: the last editor may not publish.
	mustDo(t, admin, "PATCH", ns("application"), map[string]bool{"require_approval": false, "separate_publisher": true}, nil)
	setItem(t, alice, "application", "limit", "40")
	err = alice.Do(ctx, "POST", ns("application")+"/publish", config.PublishRequest{}, nil)
	wantStatus(t, err, 403, "differ from the last editor")
	mustDo(t, bob, "POST", ns("application")+"/publish", config.PublishRequest{}, nil)
}

func TestPermissionsSecretsAudit(t *testing.T) {
	h := servertest.Start(t)
	admin := h.Client()
	ctx := context.Background()
	mustDo(t, admin, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	mustDo(t, admin, "POST", "/api/v1/config/apps", config.App{Name: "other"}, nil)

	// No token: 401 on every API; health and metrics are open.
	anon := apiclient.New(h.URL, "")
	for _, p := range []string{"/api/v1/config/apps", "/api/v1/version", "/api/v1/audit", "/api/v1/auth/users", "/api/v1/config/configs/dev/demo/default/application"} {
		wantStatus(t, anon.Do(ctx, "GET", p, nil, nil), 401, "token")
	}
	wantStatus(t, anon.Do(ctx, "POST", "/api/v1/config/watch", config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application"}}}, nil), 401, "token")
	wantStatus(t, apiclient.New(h.URL, "tgm_wrong").Do(ctx, "GET", "/api/v1/config/apps", nil, nil), 401, "token")
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(h.URL + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	defer func() {
		// The metrics page shows what happened.
		resp, err := http.Get(h.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`tangram_config_releases_total{kind="normal"} 1`, `tangram_config_fetches_total{cache=`, `tangram_http_requests_total{code="401"`, `tangram_store_query_seconds_bucket`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	}()

	mustDo(t, admin, "POST", "/api/v1/auth/users", map[string]any{"name": "vic", "token_only": true, "bindings": []map[string]string{{"role": "viewer", "app": "demo"}}}, nil)
	var out struct{ Token string }
	mustDo(t, admin, "POST", "/api/v1/auth/tokens", map[string]string{"user": "vic", "name": "t"}, &out)
	vic := apiclient.New(h.URL, out.Token)
	wantStatus(t, vic.Do(ctx, "PUT", ns("application")+"/items/k", map[string]string{"value": "v"}, nil), 403, "edit permission")
	wantStatus(t, vic.Do(ctx, "GET", "/api/v1/config/envs/dev/apps/other/clusters/default/namespaces/application", nil, nil), 403, "read permission")
	wantStatus(t, vic.Do(ctx, "GET", "/api/v1/audit", nil, nil), 403, "admin")
	mustDo(t, vic, "GET", ns("application"), nil, nil)

	// Environment isolation: a token limited to dev cannot touch prod.
	mustDo(t, admin, "POST", "/api/v1/auth/tokens", map[string]string{"user": "admin", "name": "devonly", "env": "dev"}, &out)
	dev := apiclient.New(h.URL, out.Token)
	mustDo(t, dev, "PUT", ns("application")+"/items/k", map[string]string{"value": "v"}, nil)
	wantStatus(t, dev.Do(ctx, "PUT", "/api/v1/config/envs/prod/apps/demo/clusters/default/namespaces/application/items/k", map[string]string{"value": "v"}, nil), 403, "")
	wantStatus(t, dev.Do(ctx, "GET", "/api/v1/config/configs/prod/demo/default/application", nil, nil), 403, "")

	// Secrets: encrypted at rest, masked in management output and audit,
	// plaintext for clients with read permission.
	mustDo(t, admin, "PUT", ns("application")+"/items/db.password", map[string]any{"value": "s3cr3t-value", "secret": true}, nil)
	var rel config.Release
	mustDo(t, admin, "POST", ns("application")+"/publish", config.PublishRequest{}, &rel)
	for _, ch := range rel.Changes {
		if strings.Contains(ch.New, "s3cr3t") {
			t.Fatalf("publish output leaks the secret: %+v", ch)
		}
	}
	var nsOut struct{ Items []config.Item }
	mustDo(t, admin, "GET", ns("application"), nil, &nsOut)
	for _, it := range nsOut.Items {
		if it.Key == "db.password" && it.Value != config.Masked {
			t.Fatalf("management API shows secret %q", it.Value)
		}
	}
	var it config.Item
	mustDo(t, vic, "GET", ns("application")+"/items/db.password", nil, &it)
	if it.Value != config.Masked {
		t.Fatalf("released item shows secret %q", it.Value)
	}
	// A viewer (a person who may look at the console) fetches secrets
	// masked; an application's client role gets them in clear.
	var cfg config.Payload
	mustDo(t, vic, "GET", "/api/v1/config/configs/dev/demo/default/application", nil, &cfg)
	if cfg.Items["db.password"] != config.Masked {
		t.Fatalf("a viewer's client fetch gets %q", cfg.Items["db.password"])
	}
	mustDo(t, admin, "POST", "/api/v1/auth/users", map[string]any{"name": "demo-app", "token_only": true, "bindings": []map[string]string{{"role": "client", "env": "dev", "app": "demo"}}}, nil)
	mustDo(t, admin, "POST", "/api/v1/auth/tokens", map[string]string{"user": "demo-app", "name": "t"}, &out)
	app := apiclient.New(h.URL, out.Token)
	mustDo(t, app, "GET", "/api/v1/config/configs/dev/demo/default/application", nil, &cfg)
	if cfg.Items["db.password"] != "s3cr3t-value" {
		t.Fatalf("a client-role fetch gets %q", cfg.Items["db.password"])
	}
	wantStatus(t, app.Do(ctx, "PUT", ns("application")+"/items/k", map[string]string{"value": "v"}, nil), 403, "edit permission")
	wantStatus(t, vic.Do(ctx, "GET", ns("application")+"/export?reveal=true", nil, nil), 403, "secrets permission")
	var raw string
	if err := h.Srv.Store().QueryRowContext(ctx, `SELECT value FROM config_items WHERE item_key = ?`, "db.password").Scan(&raw); err != nil || strings.Contains(raw, "s3cr3t") {
		t.Fatalf("stored secret not encrypted: %q %v", raw, err)
	}
	var log api.List[audit.Entry]
	mustDo(t, admin, "GET", "/api/v1/audit?limit=1000", nil, &log)
	actions := map[string]bool{}
	for _, e := range log.Items {
		actions[e.Action] = true
		if strings.Contains(e.Before+e.After, "s3cr3t") {
			t.Fatalf("audit leaks the secret: %+v", e)
		}
	}
	for _, a := range []string{"config.app.create", "config.item.edit", "config.publish", "auth.user.create", "auth.token.create"} {
		if !actions[a] {
			t.Errorf("audit lacks %s", a)
		}
	}
	var n int
	if err := h.Srv.Store().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log WHERE actor = ?`, "vic").Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused calls wrote audit entries: %d %v", n, err)
	}
	_ = store.NowMillis
}

func TestPublicNamespaces(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "infra"}, nil)
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	infraNS := "/api/v1/config/envs/dev/apps/infra/clusters/default/namespaces"
	mustDo(t, c, "POST", infraNS, config.NamespaceSpec{Name: "redis", Public: true}, nil)
	mustDo(t, c, "PUT", infraNS+"/redis/items/addr", map[string]string{"value": "10.0.0.1:6379"}, nil)
	mustDo(t, c, "PUT", infraNS+"/redis/items/pool", map[string]string{"value": "10"}, nil)
	mustDo(t, c, "POST", infraNS+"/redis/publish", config.PublishRequest{}, nil)
	// A second app may not claim the same public name.
	err := c.Do(ctx, "POST", "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces", config.NamespaceSpec{Name: "redis", Public: true}, nil)
	wantStatus(t, err, 409, "already belongs")
	mustDo(t, c, "POST", "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces", config.NamespaceSpec{Name: "redis", LinkApp: "infra"}, nil)
	setItem(t, c, "redis", "pool", "50")
	publish(t, c, "redis", "override pool")
	var cfg config.Payload
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/redis", nil, &cfg)
	if cfg.Items["addr"] != "10.0.0.1:6379" || cfg.Items["pool"] != "50" {
		t.Fatalf("linked namespace: %+v", cfg.Items)
	}
	// A release of the public namespace notifies the linked app's watchers.
	id := cfg.NotificationID
	mustDo(t, c, "PUT", infraNS+"/redis/items/addr", map[string]string{"value": "10.0.0.2:6379"}, nil)
	mustDo(t, c, "POST", infraNS+"/redis/publish", config.PublishRequest{}, nil)
	var w struct{ Changes []config.Notification }
	mustDo(t, c, "POST", "/api/v1/config/watch?timeout=2s", config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "redis", ID: id}}}, &w)
	if len(w.Changes) != 1 {
		t.Fatalf("linked app not notified: %+v", w)
	}
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/redis", nil, &cfg)
	if cfg.Items["addr"] != "10.0.0.2:6379" || cfg.Items["pool"] != "50" {
		t.Fatalf("after public release: %+v", cfg.Items)
	}
	// Clusters fall back to the default cluster until they release their own.
	mustDo(t, c, "POST", "/api/v1/config/envs/dev/apps/demo/clusters", map[string]string{"name": "dc1"}, nil)
	setItem(t, c, "application", "zone", "default")
	publish(t, c, "application", "z")
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/dc1/application", nil, &cfg)
	if cfg.Items["zone"] != "default" || cfg.Cluster != "default" {
		t.Fatalf("dc1 fallback: %+v", cfg)
	}
	dc1 := "/api/v1/config/envs/dev/apps/demo/clusters/dc1/namespaces/application"
	mustDo(t, c, "PUT", dc1+"/items/zone", map[string]string{"value": "dc1"}, nil)
	mustDo(t, c, "POST", dc1+"/publish", config.PublishRequest{}, nil)
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/dc1/application", nil, &cfg)
	if cfg.Items["zone"] != "dc1" || cfg.Cluster != "dc1" {
		t.Fatalf("dc1 own release: %+v", cfg)
	}
}

func TestImportExport(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	props := "# from Apollo\nserver.port=8080\nspring.datasource.url = jdbc:mysql://db/app\nmsg=hello\\nworld\n"
	mustDo(t, c, "POST", ns("application")+"/import", map[string]any{"format": "properties", "data": props}, nil)
	publish(t, c, "application", "import")
	var out string
	mustDo(t, c, "GET", ns("application")+"/export", nil, &out)
	kvs, err := config.ParseProperties(out)
	if err != nil || len(kvs) != 3 {
		t.Fatalf("export round trip: %v %+v\n%s", err, kvs, out)
	}
	got := map[string]string{}
	for _, kv := range kvs {
		got[kv.Key] = kv.Value
	}
	if got["msg"] != "hello\nworld" || got["spring.datasource.url"] != "jdbc:mysql://db/app" {
		t.Fatalf("round trip values: %+v", got)
	}
	// Nested yaml flattens into dotted keys; merge keeps other keys.
	mustDo(t, c, "POST", ns("application")+"/import", map[string]any{"format": "yaml", "data": "redis:\n  host: r1\n  ports: [1, 2]\n", "merge": true}, nil)
	var nsOut struct{ Items []config.Item }
	mustDo(t, c, "GET", ns("application"), nil, &nsOut)
	keys := map[string]string{}
	for _, it := range nsOut.Items {
		keys[it.Key] = it.Value
	}
	if keys["redis.host"] != "r1" || keys["redis.ports[1]"] != "2" || keys["server.port"] != "8080" {
		t.Fatalf("yaml merge import: %+v", keys)
	}
	mustDo(t, c, "GET", ns("application")+"/export?format=json&source=draft", nil, &out)
	if !strings.Contains(out, `"redis.host": "r1"`) {
		t.Fatalf("json export: %s", out)
	}
	err = c.Do(ctx, "POST", ns("application")+"/import", map[string]any{"format": "properties", "data": "ok=1\nbad*key=2\n"}, nil)
	wantStatus(t, err, 400, "line 2")
}

// TestFetchCacheFollowsReleases: fetches are served from a cache keyed by
// the notification id; every kind of change clients can see must show up in
// the next fetch, also when many fetch at once.
func TestFetchCacheFollowsReleases(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	all := func(q string) []config.Payload {
		out := make([]config.Payload, 40)
		errs := make(chan error, len(out))
		for i := range out {
			go func() {
				errs <- c.Do(ctx, "GET", "/api/v1/config/configs/dev/demo/default/application?"+q, nil, &out[i])
			}()
		}
		for range out {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	expect := func(step, q, want string) {
		t.Helper()
		for _, cfg := range all(q) {
			if cfg.Items["k"] != want {
				t.Fatalf("%s: fetch sees k=%q, want %q", step, cfg.Items["k"], want)
			}
		}
	}
	setItem(t, c, "application", "k", "v1")
	publish(t, c, "application", "one")
	expect("publish", "", "v1")
	setItem(t, c, "application", "k", "v2")
	expect("draft edit is not released", "", "v1")
	publish(t, c, "application", "two")
	expect("second publish", "", "v2")
	mustDo(t, c, "POST", ns("application")+"/gray", config.GrayEdit{Set: []config.Item{{Key: "k", Value: "g"}}, Rules: &config.Rules{Labels: []string{"canary"}}}, nil)
	expect("unpublished gray", "labels=canary", "v2")
	mustDo(t, c, "POST", ns("application")+"/gray/publish", config.PublishRequest{}, nil)
	expect("gray published (canary)", "labels=canary", "g")
	expect("gray published (others)", "", "v2")
	mustDo(t, c, "POST", ns("application")+"/gray/abandon", nil, nil)
	expect("gray abandoned", "labels=canary", "v2")
	mustDo(t, c, "POST", ns("application")+"/rollback", config.RollbackRequest{}, nil)
	expect("rollback", "", "v1")
}

// TestExportImportKeepsSecrets: an export without reveal masks secrets;
// importing it back keeps the stored secrets instead of writing the mask,
// and a mask where no secret is stored is refused, naming the key.
func TestExportImportKeepsSecrets(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	mustDo(t, c, "PUT", ns("application")+"/items/db.password", map[string]any{"value": "s3cr3t-value", "secret": true}, nil)
	setItem(t, c, "application", "db.user", "app")
	publish(t, c, "application", "first")
	var out string
	mustDo(t, c, "GET", ns("application")+"/export", nil, &out)
	if !strings.Contains(out, config.Masked) || strings.Contains(out, "s3cr3t") {
		t.Fatalf("export without reveal: %s", out)
	}
	// Round trip the masked file, changing another key.
	out = strings.Replace(out, "db.user = app", "db.user = app2", 1)
	mustDo(t, c, "POST", ns("application")+"/import", map[string]any{"format": "properties", "data": out}, nil)
	publish(t, c, "application", "reimported")
	var cfg config.Payload
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/application", nil, &cfg)
	if cfg.Items["db.password"] != "s3cr3t-value" || cfg.Items["db.user"] != "app2" {
		t.Fatalf("after re-import clients get %+v", cfg.Items)
	}
	var nsOut struct{ Items []config.Item }
	mustDo(t, c, "GET", ns("application"), nil, &nsOut)
	for _, it := range nsOut.Items {
		if it.Key == "db.password" && !it.Secret {
			t.Fatalf("the re-imported secret lost its flag: %+v", it)
		}
	}
	// A mask where no secret is stored would become a literal value.
	err := c.Do(ctx, "POST", ns("application")+"/import", map[string]any{"format": "properties", "data": "api.key = ******\n", "merge": true}, nil)
	wantStatus(t, err, 400, `"api.key" has the value ******`)
	err = c.Do(ctx, "PUT", ns("application")+"/items/new.secret", map[string]any{"value": config.Masked, "secret": true}, nil)
	wantStatus(t, err, 400, "no stored secret to keep")
	// Writing the mask back to an existing secret keeps it (a form that
	// shows the mask and is saved unchanged).
	mustDo(t, c, "PUT", ns("application")+"/items/db.password", map[string]any{"value": config.Masked, "secret": true}, nil)
	publish(t, c, "application", "unchanged")
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/application", nil, &cfg)
	if cfg.Items["db.password"] != "s3cr3t-value" {
		t.Fatalf("saving the mask changed the secret to %q", cfg.Items["db.password"])
	}
}

// A client is listed online while it fetches or watches the namespace: a
// watcher is seen at each watch though it fetches only on a change; one
// that stopped both is offline.
func TestClientsOnlineWhileWatching(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	mustDo(t, c, "PUT", ns("application")+"/items/greeting", map[string]any{"value": "hello"}, nil)
	mustDo(t, c, "POST", ns("application")+"/publish", config.PublishRequest{Comment: "first"}, nil)
	mustDo(t, c, "GET", "/api/v1/config/configs/dev/demo/default/application?instance=i1&ip=10.0.0.1", nil, nil)
	list := func() []config.Instance {
		var l struct{ Items []config.Instance }
		mustDo(t, c, "GET", ns("application")+"/instances", nil, &l)
		return l.Items
	}
	wait.For(t, 10*time.Second, "i1 listed online", func() bool { l := list(); return len(l) == 1 && l[0].Online })
	wait.For(t, 10*time.Second, "i1's fetch written to the store", func() bool {
		var n int
		_ = h.Srv.Store().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM config_instances WHERE instance = 'i1'`).Scan(&n)
		return n == 1
	})
	// It stopped: its last sighting is long ago.
	old := time.Now().Add(-time.Hour).UnixMilli()
	if _, err := h.Srv.Store().ExecContext(context.Background(), `UPDATE config_instances SET last_seen = ? WHERE instance = 'i1'`, old); err != nil {
		t.Fatal(err)
	}
	if l := list(); len(l) != 1 || l[0].Online {
		t.Fatalf("a client gone an hour is listed %+v", l)
	}
	// It watches (without fetching): online again.
	var out struct{ Changes []config.Notification }
	mustDo(t, c, "POST", "/api/v1/config/watch", config.WatchRequest{Env: "dev", App: "demo", Instance: "i1",
		Namespaces: []config.Notification{{NS: "application", ID: -1}}}, &out)
	wait.For(t, 10*time.Second, "the watcher listed online", func() bool { l := list(); return len(l) == 1 && l[0].Online })
}
