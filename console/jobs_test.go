package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/chromedp/chromedp"

	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestConsoleJobsBrowser drives the job pages in headless Chromium: the
// dashboard, a job's page, a trigger with params, the run's live log (the
// page's script follows it), a kill, and a workflow's DAG view.
func TestConsoleJobsBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	h := servertest.Start(t)
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, App: "demo", HeartbeatInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.Handle("tick", func(ctx context.Context, jc *job.Context) error {
		for i := 0; ; i++ {
			jc.Log.Info("tick", "n", i, "params", jc.Params)
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	e.Handle("ok", func(ctx context.Context, jc *job.Context) error { return nil })
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	api := h.Client()
	ctx := context.Background()
	var ticker, a, flow job.Job
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(api.Do(ctx, "POST", "/api/v1/jobs", map[string]any{"name": "ticker", "app": "demo", "handler": "tick", "enabled": true,
		"trigger": map[string]any{"kind": "manual"}}, &ticker))
	must(api.Do(ctx, "POST", "/api/v1/jobs", map[string]any{"name": "step", "app": "demo", "handler": "ok", "enabled": true,
		"trigger": map[string]any{"kind": "manual"}}, &a))
	must(api.Do(ctx, "POST", "/api/v1/jobs", map[string]any{"name": "pipeline", "app": "demo", "enabled": true, "trigger": map[string]any{"kind": "manual"},
		"flow": map[string]any{"nodes": []map[string]any{{"name": "first", "job": a.ID}, {"name": "second", "job": a.ID, "after": []string{"first"}}}}}, &flow))
	must(api.Do(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", flow.ID), nil, nil))

	bctx := browser(t)
	page := func() string {
		html, _ := chromedp.Run(context.WithoutCancel(bctx), chromedp.OuterHTML(chromedp.CSS("body")))
		return html
	}
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v\npage: %.3000s", name, err, page())
		}
	}
	waitText := func(sel string, want string) {
		t.Helper()
		var s string
		var err error
		if !wait.Until(20*time.Second, func() bool {
			s, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
			return err == nil && strings.Contains(s, want)
		}) {
			t.Fatalf("%s never showed %q (last %q, %v)\npage: %.3000s", sel, want, s, err, page())
		}
	}
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	step("sign in", chromedp.Navigate(h.URL+"/jobs"), chromedp.WaitVisible(id("login")),
		chromedp.SetValue(id("user"), "admin"), chromedp.SetValue(id("secret"), h.Token), chromedp.Click(id("login")),
		chromedp.WaitVisible(id("whoami")))
	step("dashboard", chromedp.Navigate(h.URL+"/jobs"), chromedp.WaitVisible(id("job-stats")))
	waitText("#jobs", "ticker")
	waitText("#executors", "tick")
	step("job page", chromedp.Click(id("job-ticker")), chromedp.WaitVisible(id("trigger")),
		chromedp.SetValue(chromedp.CSS(`input[name="params"]`), "from-the-console"), chromedp.Click(id("trigger")))
	waitText("#flash", "triggered 1 run")
	var runs []job.Run
	wait.For(t, 10*time.Second, "the run to start", func() bool {
		var l struct{ Items []job.Run }
		must(api.Do(ctx, "GET", fmt.Sprintf("/api/v1/jobs/%d/runs", ticker.ID), nil, &l))
		runs = l.Items
		return len(runs) > 0 && runs[0].Status == job.StatusRunning
	})
	run := runs[0].ID
	step("run page", chromedp.Navigate(fmt.Sprintf("%s/jobs/runs/%d", h.URL, run)), chromedp.WaitVisible(id("log")))
	// Lines logged after the page loaded arrive through the page's script.
	waitText("#log", "params=from-the-console")
	waitText("#log", "n=5")
	step("kill", chromedp.Click(id("kill")))
	waitText("#flash", "kill sent")
	waitText("#run-status", "killed")
	step("workflow page", chromedp.Navigate(fmt.Sprintf("%s/jobs/%d", h.URL, flow.ID)), chromedp.WaitVisible(id("dag")))
	waitText("#node-first", "succeeded")
	waitText("#node-second", "after first")
	// The detail pages fit the window: a job, a workflow, a run.
	for _, path := range []string{fmt.Sprintf("/jobs/%d", ticker.ID), fmt.Sprintf("/jobs/%d", flow.ID), fmt.Sprintf("/jobs/runs/%d", run),
		fmt.Sprintf("/jobs/edit/%d", ticker.ID)} {
		fits(t, bctx, h.URL, path)
	}
}
