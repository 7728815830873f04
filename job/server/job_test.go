package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/metrictest"
	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

// witness creates a job firing every 50 ms on app's executor (which must
// handle "witness" with witnessHandler) and returns a function that waits
// until it has run n more times. A negative ("this does not fire") is
// asserted across such runs: they prove the scheduler's loops went round
// several times since, which no fixed sleep can on a busy machine.
func witness(t *testing.T, c *apiclient.Client, app string, fired <-chan struct{}) func(n int) {
	t.Helper()
	create(t, c, map[string]any{"name": "witness-" + app, "app": app, "handler": "witness", "enabled": true,
		"trigger": map[string]any{"kind": "rate", "every": "50ms"}})
	return func(n int) {
		t.Helper()
		for range len(fired) { // runs from before the call do not count
			<-fired
		}
		for i := range n {
			wait.Receive(t, 10*time.Second, fmt.Sprintf("witness run %d of %d", i+1, n), fired)
		}
	}
}

// witnessHandler signals each run of the witness job.
func witnessHandler(fired chan<- struct{}) job.Handler {
	return func(ctx context.Context, jc *job.Context) error {
		select {
		case fired <- struct{}{}:
		default:
		}
		return nil
	}
}

// executor starts an executor of app against the harness's RPC port.
func executor(t *testing.T, h *servertest.Harness, app string, handlers map[string]job.Handler) *job.Executor {
	t.Helper()
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, App: app,
		HeartbeatInterval: 200 * time.Millisecond, ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for n, fn := range handlers {
		e.Handle(n, fn)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func create(t *testing.T, c *apiclient.Client, j map[string]any) *job.Job {
	t.Helper()
	var out job.Job
	if err := c.Do(context.Background(), "POST", "/api/v1/jobs", j, &out); err != nil {
		t.Fatalf("create %v: %v", j["name"], err)
	}
	return &out
}

func runs(t *testing.T, c *apiclient.Client, id int64) []job.Run {
	t.Helper()
	var l struct{ Items []job.Run }
	if err := c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/jobs/%d/runs?limit=1000", id), nil, &l); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func count(rs []job.Run, status string) int {
	n := 0
	for _, r := range rs {
		if r.Status == status {
			n++
		}
	}
	return n
}

// A rate job fires on time on a registered executor; its log lines reach the
// scheduler; lateness (scheduled → handler start) is milliseconds.
func TestRateJobRunsOnExecutor(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	var mu sync.Mutex
	var late []time.Duration
	fired := make(chan struct{}, 64)
	executor(t, h, "billing", map[string]job.Handler{
		"witness": witnessHandler(fired),
		"tick": func(ctx context.Context, jc *job.Context) error {
			mu.Lock()
			late = append(late, time.Since(jc.FireAt))
			mu.Unlock()
			jc.Log.Info("ticking", "params", jc.Params)
			return nil
		},
	})
	j := create(t, c, map[string]any{"name": "tick", "app": "billing", "handler": "tick", "params": "p=1", "enabled": true,
		"trigger": map[string]any{"kind": "rate", "every": "200ms"}})
	wait.For(t, 10*time.Second, "four successful runs", func() bool { return count(runs(t, c, j.ID), job.StatusSucceeded) >= 4 })
	rs := runs(t, c, j.ID)
	seen := map[time.Time]bool{}
	for _, r := range rs {
		if seen[r.FireAt] {
			t.Fatalf("fire time %v ran twice", r.FireAt)
		}
		seen[r.FireAt] = true
	}
	mu.Lock()
	for _, l := range late {
		if l < 0 {
			t.Errorf("a run started %v before its time", -l)
		}
	}
	for _, l := range late[1:] { // the first may wait for the partition lease
		if l > 200*time.Millisecond {
			t.Errorf("a run started %v after its time", l)
		}
	}
	mu.Unlock()
	for _, r := range rs {
		if r.StartedAt.Before(r.FireAt) {
			t.Errorf("run %d is recorded as started at %v, before its fire time %v", r.ID, r.StartedAt, r.FireAt)
		}
	}
	var logs struct {
		Text string `json:"text"`
	}
	last := rs[len(rs)-1]
	wait.For(t, 5*time.Second, "the run's log", func() bool {
		_ = c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/job-runs/%d/logs", last.ID), nil, &logs)
		return strings.Contains(logs.Text, "ticking") && strings.Contains(logs.Text, `params="p=1"`)
	})
	// Disabled: no more fires.
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/disable", j.ID), nil, nil); err != nil {
		t.Fatal(err)
	}
	// A fire claimed before the disable is recorded by the time the
	// witness has run once; after that, four more witness runs (200 ms of
	// the disabled job's period) must add none.
	more := witness(t, c, "billing", fired)
	more(1)
	n := len(runs(t, c, j.ID))
	more(4)
	if m := len(runs(t, c, j.ID)); m != n {
		t.Fatalf("a disabled job fired: %d → %d runs", n, m)
	}
}

// Fires are claimed in the store ahead of their time (ClaimAhead: the
// store's round trips off the fire's path) but run at their time, never
// before; a scheduler stopped between the claim and the fire still sends
// the run, at its time, so a shutdown loses no claimed run.
func TestClaimedAheadRunsOnTimeEvenAcrossShutdown(t *testing.T) {
	h := servertest.Start(t, servertest.WithJobClaimAhead(2*time.Second))
	c := h.Client()
	started := make(chan time.Time, 4)
	executor(t, h, "claims", map[string]job.Handler{"at": func(ctx context.Context, jc *job.Context) error {
		started <- time.Now()
		return nil
	}})
	at := time.Now().Add(4 * time.Second).Truncate(time.Millisecond)
	j := create(t, c, map[string]any{"name": "once", "app": "claims", "handler": "at", "enabled": true,
		"start_at": at.Format(time.RFC3339Nano), "trigger": map[string]any{"kind": "rate", "every": "1h"}})
	wait.For(t, 5*time.Second, "the fire to be claimed", func() bool { return len(runs(t, c, j.ID)) == 1 })
	if time.Now().After(at) {
		t.Fatalf("claimed only after its time (%v); ClaimAhead is 2 s", at)
	}
	r := runs(t, c, j.ID)[0]
	if r.StartedAt.Before(at) || !r.FireAt.Equal(at) {
		t.Fatalf("claimed run: fire %v, started %v (want both %v)", r.FireAt, r.StartedAt, at)
	}
	select {
	case got := <-started:
		t.Fatalf("a claimed run ran %v before its time", at.Sub(got))
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Srv.Jobs().Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-started:
		if got.Before(at) {
			t.Fatalf("the claimed run ran %v before its time", at.Sub(got))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler stopped without sending the run it had claimed")
	}
}

// A failing run is retried per the job; a manual trigger passes params; a
// child runs after its parent succeeds, with the parent's output.
func TestRetryManualTriggerAndChild(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	var attempts atomic.Int32
	childGot := make(chan string, 1)
	fired := make(chan struct{}, 64)
	executor(t, h, "ops", map[string]job.Handler{
		"witness": witnessHandler(fired),
		"flaky": func(ctx context.Context, jc *job.Context) error {
			attempts.Add(1)
			return errors.New("boom " + jc.Params)
		},
		"parent": func(ctx context.Context, jc *job.Context) error { jc.Output = "from-parent"; return nil },
		"child":  func(ctx context.Context, jc *job.Context) error { childGot <- jc.Params; return nil },
	})
	flaky := create(t, c, map[string]any{"name": "flaky", "app": "ops", "handler": "flaky", "retries": 2, "retry_backoff": "50ms",
		"trigger": map[string]any{"kind": "manual"}, "enabled": true})
	var tr struct{ Runs []int64 }
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", flaky.ID), map[string]any{"params": "x"}, &tr); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "three failed attempts", func() bool { return count(runs(t, c, flaky.ID), job.StatusFailed) == 3 })
	// A fourth attempt would come 50 ms (the backoff) after the third:
	// none may have come after five witness runs.
	witness(t, c, "ops", fired)(5)
	rs := runs(t, c, flaky.ID)
	if len(rs) != 3 || attempts.Load() != 3 {
		t.Fatalf("want 3 attempts, got %d runs, %d calls", len(rs), attempts.Load())
	}
	for _, r := range rs {
		if r.Error != "boom x" || r.Params != "x" {
			t.Fatalf("run %+v", r)
		}
	}
	child := create(t, c, map[string]any{"name": "child", "app": "ops", "handler": "child", "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	parent := create(t, c, map[string]any{"name": "parent", "app": "ops", "handler": "parent", "children": []int64{child.ID},
		"trigger": map[string]any{"kind": "manual"}, "enabled": true})
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%s/trigger", parent.Name), nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-childGot:
		if p != "from-parent" {
			t.Fatalf("child got params %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the child never ran")
	}
	// The scheduler's metrics: the three failures exactly; every dispatch
	// with its lateness; successes counted once their reports are in.
	m := h.Srv.Jobs().Collector()
	wait.For(t, 10*time.Second, "the child's success counted", func() bool {
		return metrictest.Value(t, m, "tangram_job_runs_finished_total", "status", job.StatusSucceeded) >= 7 // 5 witnesses, parent, child
	})
	if n := metrictest.Value(t, m, "tangram_job_runs_finished_total", "status", job.StatusFailed); n != 3 {
		t.Errorf("%v failed runs counted, want 3", n)
	}
	d := metrictest.Value(t, m, "tangram_job_dispatched_total")
	if d < 10 || metrictest.Value(t, m, "tangram_job_dispatch_lateness_seconds") != d {
		t.Errorf("%v dispatches, %v lateness observations; want the same, at least 10", d, metrictest.Value(t, m, "tangram_job_dispatch_lateness_seconds"))
	}
}

// Kill cancels a running handler; discard_later drops a trigger while the
// previous run goes; a timeout fails the run.
func TestKillDiscardAndTimeout(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	started := make(chan int64, 10)
	executor(t, h, "etl", map[string]job.Handler{
		"block": func(ctx context.Context, jc *job.Context) error {
			started <- jc.RunID
			<-ctx.Done()
			return ctx.Err()
		},
	})
	j := create(t, c, map[string]any{"name": "long", "app": "etl", "handler": "block", "block": "discard_later",
		"trigger": map[string]any{"kind": "manual"}, "enabled": true})
	trigger := func() {
		if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", j.ID), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	trigger()
	var first int64
	select {
	case first = <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the run never started")
	}
	trigger()
	wait.For(t, 5*time.Second, "the second trigger discarded", func() bool { return count(runs(t, c, j.ID), job.StatusDiscarded) == 1 })
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/job-runs/%d/kill", first), nil, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the run killed", func() bool {
		var r job.Run
		_ = c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/job-runs/%d", first), nil, &r)
		return r.Status == job.StatusKilled
	})

	to := create(t, c, map[string]any{"name": "slow", "app": "etl", "handler": "block", "timeout": "150ms",
		"trigger": map[string]any{"kind": "manual"}, "enabled": true})
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", to.ID), nil, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the slow run timed out", func() bool {
		rs := runs(t, c, to.ID)
		return len(rs) == 1 && rs[0].Status == job.StatusFailed && strings.Contains(rs[0].Error, "timed out after 150ms")
	})
}

func TestBadInputNamesTheField(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	for _, tc := range []struct {
		job  map[string]any
		want string
	}{
		{map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "cron", "cron": "61 * * * * *"}}, "trigger.cron"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "cron", "cron": "0 * * * * *", "time_zone": "Mars/Base"}}, "trigger.time_zone"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "rate"}}, "trigger.every"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "route": "sideways", "trigger": map[string]any{"kind": "manual"}}, "route"},
		{map[string]any{"name": "a b", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "manual"}}, "name"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "retries": -1, "trigger": map[string]any{"kind": "manual"}}, "retries"},
		// Schedules that fire every second while claiming otherwise, or never.
		{map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "cron", "cron": "@every 0s"}}, "@every needs"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "cron", "cron": "@every -1s"}}, "@every needs"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "cron", "cron": "@every 1ms"}}, "@every needs"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "cron", "cron": "0 0 30 2 *"}}, "never fires"},
		{map[string]any{"name": "a", "app": "x", "handler": "h", "children": []int64{999999}, "trigger": map[string]any{"kind": "manual"}}, "job 999999 does not exist"},
	} {
		err := c.Do(context.Background(), "POST", "/api/v1/jobs", tc.job, nil)
		if !apiclient.IsStatus(err, 400) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want a 400 naming %s, got %v", tc.job, tc.want, err)
		}
	}
	if err := h.Client("tgm_wrong").Do(context.Background(), "GET", "/api/v1/jobs", nil, nil); !apiclient.IsStatus(err, 401) {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := job.NewExecutor(job.ExecutorConfig{Servers: []string{"127.0.0.1:1"}, App: "x"}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("an executor without a token started: %v", err)
	}
}

