package server

import (
	"context"
	"net/http"
	"strconv"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
)

// Permissions are per app (the executor group): reading needs read, jobs
// are created and changed with edit, triggered and killed with release.
// Every change is audited.

// Mount mounts the job API under /api/v1/jobs; wrap authenticates every
// request.
func (s *Scheduler) Mount(mux api.Mux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, fn api.HandlerFunc) {
		mux.Handle(pattern, wrap(api.Handler(s.log, fn)))
	}
	const base = "/api/v1/jobs"
	id := func(r *http.Request, name string) (int64, error) {
		v, err := strconv.ParseInt(r.PathValue(name), 10, 64)
		if err != nil || v <= 0 {
			return 0, api.BadRequest("%s %q: not a positive number", name, r.PathValue(name))
		}
		return v, nil
	}
	// loadJob loads a job by the {id} path value (a number or a name) and
	// checks perm on its app.
	loadJob := func(r *http.Request, perm auth.Perm) (*job.Job, error) {
		var j *job.Job
		var err error
		if n, perr := strconv.ParseInt(r.PathValue("id"), 10, 64); perr == nil {
			j, err = s.Get(r.Context(), n)
		} else {
			j, err = s.ByName(r.Context(), r.PathValue("id"))
		}
		if err != nil {
			return nil, err
		}
		if err := auth.Check(r.Context(), perm, "", j.App, ""); err != nil {
			return nil, err
		}
		return j, nil
	}
	h("GET "+base, func(w http.ResponseWriter, r *http.Request) error {
		app := r.URL.Query().Get("app")
		if err := auth.Check(r.Context(), auth.PermRead, "", app, ""); err != nil {
			return err
		}
		jobs, err := s.List(r.Context(), app)
		if err != nil {
			return err
		}
		vis := VisibleJobs(r.Context(), jobs)
		for i, j := range vis {
			vis[i] = ForReader(r.Context(), j)
		}
		api.WriteJSON(w, 200, api.List[*job.Job]{Items: vis})
		return nil
	})
	h("POST "+base, func(w http.ResponseWriter, r *http.Request) error {
		var in job.Job
		if err := api.Decode(r, &in); err != nil {
			return err
		}
		if err := auth.Check(r.Context(), auth.PermEdit, "", in.App, ""); err != nil {
			return err
		}
		out, err := s.Create(r.Context(), in)
		if err != nil {
			return err
		}
		s.audit(r.Context(), "job.create", out, nil, out)
		api.WriteJSON(w, 201, out)
		return nil
	})
	h("GET "+base+"/{id}", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermRead)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, ForReader(r.Context(), j))
		return nil
	})
	h("PUT "+base+"/{id}", func(w http.ResponseWriter, r *http.Request) error {
		before, err := loadJob(r, auth.PermEdit)
		if err != nil {
			return err
		}
		var in job.Job
		if err := api.Decode(r, &in); err != nil {
			return err
		}
		if err := auth.Check(r.Context(), auth.PermEdit, "", in.App, ""); err != nil {
			return err
		}
		out, err := s.Update(r.Context(), before.ID, in)
		if err != nil {
			return err
		}
		s.audit(r.Context(), "job.update", out, before, out)
		api.WriteJSON(w, 200, out)
		return nil
	})
	h("DELETE "+base+"/{id}", func(w http.ResponseWriter, r *http.Request) error {
		before, err := loadJob(r, auth.PermEdit)
		if err != nil {
			return err
		}
		if err := s.Delete(r.Context(), before.ID); err != nil {
			return err
		}
		s.audit(r.Context(), "job.delete", before, before, nil)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	for _, v := range []struct {
		verb string
		on   bool
	}{{"enable", true}, {"disable", false}} {
		h("POST "+base+"/{id}/"+v.verb, func(w http.ResponseWriter, r *http.Request) error {
			before, err := loadJob(r, auth.PermEdit)
			if err != nil {
				return err
			}
			out, err := s.SetEnabled(r.Context(), before.ID, v.on)
			if err != nil {
				return err
			}
			s.audit(r.Context(), "job."+v.verb, out, before, out)
			api.WriteJSON(w, 200, out)
			return nil
		})
	}
	h("POST "+base+"/{id}/trigger", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermRelease)
		if err != nil {
			return err
		}
		var in struct {
			Params string `json:"params"`
		}
		if r.ContentLength != 0 {
			if err := api.Decode(r, &in); err != nil {
				return err
			}
		}
		ids, err := s.Trigger(r.Context(), j.ID, in.Params)
		if err != nil {
			return err
		}
		out := job.Triggered{Runs: ids}
		if j.Flow != nil && len(ids) > 0 {
			out.Flow = s.flowOfRun(r.Context(), ids[0])
		}
		s.audit(r.Context(), "job.trigger", j, nil, map[string]any{"runs": ids, "flow": out.Flow, "params": in.Params})
		api.WriteJSON(w, 202, out)
		return nil
	})
	// Glue: reading needs read; saving and rolling back run code on
	// executors, so they need the admin role.
	h("GET "+base+"/{id}/glue", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermRead)
		if err != nil {
			return err
		}
		hist, err := s.GlueHistory(r.Context(), j.ID)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[job.GlueVersion]{Items: hist})
		return nil
	})
	h("POST "+base+"/{id}/glue", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermAdmin)
		if err != nil {
			return err
		}
		var in job.GlueSource
		if err := api.Decode(r, &in); err != nil {
			return err
		}
		v, err := s.SaveGlue(r.Context(), j.ID, in.Source, in.Note, auth.Actor(r.Context()))
		if err != nil {
			return err
		}
		s.audit(r.Context(), "job.glue.save", j, nil, v)
		api.WriteJSON(w, 201, v)
		return nil
	})
	glueVersion := func(r *http.Request) (int, error) {
		v := r.PathValue("version")
		if v == "current" {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return 0, api.BadRequest("glue version %q: want a positive number or current", v)
		}
		return n, nil
	}
	h("GET "+base+"/{id}/glue/{version}", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermRead)
		if err != nil {
			return err
		}
		n, err := glueVersion(r)
		if err != nil {
			return err
		}
		v, err := s.Glue(r.Context(), j.ID, n)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, v)
		return nil
	})
	h("POST "+base+"/{id}/glue/{version}/rollback", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermAdmin)
		if err != nil {
			return err
		}
		n, err := glueVersion(r)
		if err != nil {
			return err
		}
		v, err := s.RollbackGlue(r.Context(), j.ID, n, auth.Actor(r.Context()))
		if err != nil {
			return err
		}
		s.audit(r.Context(), "job.glue.rollback", j, nil, v)
		api.WriteJSON(w, 201, v)
		return nil
	})
	h("GET "+base+"/{id}/glue-diff", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermRead)
		if err != nil {
			return err
		}
		from, err1 := strconv.Atoi(r.URL.Query().Get("from"))
		to, err2 := strconv.Atoi(r.URL.Query().Get("to"))
		if err1 != nil || err2 != nil || from <= 0 || to < 0 {
			return api.BadRequest("from and to: glue version numbers (to=0: current)")
		}
		d, err := s.DiffGlue(r.Context(), j.ID, from, to)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, job.GlueDiff{Diff: d})
		return nil
	})
	h("GET "+base+"/{id}/runs", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermRead)
		if err != nil {
			return err
		}
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		before, _ := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
		runs, err := s.RunsBefore(r.Context(), j.ID, before, limit)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[job.Run]{Items: runs})
		return nil
	})
	run := func(r *http.Request, perm auth.Perm) (*job.Run, error) {
		rid, err := id(r, "run")
		if err != nil {
			return nil, err
		}
		rn, err := s.GetRun(r.Context(), rid)
		if err != nil {
			return nil, err
		}
		j, err := s.Get(r.Context(), rn.JobID)
		app := ""
		if err == nil {
			app = j.App
		}
		if err := auth.Check(r.Context(), perm, "", app, ""); err != nil {
			return nil, err
		}
		return rn, nil
	}
	h("GET /api/v1/job-runs/{run}", func(w http.ResponseWriter, r *http.Request) error {
		rn, err := run(r, auth.PermRead)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, rn)
		return nil
	})
	h("POST /api/v1/job-runs/{run}/kill", func(w http.ResponseWriter, r *http.Request) error {
		rn, err := run(r, auth.PermRelease)
		if err != nil {
			return err
		}
		if err := s.Kill(r.Context(), rn.ID); err != nil {
			return err
		}
		s.auditRun(r.Context(), "job.kill", rn)
		w.WriteHeader(http.StatusAccepted)
		return nil
	})
	// Logs: ?from=N returns the chunks from N and the next N; polling it
	// follows a live run.
	h("GET /api/v1/job-runs/{run}/logs", func(w http.ResponseWriter, r *http.Request) error {
		rn, err := run(r, auth.PermRead)
		if err != nil {
			return err
		}
		from, _ := strconv.Atoi(r.URL.Query().Get("from"))
		text, next, err := s.Logs(r.Context(), rn.ID, max(from, 0))
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, job.LogChunk{Text: text, Next: next, Status: rn.Status})
		return nil
	})
	h("GET "+base+"/{id}/flows", func(w http.ResponseWriter, r *http.Request) error {
		j, err := loadJob(r, auth.PermRead)
		if err != nil {
			return err
		}
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		fs, err := s.Flows(r.Context(), j.ID, limit)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[job.FlowRun]{Items: fs})
		return nil
	})
	flow := func(r *http.Request, perm auth.Perm) (*job.FlowRun, error) {
		fid, err := id(r, "flow")
		if err != nil {
			return nil, err
		}
		f, err := s.GetFlow(r.Context(), fid)
		if err != nil {
			return nil, err
		}
		app := ""
		if j, err := s.Get(r.Context(), f.JobID); err == nil {
			app = j.App
		}
		if err := auth.Check(r.Context(), perm, "", app, ""); err != nil {
			return nil, err
		}
		return f, nil
	}
	h("GET /api/v1/job-flows/{flow}", func(w http.ResponseWriter, r *http.Request) error {
		f, err := flow(r, auth.PermRead)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, f)
		return nil
	})
	h("POST /api/v1/job-flows/{flow}/nodes/{node}/retry", func(w http.ResponseWriter, r *http.Request) error {
		f, err := flow(r, auth.PermRelease)
		if err != nil {
			return err
		}
		ids, err := s.RetryNode(r.Context(), f.ID, r.PathValue("node"))
		if err != nil {
			return err
		}
		e := audit.Entry{Actor: auth.Actor(r.Context()), Action: "job.flow.retry", Resource: "job-flow/" + strconv.FormatInt(f.ID, 10) + "/" + r.PathValue("node")}
		if err := audit.Record(r.Context(), s.st, e); err != nil {
			s.log.Error("job: audit record failed", "err", err)
		}
		api.WriteJSON(w, 202, job.Triggered{Runs: ids})
		return nil
	})
	h("GET /api/v1/job-executors", func(w http.ResponseWriter, r *http.Request) error {
		app := r.URL.Query().Get("app")
		if err := auth.Check(r.Context(), auth.PermRead, "", app, ""); err != nil {
			return err
		}
		ex, err := s.Executors(r.Context(), app)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[job.ExecutorInfo]{Items: ex})
		return nil
	})
	h("GET /api/v1/job-status", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
			return err
		}
		api.WriteJSON(w, 200, job.Status{Node: s.Node(), Partitions: s.cfg.Partitions, Owned: s.Owned(), SlowExecutors: s.Slow()})
		return nil
	})
}

