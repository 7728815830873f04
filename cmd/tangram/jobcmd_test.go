package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

func TestJobCLI(t *testing.T) {
	h := servertest.Start(t)
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: h.Srv.RPCAddr(), Token: servertest.AdminToken, App: "demo", HeartbeatInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.Handle("hello", func(ctx context.Context, jc *job.Context) error {
		jc.Log.Info("hello from the CLI test", "params", jc.Params)
		return nil
	})
	e.Handle("sleep", func(ctx context.Context, jc *job.Context) error { <-ctx.Done(); return context.Cause(ctx) })
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })

	out := run(t, h, "job", "add", "greet", "--app", "demo", "--handler", "hello", "--cron", "0 0 8 * * *", "--tz", "Asia/Shanghai")
	if !strings.Contains(out, "cron 0 0 8 * * * Asia/Shanghai") {
		t.Fatalf("add: %s", out)
	}
	if _, err := runErr(h, "job", "add", "bad", "--app", "demo", "--handler", "hello", "--cron", "99 * * * * *"); err == nil || !strings.Contains(err.Error(), "trigger.cron") {
		t.Fatalf("bad cron: %v", err)
	}
	if out := run(t, h, "job", "list"); !strings.Contains(out, "greet") {
		t.Fatalf("list: %s", out)
	}
	out = run(t, h, "job", "trigger", "greet", "--params", "world", "-f")
	if !strings.Contains(out, "hello from the CLI test") || !strings.Contains(out, "params=world") || !strings.Contains(out, "succeeded") {
		t.Fatalf("trigger -f: %s", out)
	}
	if out := run(t, h, "job", "runs", "greet"); !strings.Contains(out, "manual") || !strings.Contains(out, "succeeded") {
		t.Fatalf("runs: %s", out)
	}
	out = run(t, h, "job", "edit", "greet", "--every", "1h")
	if !strings.Contains(out, "rate 1h0m0s") {
		t.Fatalf("edit: %s", out)
	}
	if out := run(t, h, "job", "disable", "greet"); !strings.Contains(out, "false") {
		t.Fatalf("disable: %s", out)
	}
	run(t, h, "job", "add", "nap", "--app", "demo", "--handler", "sleep", "--kind", "manual")
	out = run(t, h, "job", "trigger", "nap")
	var runID string
	if _, err := fmtSscan(out, &runID); err != nil {
		t.Fatalf("trigger: %s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(run(t, h, "job", "runs", "nap"), "running") {
		if time.Now().After(deadline) {
			t.Fatal("nap never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	run(t, h, "job", "kill", runID)
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(run(t, h, "job", "runs", "nap"), "killed") {
		if time.Now().After(deadline) {
			t.Fatalf("nap not killed: %s", run(t, h, "job", "runs", "nap"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := run(t, h, "job", "executors"); !strings.Contains(out, "hello,sleep") {
		t.Fatalf("executors: %s", out)
	}
}

// fmtSscan reads "run N" from trigger's output.
func fmtSscan(out string, id *string) (int, error) {
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "run" {
		return 0, errNoRun
	}
	*id = f[1]
	return 1, nil
}

var errNoRun = errors.New("no run id")