// A run that fails for good posts an alarm to the job's webhook, once.
func TestAlarmWebhook(t *testing.T) {
	got := make(chan job.Alarm, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a job.Alarm
		if err := json.NewDecoder(r.Body).Decode(&a); err == nil {
			got <- a
		}
	}))
	defer hook.Close()
	h := servertest.Start(t, servertest.WithWebhookAllow("127.0.0.1"))
	c := h.Client()
	executor(t, h, "ops", map[string]job.Handler{
		"fail": func(ctx context.Context, jc *job.Context) error { return errors.New("disk full") },
	})
	j := create(t, c, map[string]any{"name": "alarming", "app": "ops", "handler": "fail", "retries": 1, "retry_backoff": "50ms",
		"alarm_webhook": hook.URL, "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", j.ID), nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.Job != "alarming" || a.Status != job.StatusFailed || a.Error != "disk full" || a.Attempt != 1 {
			t.Fatalf("alarm %+v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alarm")
	}
	select {
	case a := <-got:
		t.Fatalf("a second alarm: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	err := c.Do(context.Background(), "POST", "/api/v1/jobs", map[string]any{"name": "bad-hook", "app": "ops", "handler": "fail",
		"alarm_webhook": "ftp://x", "trigger": map[string]any{"kind": "manual"}}, nil)
	if !apiclient.IsStatus(err, 400) || !strings.Contains(err.Error(), "alarm_webhook") {
		t.Fatalf("bad webhook: %v", err)
	}
}

