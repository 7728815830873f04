package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/job"
	jobserver "github.com/tangram-dev/tangram/job/server"
)

func (c *Console) registerJobs(mux *http.ServeMux) {
	if c.cfg.Jobs == nil {
		return
	}
	mux.Handle("GET /jobs", c.page(c.jobsPage))
	c.registerJobForm(mux)
	c.registerGlueEditor(mux)
	mux.Handle("GET /jobs/{id}", c.page(c.jobPage))
	mux.Handle("POST /jobs/{id}/{action}", c.page(c.jobAction))
	mux.Handle("GET /jobs/runs/{run}", c.page(c.runPage))
	mux.Handle("GET /jobs/runs/{run}/log", c.page(c.runLog))
	mux.Handle("POST /jobs/runs/{run}/kill", c.page(c.runKill))
	mux.Handle("POST /jobs/flows/{flow}/nodes/{node}/retry", c.page(c.flowRetry))
}

type jobRow struct {
	*job.Job
	Last     *job.Run
	LastFlow *job.FlowRun // a flow job's latest flow run (it has no runs of its own)
}

// jobsPage is the dashboard: runs of the last day, success rate, lateness,
// runs per day, the jobs and the executors.
func (c *Console) jobsPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	s := c.cfg.Jobs
	stats, err := s.Stats(r.Context())
	if err != nil {
		return err
	}
	jobs, err := s.List(r.Context(), "")
	if err != nil {
		return err
	}
	var rows []jobRow
	for _, j := range jobserver.VisibleJobs(r.Context(), jobs) {
		row := jobRow{Job: j}
		if j.Flow != nil {
			if fs, err := s.Flows(r.Context(), j.ID, 1); err == nil && len(fs) > 0 {
				row.LastFlow = &fs[0]
			}
		} else if rs, err := s.Runs(r.Context(), j.ID, 1); err == nil && len(rs) > 0 {
			row.Last = &rs[0]
		}
		rows = append(rows, row)
	}
	ex, err := s.Executors(r.Context(), "")
	if err != nil {
		return err
	}
	maxDay := 1
	for _, d := range stats.PerDay {
		maxDay = max(maxDay, d.Runs)
	}
	var cs chartSet
	cs.add(c.metricChart("Runs finished per minute", "",
		metricLine{class: "line-calls", name: "succeeded", metric: "tangram_job_runs_finished_total", match: map[string]string{"status": job.StatusSucceeded}},
		metricLine{class: "line-errors", name: "failed", metric: "tangram_job_runs_finished_total", match: map[string]string{"status": job.StatusFailed}}))
	cs.add(c.metricChart("Dispatch lateness p99 (ms)", " ms",
		metricLine{class: "line-p99", name: "p99", metric: "tangram_job_dispatch_lateness_seconds_bucket", how: p99Of, scale: 1000}))
	c.render(w, r, "jobs", "Jobs", map[string]any{"Stats": stats, "Jobs": rows, "Executors": ex, "MaxDay": maxDay, "Charts": cs})
	return nil
}

func (c *Console) jobOf(r *http.Request, perm auth.Perm) (*job.Job, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil, api.NotFound("no job %q", r.PathValue("id"))
	}
	j, err := c.cfg.Jobs.Get(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if err := auth.Check(r.Context(), perm, "", j.App, ""); err != nil {
		return nil, err
	}
	return j, nil
}

// flowLayer is one rank of a DAG: nodes whose longest path from a root has
// the same length, drawn as a row.
type flowLayer []job.FlowNodeState

