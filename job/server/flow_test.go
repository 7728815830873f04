package server_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

// A diamond flow: extract fans out to two transforms, which fan in to load.
// Outputs flow downstream as params; a failing node stops what comes after
// it; retrying the node resumes the flow to the end.
func TestFlowFanOutFanInFailureAndResume(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	var mu sync.Mutex
	var order []string
	var loadParams atomic.Value
	var failB atomic.Bool
	failB.Store(true)
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	executor(t, h, "etl", map[string]job.Handler{
		"extract": func(ctx context.Context, jc *job.Context) error { note("extract"); jc.Output = "rows=10"; return nil },
		"ta": func(ctx context.Context, jc *job.Context) error {
			note("ta:" + jc.Params)
			jc.Output = "a(" + jc.Params + ")"
			return nil
		},
		"tb": func(ctx context.Context, jc *job.Context) error {
			note("tb:" + jc.Params)
			if failB.Load() {
				return fmt.Errorf("tb broke")
			}
			jc.Output = "b(" + jc.Params + ")"
			return nil
		},
		"load": func(ctx context.Context, jc *job.Context) error {
			note("load")
			loadParams.Store(jc.Params)
			return nil
		},
	})
	mk := func(name, handler string) int64 {
		return create(t, c, map[string]any{"name": name, "app": "etl", "handler": handler, "trigger": map[string]any{"kind": "manual"}, "enabled": true}).ID
	}
	ex, ta, tb, ld := mk("extract", "extract"), mk("ta", "ta"), mk("tb", "tb"), mk("load", "load")
	flowJob := create(t, c, map[string]any{"name": "nightly", "app": "etl", "trigger": map[string]any{"kind": "manual"}, "enabled": true,
		"flow": map[string]any{"nodes": []map[string]any{
			{"name": "extract", "job": ex},
			{"name": "ta", "job": ta, "after": []string{"extract"}},
			{"name": "tb", "job": tb, "after": []string{"extract"}},
			{"name": "load", "job": ld, "after": []string{"ta", "tb"}},
		}}})
	if flowJob.Handler != job.FlowHandler {
		t.Fatalf("handler %q", flowJob.Handler)
	}
	if err := c.Do(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", flowJob.ID), nil, nil); err != nil {
		t.Fatal(err)
	}
	var fid int64
	flowRun := func() job.FlowRun {
		var l struct{ Items []job.FlowRun }
		if err := c.Do(ctx, "GET", fmt.Sprintf("/api/v1/jobs/%d/flows", flowJob.ID), nil, &l); err != nil || len(l.Items) == 0 {
			return job.FlowRun{}
		}
		fid = l.Items[0].ID
		var f job.FlowRun
		_ = c.Do(ctx, "GET", fmt.Sprintf("/api/v1/job-flows/%d", fid), nil, &f)
		return f
	}
	states := map[string]string{}
	wait.For(t, 10*time.Second, "the flow to fail at tb with ta done", func() bool {
		f := flowRun()
		clear(states)
		for _, n := range f.Nodes {
			states[n.Name] = n.Status
		}
		return f.Status == job.FlowFailed && states["ta"] == "succeeded"
	})
	if states["extract"] != "succeeded" || states["ta"] != "succeeded" || states["tb"] != "failed" || states["load"] != "waiting" {
		t.Fatalf("after the failure: %v", states)
	}
	failB.Store(false)
	if err := c.Do(ctx, "POST", fmt.Sprintf("/api/v1/job-flows/%d/nodes/tb/retry", fid), nil, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the flow to finish", func() bool { return flowRun().Status == job.FlowSucceeded })
	mu.Lock()
	defer mu.Unlock()
	if order[0] != "extract" || order[len(order)-1] != "load" {
		t.Fatalf("order %v", order)
	}
	mid := append([]string(nil), order[1:len(order)-1]...)
	sort.Strings(mid)
	if strings.Join(mid, ",") != "ta:rows=10,tb:rows=10,tb:rows=10" {
		t.Fatalf("transforms ran %v", mid)
	}
	if p := loadParams.Load().(string); p != "a(rows=10)\nb(rows=10)" {
		t.Fatalf("load got params %q", p)
	}
}

func TestFlowValidation(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	a := create(t, c, map[string]any{"name": "a", "app": "x", "handler": "h", "trigger": map[string]any{"kind": "manual"}})
	for _, tc := range []struct {
		nodes []map[string]any
		want  string
	}{
		{[]map[string]any{{"name": "n1", "job": a.ID, "after": []string{"n2"}}, {"name": "n2", "job": a.ID, "after": []string{"n1"}}}, "cycle"},
		{[]map[string]any{{"name": "n1", "job": a.ID, "after": []string{"zz"}}}, "not a node"},
		{[]map[string]any{{"name": "n1", "job": 999999}}, "node n1"},
		{[]map[string]any{{"name": "n1", "job": a.ID}, {"name": "n1", "job": a.ID}}, "two nodes"},
	} {
		err := c.Do(context.Background(), "POST", "/api/v1/jobs", map[string]any{"name": "f", "app": "x", "trigger": map[string]any{"kind": "manual"},
			"flow": map[string]any{"nodes": tc.nodes}}, nil)
		if !apiclient.IsStatus(err, 400) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want 400 with %q, got %v", tc.nodes, tc.want, err)
		}
	}
}

// Two nodes may run the same job (a regression: their runs once collided
// in the store and the executor's reports stalled behind the failure).
func TestFlowSameJobTwice(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	var n atomic.Int32
	executor(t, h, "etl", map[string]job.Handler{"step": func(ctx context.Context, jc *job.Context) error { n.Add(1); return nil }})
	step := create(t, c, map[string]any{"name": "step", "app": "etl", "handler": "step", "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	// Nodes may name their job (job_name, resolved when saved) or give its ID.
	f := create(t, c, map[string]any{"name": "twice", "app": "etl", "trigger": map[string]any{"kind": "manual"}, "enabled": true,
		"flow": map[string]any{"nodes": []map[string]any{{"name": "a", "job_name": "step"}, {"name": "b", "job": step.ID, "after": []string{"a"}},
			{"name": "c", "job_name": "step", "after": []string{"a"}}}}})
	for _, n := range f.Flow.Nodes {
		if n.Job != step.ID || n.JobName != "" {
			t.Fatalf("node %s saved as %+v, want job %d", n.Name, n, step.ID)
		}
	}
	bad := map[string]any{"name": "badflow", "app": "etl", "trigger": map[string]any{"kind": "manual"},
		"flow": map[string]any{"nodes": []map[string]any{{"name": "a", "job_name": "nope"}}}}
	if err := c.Do(context.Background(), "POST", "/api/v1/jobs", bad, nil); err == nil || !strings.Contains(err.Error(), `no job named "nope"`) {
		t.Fatalf("a node naming no job: %v", err)
	}
	var tr job.Triggered
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", f.ID), nil, &tr); err != nil {
		t.Fatal(err)
	}
	if tr.Flow == 0 || len(tr.Runs) != 1 {
		t.Fatalf("a flow's trigger answered %+v: want the flow's ID and its first node's run", tr)
	}
	wait.For(t, 10*time.Second, "the flow to succeed", func() bool {
		var l struct{ Items []job.FlowRun }
		_ = c.Do(context.Background(), "GET", fmt.Sprintf("/api/v1/jobs/%d/flows", f.ID), nil, &l)
		return len(l.Items) == 1 && l.Items[0].Status == job.FlowSucceeded && l.Items[0].ID == tr.Flow
	})
	if n.Load() != 3 {
		t.Fatalf("the step ran %d times, want 3", n.Load())
	}
}