// max_concurrency caps a job's running runs across executors: with
// serial, a trigger beyond the cap waits for a slot even though another
// executor is free.
func TestMaxConcurrencySerial(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	started := make(chan int64, 4)
	block := func(ctx context.Context, jc *job.Context) error {
		started <- jc.RunID
		<-ctx.Done()
		return context.Cause(ctx)
	}
	executor(t, h, "etl", map[string]job.Handler{"block": block})
	executor(t, h, "etl", map[string]job.Handler{"block": block})
	wait.For(t, 5*time.Second, "two executors", func() bool {
		var l struct{ Items []job.ExecutorInfo }
		_ = c.Do(context.Background(), "GET", "/api/v1/job-executors", nil, &l)
		return len(l.Items) == 2
	})
	j := create(t, c, map[string]any{"name": "capped", "app": "etl", "handler": "block", "max_concurrency": 1,
		"trigger": map[string]any{"kind": "manual"}, "enabled": true})
	trigger := func() int64 {
		var tr struct{ Runs []int64 }
		if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", j.ID), nil, &tr); err != nil {
			t.Fatal(err)
		}
		return tr.Runs[0]
	}
	first := trigger()
	if got := <-started; got != first {
		t.Fatalf("started %d, want %d", got, first)
	}
	second := trigger()
	select {
	case id := <-started:
		t.Fatalf("run %d started beyond max_concurrency 1", id)
	case <-time.After(700 * time.Millisecond):
	}
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/job-runs/%d/kill", first), nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-started:
		if id != second {
			t.Fatalf("started %d, want %d", id, second)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting run never started after the first was killed")
	}
}