func layers(nodes []job.FlowNodeState) []flowLayer {
	rank := map[string]int{}
	var depth func(n job.FlowNodeState, seen int) int
	byName := map[string]job.FlowNodeState{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	depth = func(n job.FlowNodeState, guard int) int {
		if d, ok := rank[n.Name]; ok {
			return d
		}
		d := 0
		if guard < len(nodes) {
			for _, a := range n.After {
				d = max(d, depth(byName[a], guard+1)+1)
			}
		}
		rank[n.Name] = d
		return d
	}
	var out []flowLayer
	for _, n := range nodes {
		d := depth(n, 0)
		for len(out) <= d {
			out = append(out, nil)
		}
		out[d] = append(out[d], n)
	}
	return out
}

func (c *Console) jobPage(w http.ResponseWriter, r *http.Request) error {
	j, err := c.jobOf(r, auth.PermRead)
	if err != nil {
		return err
	}
	s := c.cfg.Jobs
	before, _ := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
	runs, err := s.RunsBefore(r.Context(), j.ID, before, 50)
	if err != nil {
		return err
	}
	def, _ := json.MarshalIndent(j, "", "  ")
	older := int64(0)
	if len(runs) == 50 {
		older = runs[len(runs)-1].ID
	}
	data := map[string]any{"Job": j, "Runs": runs, "Older": older, "Before": before, "Def": string(def),
		"CanTrigger": auth.FromContext(r.Context()).Can(auth.PermRelease, "", j.App, ""),
		"CanEdit":    auth.FromContext(r.Context()).Can(auth.PermEdit, "", j.App, "")}
	if j.Flow != nil {
		flows, _ := s.Flows(r.Context(), j.ID, 10)
		data["Flows"] = flows
		var states []job.FlowNodeState
		if len(flows) > 0 {
			if f, err := s.GetFlow(r.Context(), flows[0].ID); err == nil {
				data["Flow"] = f
				states = f.Nodes
			}
		}
		if states == nil {
			for _, n := range j.Flow.Nodes {
				states = append(states, job.FlowNodeState{FlowNode: n, Status: "waiting"})
			}
		}
		data["Layers"] = layers(states)
	}
	if job.GlueType(j.Handler) != "" {
		if g, err := s.Glue(r.Context(), j.ID, 0); err == nil {
			data["Glue"] = g
		}
		hist, _ := s.GlueHistory(r.Context(), j.ID)
		data["GlueHistory"] = hist
		data["CanGlue"] = auth.FromContext(r.Context()).Can(auth.PermAdmin, "", j.App, "")
	}
	c.render(w, r, "job", j.Name, data)
	return nil
}

// jobAction triggers, enables or disables a job (audited like the API).
func (c *Console) jobAction(w http.ResponseWriter, r *http.Request) error {
	action := r.PathValue("action")
	perm := auth.PermEdit
	if action == "trigger" {
		perm = auth.PermRelease
	}
	j, err := c.jobOf(r, perm)
	if err != nil {
		return err
	}
	s := c.cfg.Jobs
	msg := ""
	switch action {
	case "trigger":
		ids, err := s.Trigger(r.Context(), j.ID, r.FormValue("params"))
		if err != nil {
			return err
		}
		s.AuditAction(r.Context(), "job.trigger", j, map[string]any{"runs": ids, "params": r.FormValue("params")})
		msg = "triggered " + strconv.Itoa(len(ids)) + " run(s)"
	case "enable", "disable":
		out, err := s.SetEnabled(r.Context(), j.ID, action == "enable")
		if err != nil {
			return err
		}
		s.AuditAction(r.Context(), "job."+action, out, out)
		msg = action + "d"
	default:
		http.NotFound(w, r)
		return nil
	}
	http.Redirect(w, r, "/jobs/"+strconv.FormatInt(j.ID, 10)+"?msg="+url.QueryEscape(msg), http.StatusSeeOther)
	return nil
}

func (c *Console) runOf(r *http.Request, perm auth.Perm) (*job.Run, *job.Job, error) {
	id, err := strconv.ParseInt(r.PathValue("run"), 10, 64)
	if err != nil {
		return nil, nil, api.NotFound("no run %q", r.PathValue("run"))
	}
	run, err := c.cfg.Jobs.GetRun(r.Context(), id)
	if err != nil {
		return nil, nil, err
	}
	j, _ := c.cfg.Jobs.Get(r.Context(), run.JobID)
	app := ""
	if j != nil {
		app = j.App
	}
	if err := auth.Check(r.Context(), perm, "", app, ""); err != nil {
		return nil, nil, err
	}
	return run, j, nil
}

func (c *Console) runPage(w http.ResponseWriter, r *http.Request) error {
	run, j, err := c.runOf(r, auth.PermRead)
	if err != nil {
		return err
	}
	text, next, err := c.cfg.Jobs.Logs(r.Context(), run.ID, 0)
	if err != nil {
		return err
	}
	app := ""
	if j != nil {
		app = j.App
	}
	c.render(w, r, "jobrun", "Run "+strconv.FormatInt(run.ID, 10), map[string]any{"Run": run, "Job": j, "Log": text, "Next": next,
		"Live":    run.Status == job.StatusPending || run.Status == job.StatusRunning,
		"CanKill": auth.FromContext(r.Context()).Can(auth.PermRelease, "", app, "")})
	return nil
}

// runLog serves the log from a chunk on, for the run page's live view.
func (c *Console) runLog(w http.ResponseWriter, r *http.Request) error {
	run, _, err := c.runOf(r, auth.PermRead)
	if err != nil {
		return err
	}
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	text, next, err := c.cfg.Jobs.Logs(r.Context(), run.ID, max(from, 0))
	if err != nil {
		return err
	}
	api.WriteJSON(w, 200, map[string]any{"text": text, "next": next, "status": run.Status})
	return nil
}

func (c *Console) runKill(w http.ResponseWriter, r *http.Request) error {
	run, j, err := c.runOf(r, auth.PermRelease)
	if err != nil {
		return err
	}
	if err := c.cfg.Jobs.Kill(r.Context(), run.ID); err != nil {
		return err
	}
	if j != nil {
		c.cfg.Jobs.AuditAction(r.Context(), "job.kill", j, map[string]any{"run": run.ID})
	}
	http.Redirect(w, r, "/jobs/runs/"+strconv.FormatInt(run.ID, 10)+"?msg="+url.QueryEscape("kill sent"), http.StatusSeeOther)
	return nil
}

func (c *Console) flowRetry(w http.ResponseWriter, r *http.Request) error {
	fid, err := strconv.ParseInt(r.PathValue("flow"), 10, 64)
	if err != nil {
		return api.NotFound("no flow run %q", r.PathValue("flow"))
	}
	f, err := c.cfg.Jobs.GetFlow(r.Context(), fid)
	if err != nil {
		return err
	}
	j, err := c.cfg.Jobs.Get(r.Context(), f.JobID)
	if err != nil {
		return err
	}
	if err := auth.Check(r.Context(), auth.PermRelease, "", j.App, ""); err != nil {
		return err
	}
	if _, err := c.cfg.Jobs.RetryNode(r.Context(), fid, r.PathValue("node")); err != nil {
		return err
	}
	c.cfg.Jobs.AuditAction(r.Context(), "job.flow.retry", j, map[string]any{"flow": fid, "node": r.PathValue("node")})
	http.Redirect(w, r, "/jobs/"+strconv.FormatInt(j.ID, 10)+"?msg="+url.QueryEscape("retrying "+r.PathValue("node")), http.StatusSeeOther)
	return nil
}
