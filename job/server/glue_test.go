package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/job/goglue"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

func glueExecutor(t *testing.T, h *servertest.Harness, app string, types ...string) {
	t.Helper()
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, App: app,
		HeartbeatInterval: 200 * time.Millisecond, Glue: types, GoGlue: goglue.Interpreter{}, GlueDir: t.TempDir(), GlueKillGrace: 300 * time.Millisecond,
		GlueEnv: []string{"GREETING=hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
}

func saveGlue(t *testing.T, c *apiclient.Client, id int64, src, note string) job.GlueVersion {
	t.Helper()
	var v job.GlueVersion
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/glue", id), map[string]string{"source": src, "note": note}, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func triggerAndWait(t *testing.T, c *apiclient.Client, id int64, params string) job.Run {
	t.Helper()
	var tr struct{ Runs []int64 }
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", id), map[string]string{"params": params}, &tr); err != nil {
		t.Fatal(err)
	}
	var r job.Run
	wait.For(t, 15*time.Second, "the glue run to end", func() bool {
		_ = c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/job-runs/%d", tr.Runs[0]), nil, &r)
		return r.Status != "" && r.Status != job.StatusPending && r.Status != job.StatusRunning
	})
	return r
}

func logOf(t *testing.T, c *apiclient.Client, run int64) string {
	t.Helper()
	var l struct{ Text string }
	if err := c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/job-runs/%d/logs", run), nil, &l); err != nil {
		t.Fatal(err)
	}
	return l.Text
}