// TestMinimumInterval: an app editor cannot schedule tighter than the
// server's minimum (default 1 s); an unrestricted admin can.
func TestMinimumInterval(t *testing.T) {
	h := servertest.Start(t)
	admin := h.Client()
	ctx := context.Background()
	if err := admin.Do(ctx, "POST", "/api/v1/auth/users", map[string]any{"name": "ed", "token_only": true,
		"bindings": []map[string]string{{"role": "editor", "app": "x"}}}, nil); err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	if err := admin.Do(ctx, "POST", "/api/v1/auth/tokens", map[string]string{"user": "ed", "name": "t"}, &tok); err != nil {
		t.Fatal(err)
	}
	ed := h.Client(tok.Token)
	for _, tr := range []map[string]any{
		{"kind": "rate", "every": "1ms"},
		{"kind": "rate", "every": "500ms"},
		{"kind": "delay", "every": "10ms"},
		{"kind": "cron", "cron": "* * * * * *"}, // every second is allowed...
	} {
		err := ed.Do(ctx, "POST", "/api/v1/jobs", map[string]any{"name": "fast", "app": "x", "handler": "h", "trigger": tr}, nil)
		if tr["kind"] == "cron" {
			if err != nil {
				t.Fatalf("a 1 s cron from an editor: %v", err)
			}
			continue
		}
		if !apiclient.IsStatus(err, 400) || !strings.Contains(err.Error(), "minimum is 1s") {
			t.Errorf("editor's %v: %v", tr, err)
		}
	}
	if err := admin.Do(ctx, "POST", "/api/v1/jobs", map[string]any{"name": "fast-admin", "app": "x", "handler": "h", "enabled": false,
		"trigger": map[string]any{"kind": "rate", "every": "100ms"}}, nil); err != nil {
		t.Fatalf("an admin's 100 ms rate: %v", err)
	}
}