// ForReader returns j as the caller in ctx may see it: the alarm webhook's
// query string and user info (where webhook keys live) are hidden from
// those who may not edit the job.
func ForReader(ctx context.Context, j *job.Job) *job.Job {
	if j == nil || j.AlarmWebhook == "" || auth.FromContext(ctx).Can(auth.PermEdit, "", j.App, "") {
		return j
	}
	c := *j
	c.AlarmWebhook = RedactURL(c.AlarmWebhook)
	return &c
}

func redactJob(v any) any {
	if j, ok := v.(*job.Job); ok && j != nil && j.AlarmWebhook != "" {
		c := *j
		c.AlarmWebhook = RedactURL(c.AlarmWebhook)
		return &c
	}
	return v
}

func (s *Scheduler) audit(ctx context.Context, action string, j *job.Job, before, after any) {
	before, after = redactJob(before), redactJob(after)
	e := audit.Entry{Actor: auth.Actor(ctx), Action: action, Resource: "job/" + j.App + "/" + j.Name}
	if before != nil {
		e.Before = audit.Value(before)
	}
	if after != nil {
		e.After = audit.Value(after)
	}
	if err := audit.Record(ctx, s.st, e); err != nil {
		s.log.Error("job: audit record failed", "action", action, "err", err)
	}
}

func (s *Scheduler) auditRun(ctx context.Context, action string, r *job.Run) {
	e := audit.Entry{Actor: auth.Actor(ctx), Action: action, Resource: "job-run/" + strconv.FormatInt(r.ID, 10), Before: audit.Value(r)}
	if err := audit.Record(ctx, s.st, e); err != nil {
		s.log.Error("job: audit record failed", "action", action, "err", err)
	}
}

// AuditAction records an operator's action on a job (the console's
// buttons), as the API does.
func (s *Scheduler) AuditAction(ctx context.Context, action string, j *job.Job, after any) {
	s.audit(ctx, action, j, nil, after)
}

// VisibleJobs keeps the jobs the caller in ctx may read (the rule the API
// and the console share).
func VisibleJobs(ctx context.Context, jobs []*job.Job) []*job.Job {
	return auth.Visible(ctx, jobs, func(j *job.Job) (string, string, string) { return "", j.App, "" })
}