// Shell, Python and Go glue run from stored, versioned sources with their
// own environment; history, diff and rollback work; saving glue needs admin.
func TestGlueJobs(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	glueExecutor(t, h, "scripts", job.GlueShell, job.GluePython, job.GlueGo)
	sh := create(t, c, map[string]any{"name": "sh", "app": "scripts", "handler": "glue:shell", "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	if r := triggerAndWait(t, c, sh.ID, ""); r.Status != job.StatusFailed || !strings.Contains(r.Error, "no source") {
		t.Fatalf("glue without source: %+v", r)
	}
	saveGlue(t, c, sh.ID, "echo one $1 $GREETING $TANGRAM_JOB\n", "first")
	saveGlue(t, c, sh.ID, "echo two $1 $GREETING $TANGRAM_JOB $HOME\nexit 3\n", "second")
	r := triggerAndWait(t, c, sh.ID, "arg")
	if r.Status != job.StatusFailed || !strings.Contains(r.Error, "status 3") {
		t.Fatalf("v2: %+v", r)
	}
	if l := logOf(t, c, r.ID); !strings.Contains(l, "two arg hi sh") || strings.Contains(l, os.Getenv("HOME")+"\n") {
		t.Fatalf("v2 log: %q", l)
	}
	var d struct{ Diff string }
	if err := c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/jobs/%d/glue-diff?from=1&to=2", sh.ID), nil, &d); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.Diff, "-echo one $1 $GREETING $TANGRAM_JOB") || !strings.Contains(d.Diff, "+exit 3") {
		t.Fatalf("diff: %s", d.Diff)
	}
	var rb job.GlueVersion
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/glue/1/rollback", sh.ID), nil, &rb); err != nil || rb.Version != 3 {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
	if r := triggerAndWait(t, c, sh.ID, "again"); r.Status != job.StatusSucceeded || !strings.Contains(logOf(t, c, r.ID), "one again hi sh") {
		t.Fatalf("after rollback: %+v %q", r, logOf(t, c, r.ID))
	}
	var hist struct{ Items []job.GlueVersion }
	if err := c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/jobs/%d/glue", sh.ID), nil, &hist); err != nil || len(hist.Items) != 3 {
		t.Fatalf("history: %+v %v", hist, err)
	}

	py := create(t, c, map[string]any{"name": "py", "app": "scripts", "handler": "glue:python3", "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	saveGlue(t, c, py.ID, "import os, sys\nprint('py', sys.argv[1], os.environ['TANGRAM_PARAMS'])\n", "")
	if r := triggerAndWait(t, c, py.ID, "x"); r.Status != job.StatusSucceeded || !strings.Contains(logOf(t, c, r.ID), "py x x") {
		t.Fatalf("python: %+v %q", r, logOf(t, c, r.ID))
	}

	child := create(t, c, map[string]any{"name": "after-go", "app": "scripts", "handler": "glue:shell", "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	saveGlue(t, c, child.ID, "echo child got $1\n", "")
	gojob := create(t, c, map[string]any{"name": "go", "app": "scripts", "handler": "glue:go", "children": []int64{child.ID},
		"trigger": map[string]any{"kind": "manual"}, "enabled": true})
	saveGlue(t, c, gojob.ID, `package main

import (
	"context"
	"fmt"
	"strings"
)

func Run(ctx context.Context, params string) (string, error) {
	fmt.Println("go glue says", strings.ToUpper(params))
	return "out-" + params, nil
}
`, "")
	if r := triggerAndWait(t, c, gojob.ID, "abc"); r.Status != job.StatusSucceeded || !strings.Contains(logOf(t, c, r.ID), "go glue says ABC") {
		t.Fatalf("go: %+v %q", r, logOf(t, c, r.ID))
	}
	wait.For(t, 10*time.Second, "the Go glue's child", func() bool {
		rs := runs(t, c, child.ID)
		return len(rs) == 1 && rs[0].Status == job.StatusSucceeded && strings.Contains(logOf(t, c, rs[0].ID), "child got out-abc")
	})

	// Saving glue needs admin: an editor of every app is refused, though it
	// may edit the job itself.
	ctx := context.Background()
	if err := c.Do(ctx, "POST", "/api/v1/auth/users", map[string]any{"name": "ed", "password": "a-long-password-1",
		"bindings": []map[string]string{{"role": "editor", "env": "*", "app": "*", "ns": "*"}}}, nil); err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	if err := c.Do(ctx, "POST", "/api/v1/auth/tokens", map[string]any{"user": "ed", "name": "ed-token"}, &tok); err != nil || tok.Token == "" {
		t.Fatalf("token: %v", err)
	}
	ed := h.Client(tok.Token)
	if err := ed.Do(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/glue", sh.ID), map[string]string{"source": "rm -rf /"}, nil); !apiclient.IsStatus(err, 403) {
		t.Fatalf("an editor saved glue: %v", err)
	}
	if err := ed.Do(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/disable", sh.ID), nil, nil); err != nil {
		t.Fatalf("an editor could not disable the job: %v", err)
	}
}

// A killed shell glue takes its whole process group with it: a background
// child it started does not outlive the run.
func TestGlueKillEndsProcessGroup(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	glueExecutor(t, h, "scripts", job.GlueShell)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	j := create(t, c, map[string]any{"name": "bg", "app": "scripts", "handler": "glue:shell", "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	saveGlue(t, c, j.ID, "trap '' TERM\nsleep 300 &\necho $! > "+pidFile+"\nwait\n", "ignores SIGTERM, has a child")
	var tr struct{ Runs []int64 }
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", j.ID), nil, &tr); err != nil {
		t.Fatal(err)
	}
	var pid int
	wait.For(t, 10*time.Second, "the child's pid", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/job-runs/%d/kill", tr.Runs[0]), nil, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the run killed", func() bool {
		var r job.Run
		_ = c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/job-runs/%d", tr.Runs[0]), nil, &r)
		return r.Status == job.StatusKilled
	})
	wait.For(t, 5*time.Second, "the background child gone", func() bool {
		return syscall.Kill(pid, 0) != nil
	})
}

// An executor runs only the glue types it opted in to.
func TestGlueIsOptIn(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	glueExecutor(t, h, "plain") // no glue types
	j := create(t, c, map[string]any{"name": "sh", "app": "plain", "handler": "glue:shell", "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	saveGlue(t, c, j.ID, "echo should not run\n", "")
	if r := triggerAndWait(t, c, j.ID, ""); r.Status != job.StatusFailed || !strings.Contains(r.Error, "no live executor") {
		t.Fatalf("glue ran on an executor that did not opt in: %+v", r)
	}
}