// TestWebhookDestinations: without an admin's allow-list, alarm webhooks
// cannot reach internal addresses — refused at once for a literal address,
// at dial time for a name (DNS decides); webhook keys are hidden from
// readers and from the audit log.
func TestWebhookDestinations(t *testing.T) {
	hits := make(chan struct{}, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits <- struct{}{} }))
	defer hook.Close()
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	for _, u := range []string{hook.URL, "http://10.1.2.3/x", "http://[::1]:9/x", "http://169.254.169.254/latest/meta-data", "http://0.0.0.0:80/"} {
		err := c.Do(ctx, "POST", "/api/v1/jobs", map[string]any{"name": "internal", "app": "ops", "handler": "fail",
			"alarm_webhook": u, "trigger": map[string]any{"kind": "manual"}}, nil)
		if !apiclient.IsStatus(err, 400) || !strings.Contains(err.Error(), "internal address") {
			t.Errorf("webhook %s: %v", u, err)
		}
	}
	// A name that resolves to loopback passes the check at creation and is
	// refused when dialled: no request reaches the receiver.
	named := strings.Replace(hook.URL, "127.0.0.1", "localhost", 1) + "/hook?key=s3cr3t"
	executor(t, h, "ops", map[string]job.Handler{
		"fail": func(ctx context.Context, jc *job.Context) error { return errors.New("boom") },
	})
	j := create(t, c, map[string]any{"name": "named", "app": "ops", "handler": "fail", "alarm_webhook": named,
		"trigger": map[string]any{"kind": "manual"}, "enabled": true})
	if err := c.Do(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", j.ID), nil, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the run fails", func() bool { return count(runs(t, c, j.ID), job.StatusFailed) == 1 })
	select {
	case <-hits:
		t.Fatal("an alarm reached a loopback receiver through a name")
	case <-time.After(300 * time.Millisecond): // sleep-ok: a negative, after the run's failure was seen
	}
	// A viewer sees the webhook without its key; an editor sees it whole.
	if err := c.Do(ctx, "POST", "/api/v1/auth/users", map[string]any{"name": "vi", "token_only": true,
		"bindings": []map[string]string{{"role": "viewer", "app": "ops"}}}, nil); err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	if err := c.Do(ctx, "POST", "/api/v1/auth/tokens", map[string]string{"user": "vi", "name": "t"}, &tok); err != nil {
		t.Fatal(err)
	}
	var seen job.Job
	if err := h.Client(tok.Token).Do(ctx, "GET", fmt.Sprintf("/api/v1/jobs/%d", j.ID), nil, &seen); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(seen.AlarmWebhook, "s3cr3t") || !strings.Contains(seen.AlarmWebhook, "?***") {
		t.Fatalf("a viewer sees the webhook %q", seen.AlarmWebhook)
	}
	if err := c.Do(ctx, "GET", fmt.Sprintf("/api/v1/jobs/%d", j.ID), nil, &seen); err != nil || seen.AlarmWebhook != named {
		t.Fatalf("the admin sees %q %v", seen.AlarmWebhook, err)
	}
	var log struct{ Items []struct{ After string } }
	if err := c.Do(ctx, "GET", "/api/v1/audit?action=job.create", nil, &log); err != nil {
		t.Fatal(err)
	}
	for _, e := range log.Items {
		if strings.Contains(e.After, "s3cr3t") {
			t.Fatalf("the audit log holds the webhook key: %s", e.After)
		}
	}
}
