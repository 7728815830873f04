package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

func TestJobCLI(t *testing.T) {
	h := servertest.Start(t)
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, App: "demo", HeartbeatInterval: 200 * time.Millisecond,
		Glue: []string{job.GlueShell}, GlueDir: t.TempDir()})
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
	wait.For(t, 5*time.Second, "the nap run to start", func() bool { return strings.Contains(run(t, h, "job", "runs", "nap"), "running") })
	run(t, h, "job", "kill", runID)
	wait.For(t, 5*time.Second, "the nap run to be killed", func() bool { return strings.Contains(run(t, h, "job", "runs", "nap"), "killed") })
	if out := run(t, h, "job", "executors"); !strings.Contains(out, "glue:shell,hello,sleep") {
		t.Fatalf("executors: %s", out)
	}

	// A glue shell job: save, run, change, diff, roll back.
	run(t, h, "job", "add", "sh", "--app", "demo", "--handler", "glue:shell", "--kind", "manual")
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "v1.sh"), filepath.Join(dir, "v2.sh")
	os.WriteFile(v1, []byte("echo glue says $1\n"), 0o644)
	os.WriteFile(v2, []byte("echo glue now says $1\n"), 0o644)
	if out := run(t, h, "job", "glue", "save", "sh", "--file", v1, "-m", "first"); !strings.Contains(out, "saved version 1") {
		t.Fatalf("glue save: %s", out)
	}
	if out := run(t, h, "job", "trigger", "sh", "--params", "hi", "-f"); !strings.Contains(out, "glue says hi") || !strings.Contains(out, "succeeded") {
		t.Fatalf("glue run: %s", out)
	}
	run(t, h, "job", "glue", "save", "sh", "--file", v2, "-m", "second")
	if out := run(t, h, "job", "glue", "diff", "sh", "1", "2"); !strings.Contains(out, "-echo glue says $1") || !strings.Contains(out, "+echo glue now says $1") {
		t.Fatalf("glue diff: %s", out)
	}
	if out := run(t, h, "job", "glue", "rollback", "sh", "1"); !strings.Contains(out, "current again as version 3") {
		t.Fatalf("glue rollback: %s", out)
	}
	if out := run(t, h, "job", "glue", "show", "sh"); out != "echo glue says $1\n" {
		t.Fatalf("glue show: %q", out)
	}
	if out := run(t, h, "job", "glue", "history", "sh"); !strings.Contains(out, "rollback to version 1") {
		t.Fatalf("glue history: %s", out)
	}

	// A workflow from a JSON file, run to completion.
	var ids []string
	for _, n := range []string{"s1", "s2"} {
		out := run(t, h, "job", "add", n, "--app", "demo", "--handler", "hello", "--kind", "manual", "-o", "json")
		var j job.Job
		if err := json.Unmarshal([]byte(out), &j); err != nil {
			t.Fatalf("add %s: %v %s", n, err, out)
		}
		ids = append(ids, strconv.FormatInt(j.ID, 10))
	}
	flow := filepath.Join(dir, "flow.json")
	os.WriteFile(flow, []byte(`{"app":"demo","trigger":{"kind":"manual"},"flow":{"nodes":[{"name":"one","job":`+ids[0]+`},{"name":"two","job":`+ids[1]+`,"after":["one"]}]}}`), 0o644)
	run(t, h, "job", "add", "wf", "--file", flow)
	run(t, h, "job", "trigger", "wf")
	wait.For(t, 10*time.Second, "the flow and both its nodes to succeed", func() bool {
		return strings.Count(run(t, h, "job", "flows", "wf"), "succeeded") >= 3
	})
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
