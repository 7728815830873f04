package server

import (
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/job"
)

// APIRoutes documents the job scheduler's HTTP API (docs/openapi.yaml).
func APIRoutes() []apidoc.Route {
	const base = "/api/v1/jobs"
	t := "jobs"
	limit := apidoc.Param{Name: "limit", Type: "integer"}
	return []apidoc.Route{
		{Method: "GET", Path: base, Tag: t, Summary: "List the jobs the caller may read", Query: []apidoc.Param{apidoc.Q("app", "only this app")}, Response: api.List[*job.Job]{}},
		{Method: "POST", Path: base, Tag: t, Summary: "Create a job (schedules tighter than the server's minimum need an unrestricted admin)", Body: job.Job{}, Status: 201, Response: job.Job{}},
		{Method: "GET", Path: base + "/{id}", Tag: t, Summary: "Get a job by id or name (the webhook's query string is hidden from non-editors)", Response: job.Job{}},
		{Method: "PUT", Path: base + "/{id}", Tag: t, Summary: "Replace a job's definition; its schedule restarts from now", Body: job.Job{}, Response: job.Job{}},
		{Method: "DELETE", Path: base + "/{id}", Tag: t, Summary: "Delete a job", Status: 204},
		{Method: "POST", Path: base + "/{id}/enable", Tag: t, Summary: "Enable a job's schedule", Response: job.Job{}},
		{Method: "POST", Path: base + "/{id}/disable", Tag: t, Summary: "Disable a job's schedule", Response: job.Job{}},
		{Method: "POST", Path: base + "/{id}/trigger", Tag: t, Summary: "Run a job now (body optional: {params})", Body: struct {
			Params string `json:"params"`
		}{}, Status: 202, Response: job.Triggered{}},
		{Method: "GET", Path: base + "/{id}/glue", Tag: t, Summary: "A glue job's versions", Response: api.List[job.GlueVersion]{}},
		{Method: "POST", Path: base + "/{id}/glue", Tag: t, Summary: "Save a new glue version (admin: it runs on executors)", Body: job.GlueSource{}, Status: 201, Response: job.GlueVersion{}},
		{Method: "GET", Path: base + "/{id}/glue/{version}", Tag: t, Summary: "One glue version", Response: job.GlueVersion{}},
		{Method: "POST", Path: base + "/{id}/glue/{version}/rollback", Tag: t, Summary: "Make an old glue version current again, as a new version (admin)", Status: 201, Response: job.GlueVersion{}},
		{Method: "GET", Path: base + "/{id}/glue-diff", Tag: t, Summary: "Diff two glue versions", Query: []apidoc.Param{{Name: "from", Type: "integer"}, {Name: "to", Type: "integer"}}, Response: job.GlueDiff{}},
		{Method: "GET", Path: base + "/{id}/runs", Tag: t, Summary: "A job's runs, newest first (before: the runs with a lower ID, the next page)", Query: []apidoc.Param{limit, {Name: "before", Type: "integer", Description: "a run ID: list the runs older than it"}}, Response: api.List[job.Run]{}},
		{Method: "GET", Path: base + "/{id}/flows", Tag: t, Summary: "A workflow job's flow runs, newest first", Query: []apidoc.Param{limit}, Response: api.List[job.FlowRun]{}},
		{Method: "GET", Path: "/api/v1/job-runs/{run}", Tag: t, Summary: "Get a run", Response: job.Run{}},
		{Method: "POST", Path: "/api/v1/job-runs/{run}/kill", Tag: t, Summary: "Kill a running run", Status: 202},
		{Method: "GET", Path: "/api/v1/job-runs/{run}/logs", Tag: t, Summary: "A run's log from byte offset from; next is where to continue", Query: []apidoc.Param{{Name: "from", Type: "integer"}}, Response: job.LogChunk{}},
		{Method: "GET", Path: "/api/v1/job-flows/{flow}", Tag: t, Summary: "A flow run with every node's status", Response: job.FlowRun{}},
		{Method: "POST", Path: "/api/v1/job-flows/{flow}/nodes/{node}/retry", Tag: t, Summary: "Retry a failed node of a flow run", Status: 202, Response: job.Triggered{}},
		{Method: "GET", Path: "/api/v1/job-executors", Tag: t, Summary: "Live executors", Query: []apidoc.Param{apidoc.Q("app", "only this app")}, Response: api.List[job.ExecutorInfo]{}},
		{Method: "GET", Path: "/api/v1/job-status", Tag: t, Summary: "This server's partitions and slow executors", Response: job.Status{}},
	}
}
