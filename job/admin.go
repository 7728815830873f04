package job

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
)

// Admin is a typed client for the scheduler's admin API (/api/v1/jobs and
// friends): jobs, triggers, runs, logs, kills, glue versions, workflow runs
// and executors. The CLI and the examples use it; errors are the API's, so
// errors.Is(err, ErrNotFound) works (docs/errors.md). Jobs are named by ID
// or by name.
type Admin struct{ c *apiclient.Client }

// NewAdmin returns an admin client for the server at base (e.g.
// "http://127.0.0.1:7070") authenticating with an API token.
func NewAdmin(base, token string) *Admin { return &Admin{c: apiclient.New(base, token)} }

func jobPath(job string) string { return "/api/v1/jobs/" + url.PathEscape(job) }

// Triggered names the runs a trigger started (one per shard for sharding
// broadcast); for a flow job, Flow is the flow run it started and Runs are
// its first nodes' runs.
type Triggered struct {
	Runs []int64 `json:"runs"`
	Flow int64   `json:"flow,omitempty"`
}

// LogChunk is a piece of a run's log: Text from the offset asked for, the
// Next offset to ask for, and the run's Status then.
type LogChunk struct {
	Text   string `json:"text"`
	Next   int    `json:"next"`
	Status string `json:"status"`
}

// GlueSource is a new version of a glue job's code.
type GlueSource struct {
	Source string `json:"source"`
	Note   string `json:"note"`
}

// GlueDiff is a unified diff of two glue versions.
type GlueDiff struct {
	Diff string `json:"diff"`
}

// Status is one scheduler node's view of its partitions.
type Status struct {
	Node          string   `json:"node"`
	Partitions    int      `json:"partitions"`
	Owned         []int    `json:"owned"`
	SlowExecutors []string `json:"slow_executors"`
}

// Jobs lists jobs, or one app's when app is not empty.
func (a *Admin) Jobs(ctx context.Context, app string) ([]*Job, error) {
	p := "/api/v1/jobs"
	if app != "" {
		p += "?app=" + url.QueryEscape(app)
	}
	var out api.List[*Job]
	err := a.c.Do(ctx, "GET", p, nil, &out)
	return out.Items, err
}

