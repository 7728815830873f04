package console

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/job"
)

// The job form creates and edits jobs (XXL-JOB admin's "add/edit task"):
// the fields people set by hand; the others (children, flows, alarms) stay
// as they are on an edit and are set through the API or the CLI. The
// scheduler validates; a refused form comes back with its values and the
// field named.

func (c *Console) registerJobForm(mux *http.ServeMux) {
	mux.Handle("GET /jobs/new", c.page(func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
			return err
		}
		c.renderJobForm(w, r, http.StatusOK, &job.Job{Enabled: true, Trigger: job.Trigger{Kind: job.TriggerCron}}, "")
		return nil
	}))
	mux.Handle("POST /jobs/new", c.page(func(w http.ResponseWriter, r *http.Request) error {
		j := &job.Job{}
		if err := jobFromForm(r, j); err != nil {
			c.renderJobForm(w, r, http.StatusBadRequest, j, err.Error())
			return nil
		}
		if err := auth.Check(r.Context(), auth.PermEdit, "", j.App, ""); err != nil {
			return err
		}
		out, err := c.cfg.Jobs.Create(r.Context(), *j)
		if err != nil {
			if api.Internal(err) {
				return err
			}
			c.renderJobForm(w, r, http.StatusBadRequest, j, api.From(err).Message)
			return nil
		}
		c.cfg.Jobs.AuditAction(r.Context(), "job.create", out, out)
		http.Redirect(w, r, fmt.Sprintf("/jobs/%d?msg=%s", out.ID, "job+"+out.Name+"+created"), http.StatusSeeOther)
		return nil
	}))
	mux.Handle("GET /jobs/edit/{id}", c.page(func(w http.ResponseWriter, r *http.Request) error {
		j, err := c.jobOf(r, auth.PermEdit)
		if err != nil {
			return err
		}
		c.renderJobForm(w, r, http.StatusOK, j, "")
		return nil
	}))
	mux.Handle("POST /jobs/edit/{id}", c.page(func(w http.ResponseWriter, r *http.Request) error {
		before, err := c.jobOf(r, auth.PermEdit)
		if err != nil {
			return err
		}
		j := *before
		if err := jobFromForm(r, &j); err != nil {
			c.renderJobForm(w, r, http.StatusBadRequest, &j, err.Error())
			return nil
		}
		if err := auth.Check(r.Context(), auth.PermEdit, "", j.App, ""); err != nil {
			return err
		}
		out, err := c.cfg.Jobs.Update(r.Context(), before.ID, j)
		if err != nil {
			if api.Internal(err) {
				return err
			}
			c.renderJobForm(w, r, http.StatusBadRequest, &j, api.From(err).Message)
			return nil
		}
		c.cfg.Jobs.AuditAction(r.Context(), "job.update", out, out)
		http.Redirect(w, r, fmt.Sprintf("/jobs/%d?msg=%s", out.ID, "job+"+out.Name+"+saved"), http.StatusSeeOther)
		return nil
	}))
}

// registerGlueEditor lets admins edit a glue job's code from its page:
// save a new version, or roll back to an earlier one (both audited). Glue
// runs on executors, so, as in the API, it needs the admin role.
func (c *Console) registerGlueEditor(mux *http.ServeMux) {
	mux.Handle("POST /jobs/glue/{id}", c.page(func(w http.ResponseWriter, r *http.Request) error {
		j, err := c.jobOf(r, auth.PermAdmin)
		if err != nil {
			return err
		}
		v, err := c.cfg.Jobs.SaveGlue(r.Context(), j.ID, r.PostFormValue("source"), r.PostFormValue("note"), auth.Actor(r.Context()))
		if err != nil {
			return err
		}
		c.cfg.Jobs.AuditAction(r.Context(), "job.glue.save", j, v)
		http.Redirect(w, r, fmt.Sprintf("/jobs/%d?msg=glue+version+%d+saved", j.ID, v.Version), http.StatusSeeOther)
		return nil
	}))
	mux.Handle("POST /jobs/glue/{id}/rollback", c.page(func(w http.ResponseWriter, r *http.Request) error {
		j, err := c.jobOf(r, auth.PermAdmin)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(r.PostFormValue("version"))
		if err != nil || n <= 0 {
			return api.BadRequest("glue version %q: want a positive number", r.PostFormValue("version"))
		}
		v, err := c.cfg.Jobs.RollbackGlue(r.Context(), j.ID, n, auth.Actor(r.Context()))
		if err != nil {
			return err
		}
		c.cfg.Jobs.AuditAction(r.Context(), "job.glue.rollback", j, v)
		http.Redirect(w, r, fmt.Sprintf("/jobs/%d?msg=glue+rolled+back+to+version+%d+(now+version+%d)", j.ID, n, v.Version), http.StatusSeeOther)
		return nil
	}))
}

func (c *Console) renderJobForm(w http.ResponseWriter, r *http.Request, status int, j *job.Job, errMsg string) {
	title := "New job"
	if j.ID != 0 {
		title = "Edit " + j.Name
	}
	at := ""
	if !j.Trigger.At.IsZero() {
		at = j.Trigger.At.UTC().Format("2006-01-02T15:04:05")
	}
	every := ""
	if j.Trigger.Every != 0 {
		every = j.Trigger.Every.D().String()
	}
	timeout := ""
	if j.Timeout != 0 {
		timeout = j.Timeout.D().String()
	}
	c.renderStatus(w, r, status, "jobform", title, map[string]any{
		"Job": j, "Title": title, "FormError": errMsg, "At": at, "Every": every, "Timeout": timeout,
		"Kinds":    []string{job.TriggerCron, job.TriggerRate, job.TriggerDelay, job.TriggerOnce, job.TriggerManual},
		"Routes":   []string{job.RouteRoundRobin, job.RouteFirst, job.RouteLast, job.RouteRandom, job.RouteHash, job.RouteLFU, job.RouteLRU, job.RouteFailover, job.RouteBusyover, job.RouteBroadcast},
		"Blocks":   []string{job.BlockSerial, job.BlockDiscard, job.BlockCover},
		"Misfires": []string{job.MisfireFireOnce, job.MisfireSkip},
	})
}

// jobFromForm applies the form's fields to j; it names the field a value
// does not parse in (the scheduler checks the rest).
func jobFromForm(r *http.Request, j *job.Job) error {
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("form: %v", err)
	}
	f := func(k string) string { return strings.TrimSpace(r.PostForm.Get(k)) }
	j.Name, j.App, j.Handler, j.Params = f("name"), f("app"), f("handler"), r.PostForm.Get("params")
	j.Trigger = job.Trigger{Kind: f("kind"), Cron: f("cron"), TimeZone: f("time_zone")}
	j.Route, j.Block, j.Misfire = f("route"), f("block"), f("misfire")
	j.Enabled = r.PostForm.Get("enabled") != ""
	var errs []error
	if v := f("every"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("every %q: want a duration such as 30s or 5m", v))
		}
		j.Trigger.Every = job.Duration(d)
	}
	if v := f("at"); v != "" {
		t, err := time.Parse("2006-01-02T15:04:05", v)
		if err != nil {
			t, err = time.Parse("2006-01-02T15:04", v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("at %q: want a date and time (UTC)", v))
		}
		j.Trigger.At = t.UTC()
	}
	if v := f("retries"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("retries %q: want a number", v))
		}
		j.Retries = n
	} else {
		j.Retries = 0
	}
	if v := f("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("timeout %q: want a duration such as 10m", v))
		}
		j.Timeout = job.Duration(d)
	} else {
		j.Timeout = 0
	}
	return errors.Join(errs...)
}