// Job returns a job by ID or name.
func (a *Admin) Job(ctx context.Context, job string) (*Job, error) {
	var out Job
	if err := a.c.Do(ctx, "GET", jobPath(job), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Create creates a job.
func (a *Admin) Create(ctx context.Context, j *Job) (*Job, error) {
	var out Job
	if err := a.c.Do(ctx, "POST", "/api/v1/jobs", j, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Update replaces a job's definition.
func (a *Admin) Update(ctx context.Context, job string, j *Job) (*Job, error) {
	var out Job
	if err := a.c.Do(ctx, "PUT", jobPath(job), j, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete deletes a job; its runs and logs stay.
func (a *Admin) Delete(ctx context.Context, job string) error {
	return a.c.Do(ctx, "DELETE", jobPath(job), nil, nil)
}

// Enable turns a job's schedule on.
func (a *Admin) Enable(ctx context.Context, job string) (*Job, error) {
	return a.toggle(ctx, job, "enable")
}

// Disable turns a job's schedule off (manual triggers still run it).
func (a *Admin) Disable(ctx context.Context, job string) (*Job, error) {
	return a.toggle(ctx, job, "disable")
}

func (a *Admin) toggle(ctx context.Context, job, verb string) (*Job, error) {
	var out Job
	if err := a.c.Do(ctx, "POST", jobPath(job)+"/"+verb, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Trigger runs a job now; params, when not empty, replace its parameters
// for this run.
func (a *Admin) Trigger(ctx context.Context, job, params string) (Triggered, error) {
	var out Triggered
	err := a.c.Do(ctx, "POST", jobPath(job)+"/trigger", map[string]string{"params": params}, &out)
	return out, err
}

// Runs lists a job's runs, newest first.
func (a *Admin) Runs(ctx context.Context, job string, limit int) ([]Run, error) {
	var out api.List[Run]
	err := a.c.Do(ctx, "GET", fmt.Sprintf("%s/runs?limit=%d", jobPath(job), limit), nil, &out)
	return out.Items, err
}

// Run returns one run.
func (a *Admin) Run(ctx context.Context, run int64) (Run, error) {
	var out Run
	err := a.c.Do(ctx, "GET", "/api/v1/job-runs/"+strconv.FormatInt(run, 10), nil, &out)
	return out, err
}

// Kill asks the executor running a run to stop it.
func (a *Admin) Kill(ctx context.Context, run int64) error {
	return a.c.Do(ctx, "POST", "/api/v1/job-runs/"+strconv.FormatInt(run, 10)+"/kill", nil, nil)
}

// Logs returns a run's log from offset from; poll with the returned Next
// to follow a live run.
func (a *Admin) Logs(ctx context.Context, run int64, from int) (LogChunk, error) {
	var out LogChunk
	err := a.c.Do(ctx, "GET", fmt.Sprintf("/api/v1/job-runs/%d/logs?from=%d", run, from), nil, &out)
	return out, err
}

// Executors lists live executors, or one app's.
func (a *Admin) Executors(ctx context.Context, app string) ([]ExecutorInfo, error) {
	p := "/api/v1/job-executors"
	if app != "" {
		p += "?app=" + url.QueryEscape(app)
	}
	var out api.List[ExecutorInfo]
	err := a.c.Do(ctx, "GET", p, nil, &out)
	return out.Items, err
}

// Status returns the answering node's partitions.
func (a *Admin) Status(ctx context.Context) (Status, error) {
	var out Status
	err := a.c.Do(ctx, "GET", "/api/v1/job-status", nil, &out)
	return out, err
}

// SaveGlue saves a new version of a glue job's code (admin).
func (a *Admin) SaveGlue(ctx context.Context, job string, src GlueSource) (GlueVersion, error) {
	var out GlueVersion
	err := a.c.Do(ctx, "POST", jobPath(job)+"/glue", src, &out)
	return out, err
}

// Glue returns a version of the code: a number, or "current".
func (a *Admin) Glue(ctx context.Context, job, version string) (GlueVersion, error) {
	var out GlueVersion
	err := a.c.Do(ctx, "GET", jobPath(job)+"/glue/"+url.PathEscape(version), nil, &out)
	return out, err
}

// GlueHistory lists the saved versions.
func (a *Admin) GlueHistory(ctx context.Context, job string) ([]GlueVersion, error) {
	var out api.List[GlueVersion]
	err := a.c.Do(ctx, "GET", jobPath(job)+"/glue", nil, &out)
	return out.Items, err
}

// DiffGlue diffs two versions (to 0: the current one).
func (a *Admin) DiffGlue(ctx context.Context, job string, from, to int) (string, error) {
	var out GlueDiff
	err := a.c.Do(ctx, "GET", fmt.Sprintf("%s/glue-diff?from=%d&to=%d", jobPath(job), from, to), nil, &out)
	return out.Diff, err
}

// RollbackGlue makes an old version current again, saved as a new version.
func (a *Admin) RollbackGlue(ctx context.Context, job string, version int) (GlueVersion, error) {
	var out GlueVersion
	err := a.c.Do(ctx, "POST", fmt.Sprintf("%s/glue/%d/rollback", jobPath(job), version), nil, &out)
	return out, err
}

// Flows lists a workflow job's runs, newest first.
func (a *Admin) Flows(ctx context.Context, job string) ([]FlowRun, error) {
	var out api.List[FlowRun]
	err := a.c.Do(ctx, "GET", jobPath(job)+"/flows", nil, &out)
	return out.Items, err
}

// Flow returns a workflow run with its nodes.
func (a *Admin) Flow(ctx context.Context, id int64) (FlowRun, error) {
	var out FlowRun
	err := a.c.Do(ctx, "GET", fmt.Sprintf("/api/v1/job-flows/%d", id), nil, &out)
	return out, err
}

// RetryNode runs a failed workflow node again.
func (a *Admin) RetryNode(ctx context.Context, flow int64, node string) ([]int64, error) {
	var out Triggered
	err := a.c.Do(ctx, "POST", fmt.Sprintf("/api/v1/job-flows/%d/nodes/%s/retry", flow, url.PathEscape(node)), nil, &out)
	return out.Runs, err
}
