package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/job"
)

// jobFlags are the fields of a job given on the command line.
type jobFlags struct {
	app, handler, params      string
	cron, tz, every, at, kind string
	route, block, misfire     string
	retries                   int
	backoff, timeout          time.Duration
	disabled                  bool
	children                  []int64
	file                      string
	alarmWebhook              string
	alarmEmail                []string
}

func (f *jobFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.file, "file", "", "read the job as JSON from this file (- for stdin); flags override its fields")
	fl.StringVar(&f.app, "app", "", "executor app (group) that runs it")
	fl.StringVar(&f.handler, "handler", "", "handler name in the executor")
	fl.StringVar(&f.params, "params", "", "parameters passed to the handler")
	fl.StringVar(&f.cron, "cron", "", "cron expression, seconds first (\"*/5 * * * * *\") or five fields")
	fl.StringVar(&f.tz, "tz", "", "time zone of --cron (IANA name; default UTC)")
	fl.StringVar(&f.every, "every", "", "period: fires at this rate (or this long after each run ends, with --kind delay)")
	fl.StringVar(&f.at, "at", "", "fire once at this RFC 3339 time")
	fl.StringVar(&f.kind, "kind", "", "trigger kind: cron, rate, delay, once, manual (default: from the other flags)")
	fl.StringVar(&f.route, "route", "", "routing: first, last, round_robin, random, consistent_hash, least_frequently_used, least_recently_used, failover, busyover, sharding_broadcast")
	fl.StringVar(&f.block, "block", "", "while the previous run goes: serial, discard_later, cover_early")
	fl.StringVar(&f.misfire, "misfire", "", "missed fires: skip or fire_once")
	fl.IntVar(&f.retries, "retries", 0, "retries after a failure")
	fl.DurationVar(&f.backoff, "retry-backoff", 0, "wait before the first retry (doubles each time)")
	fl.DurationVar(&f.timeout, "timeout", 0, "kill a run that takes longer")
	fl.BoolVar(&f.disabled, "disabled", false, "create it disabled")
	fl.Int64SliceVar(&f.children, "child", nil, "job ID to trigger after a success (repeatable)")
	fl.StringVar(&f.alarmWebhook, "alarm-webhook", "", "URL that receives a JSON POST when a run fails for good, times out or is killed")
	fl.StringSliceVar(&f.alarmEmail, "alarm-email", nil, "addresses e-mailed the same alarm (the server needs --smtp-addr)")
}

// apply merges the flags that were given into j.
func (f *jobFlags) apply(cmd *cobra.Command, j *job.Job) error {
	if f.file != "" {
		var b []byte
		var err error
		if f.file == "-" {
			b, err = io.ReadAll(cmd.InOrStdin())
		} else {
			b, err = os.ReadFile(f.file)
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, j); err != nil {
			return fmt.Errorf("--file: %w", err)
		}
	}
	ch := cmd.Flags().Changed
	set := func(name string, dst *string, v string) {
		if ch(name) {
			*dst = v
		}
	}
	set("app", &j.App, f.app)
	set("handler", &j.Handler, f.handler)
	set("params", &j.Params, f.params)
	set("route", &j.Route, f.route)
	set("block", &j.Block, f.block)
	set("misfire", &j.Misfire, f.misfire)
	set("tz", &j.Trigger.TimeZone, f.tz)
	if ch("cron") {
		j.Trigger.Kind, j.Trigger.Cron = job.TriggerCron, f.cron
	}
	if ch("every") {
		d, err := time.ParseDuration(f.every)
		if err != nil {
			return fmt.Errorf("--every %q: %w", f.every, err)
		}
		j.Trigger.Kind, j.Trigger.Every = job.TriggerRate, job.Duration(d)
	}
	if ch("at") {
		t, err := time.Parse(time.RFC3339, f.at)
		if err != nil {
			return fmt.Errorf("--at %q: want an RFC 3339 time like 2026-12-01T08:00:00+08:00", f.at)
		}
		j.Trigger.Kind, j.Trigger.At = job.TriggerOnce, t
	}
	set("kind", &j.Trigger.Kind, f.kind)
	if ch("retries") {
		j.Retries = f.retries
	}
	if ch("retry-backoff") {
		j.RetryBackoff = job.Duration(f.backoff)
	}
	if ch("timeout") {
		j.Timeout = job.Duration(f.timeout)
	}
	if ch("child") {
		j.Children = f.children
	}
	if ch("disabled") {
		j.Enabled = !f.disabled
	}
	set("alarm-webhook", &j.AlarmWebhook, f.alarmWebhook)
	if ch("alarm-email") {
		j.AlarmEmail = f.alarmEmail
	}
	return nil
}

func jobRows(w *tabwriter.Writer, list []*job.Job) {
	row(w, "ID", "NAME", "APP", "HANDLER", "TRIGGER", "ROUTE", "ENABLED", "NEXT FIRE")
	for _, j := range list {
		tr := j.Trigger.Kind
		switch j.Trigger.Kind {
		case job.TriggerCron:
			tr = "cron " + j.Trigger.Cron
			if j.Trigger.TimeZone != "" {
				tr += " " + j.Trigger.TimeZone
			}
		case job.TriggerRate, job.TriggerDelay:
			tr += " " + j.Trigger.Every.D().String()
		case job.TriggerOnce:
			tr += " " + j.Trigger.At.Format(time.RFC3339)
		}
		next := "-"
		if !j.NextFireAt.IsZero() {
			next = j.NextFireAt.Local().Format("2006-01-02 15:04:05.000")
		}
		row(w, j.ID, j.Name, j.App, j.Handler, tr, j.Route, j.Enabled, next)
	}
}

func runRows(w *tabwriter.Writer, list []job.Run) {
	row(w, "RUN", "FIRE AT", "CAUSE", "ATTEMPT", "SHARD", "STATUS", "EXECUTOR", "DURATION", "ERROR")
	for _, r := range list {
		d := "-"
		if !r.FinishedAt.IsZero() && !r.StartedAt.IsZero() {
			d = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
		}
		row(w, r.ID, r.FireAt.Local().Format("01-02 15:04:05.000"), r.Cause, r.Attempt, fmt.Sprintf("%d/%d", r.ShardIndex, r.ShardTotal),
			r.Status, r.Executor, d, r.Error)
	}
}

func newJobCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Job scheduler: jobs, triggers, runs, logs, kills"}

	var af jobFlags
	add := &cobra.Command{Use: "add NAME", Short: "Create a job (e.g. --app demo --handler hello --cron \"*/5 * * * * *\")", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			j := job.Job{Name: args[0], Enabled: true}
			if err := af.apply(cmd, &j); err != nil {
				return err
			}
			j.Name = args[0]
			out, err := g.jobAdmin().Create(ctx, &j)
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) { jobRows(w, []*job.Job{out}) })
		}}
	af.add(add)

	var ef jobFlags
	edit := &cobra.Command{Use: "edit JOB", Short: "Change a job (by ID or name): the flags given replace those fields", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			a := g.jobAdmin()
			j, err := a.Job(ctx, args[0])
			if err != nil {
				return err
			}
			if err := ef.apply(cmd, j); err != nil {
				return err
			}
			out, err := a.Update(ctx, args[0], j)
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) { jobRows(w, []*job.Job{out}) })
		}}
	ef.add(edit)

	var app string
	list := &cobra.Command{Use: "list", Short: "List jobs", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.jobAdmin().Jobs(ctx, app)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) { jobRows(w, out) })
	}}
	list.Flags().StringVar(&app, "app", "", "only this app's jobs")

	get := &cobra.Command{Use: "get JOB", Short: "Show a job (by ID or name)", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.jobAdmin().Job(ctx, args[0])
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) { jobRows(w, []*job.Job{out}) })
	}}

	var params string
	var follow bool
	trigger := &cobra.Command{Use: "trigger JOB", Short: "Run a job now (--params overrides its parameters; --follow streams the log)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tr, err := g.jobAdmin().Trigger(ctx, args[0], params)
			if err != nil {
				return err
			}
			if tr.Flow != 0 {
				// A flow: its own ID; the first nodes' runs follow.
				fmt.Fprintf(g.Out, "flow %d (first nodes: runs %s)\n", tr.Flow, joinIDs(tr.Runs))
				return nil
			}
			for _, id := range tr.Runs {
				fmt.Fprintf(g.Out, "run %d\n", id)
			}
			if follow && len(tr.Runs) > 0 {
				return followLog(ctx, g, tr.Runs[0], true)
			}
			return nil
		}}
	trigger.Flags().StringVar(&params, "params", "", "parameters for this run")
	trigger.Flags().BoolVarP(&follow, "follow", "f", false, "stream the run's log until it ends")

	var limit int
	runs := &cobra.Command{Use: "runs JOB", Short: "List a job's runs, newest first", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.jobAdmin().Runs(ctx, args[0], limit)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) { runRows(w, out) })
	}}
	runs.Flags().IntVar(&limit, "limit", 20, "how many")

	kill := &cobra.Command{Use: "kill RUN", Short: "Kill a running run", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		id, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil {
			return fmt.Errorf("run %q: not a number", args[0])
		}
		if err := g.jobAdmin().Kill(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(g.Out, "kill sent to run %s\n", args[0])
		return nil
	}}

	var lf bool
	logs := &cobra.Command{Use: "logs RUN", Short: "Print a run's log (-f follows it until the run ends)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var id int64
			if _, err := fmt.Sscan(args[0], &id); err != nil {
				return fmt.Errorf("run %q: not a number", args[0])
			}
			return followLog(cmd.Context(), g, id, lf)
		}}
	logs.Flags().BoolVarP(&lf, "follow", "f", false, "follow the log until the run ends")

	toggle := func(verb string) *cobra.Command {
		return &cobra.Command{Use: verb + " JOB", Short: strings.ToUpper(verb[:1]) + verb[1:] + " a job's schedule", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx := cmd.Context()
				a := g.jobAdmin()
				toggle := a.Enable
				if verb == "disable" {
					toggle = a.Disable
				}
				out, err := toggle(ctx, args[0])
				if err != nil {
					return err
				}
				return g.Print(out, func(w *tabwriter.Writer) { jobRows(w, []*job.Job{out}) })
			}}
	}
	del := &cobra.Command{Use: "delete JOB", Short: "Delete a job (its runs and logs stay)", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if err := g.jobAdmin().Delete(ctx, args[0]); err != nil {
			return err
		}
		fmt.Fprintf(g.Out, "deleted %s\n", args[0])
		return nil
	}}
	execs := &cobra.Command{Use: "executors", Short: "List live executors", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.jobAdmin().Executors(ctx, "")
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "APP", "ADDRESS", "RUNNING", "CAPACITY", "HANDLERS", "LAST HEARTBEAT")
			for _, e := range out {
				row(w, e.App, e.Addr, e.Running, e.Capacity, strings.Join(e.Handlers, ","), e.LastBeat.Local().Format("15:04:05"))
			}
		})
	}}
	glue := &cobra.Command{Use: "glue", Short: "A glue job's code: save, show, history, diff, rollback"}
	var gfile, gnote string
	gsave := &cobra.Command{Use: "save JOB", Short: "Save a new version of a glue job's code (--file, - for stdin; needs admin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var b []byte
			var err error
			if gfile == "-" || gfile == "" {
				b, err = io.ReadAll(cmd.InOrStdin())
			} else {
				b, err = os.ReadFile(gfile)
			}
			if err != nil {
				return err
			}
			v, err := g.jobAdmin().SaveGlue(ctx, args[0], job.GlueSource{Source: string(b), Note: gnote})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "saved version %d\n", v.Version)
			return nil
		}}
	gsave.Flags().StringVar(&gfile, "file", "-", "file with the code (- reads stdin)")
	gsave.Flags().StringVarP(&gnote, "message", "m", "", "note for this version")
	var gversion string
	gshow := &cobra.Command{Use: "show JOB", Short: "Print a version of the code (--version, default current)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, err := g.jobAdmin().Glue(ctx, args[0], gversion)
			if err != nil {
				return err
			}
			fmt.Fprint(g.Out, v.Source)
			return nil
		}}
	gshow.Flags().StringVar(&gversion, "version", "current", "version number or current")
	ghist := &cobra.Command{Use: "history JOB", Short: "List the saved versions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			out, err := g.jobAdmin().GlueHistory(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				row(w, "VERSION", "SAVED", "AUTHOR", "NOTE")
				for _, v := range out {
					row(w, v.Version, v.CreatedAt.Local().Format("2006-01-02 15:04:05"), v.Author, v.Note)
				}
			})
		}}
	gdiff := &cobra.Command{Use: "diff JOB FROM [TO]", Short: "Diff two versions (TO default: current)", Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			from, err := strconv.Atoi(args[1])
			if err != nil || from <= 0 {
				return fmt.Errorf("FROM %q: want a glue version number", args[1])
			}
			to := 0
			if len(args) == 3 {
				if to, err = strconv.Atoi(args[2]); err != nil || to <= 0 {
					return fmt.Errorf("TO %q: want a glue version number", args[2])
				}
			}
			d, err := g.jobAdmin().DiffGlue(ctx, args[0], from, to)
			if err != nil {
				return err
			}
			fmt.Fprint(g.Out, d)
			return nil
		}}
	grollback := &cobra.Command{Use: "rollback JOB VERSION", Short: "Make an old version current again (saved as a new version)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			version, err := strconv.Atoi(args[1])
			if err != nil || version <= 0 {
				return fmt.Errorf("VERSION %q: want a glue version number", args[1])
			}
			v, err := g.jobAdmin().RollbackGlue(ctx, args[0], version)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "version %s is current again as version %d\n", args[1], v.Version)
			return nil
		}}
	glue.AddCommand(gsave, gshow, ghist, gdiff, grollback)

	flows := &cobra.Command{Use: "flows JOB", Short: "A workflow job's runs, the newest with its nodes", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			a := g.jobAdmin()
			out, err := a.Flows(ctx, args[0])
			if err != nil {
				return err
			}
			var latest job.FlowRun
			if len(out) > 0 {
				if latest, err = a.Flow(ctx, out[0].ID); err != nil {
					return err
				}
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				row(w, "FLOW RUN", "FIRED", "STATUS", "FINISHED")
				for _, f := range out {
					fin := "-"
					if !f.FinishedAt.IsZero() {
						fin = f.FinishedAt.Local().Format("15:04:05.000")
					}
					row(w, f.ID, f.FireAt.Local().Format("2006-01-02 15:04:05"), f.Status, fin)
				}
				if len(latest.Nodes) > 0 {
					row(w)
					row(w, "NODE", "AFTER", "STATUS", "RUN", "OUTPUT", "ERROR")
					for _, n := range latest.Nodes {
						row(w, n.Name, strings.Join(n.After, ","), n.Status, n.RunID, n.Output, n.Error)
					}
				}
			})
		}}
	cmd.AddCommand(add, edit, list, get, trigger, runs, kill, logs, toggle("enable"), toggle("disable"), del, execs, glue, flows)
	return cmd
}

// followLog prints a run's log; with follow it polls until the run ends
// (or Ctrl-C).
func followLog(ctx context.Context, g *globals, run int64, follow bool) error {
	from := 0
	for {
		out, err := g.jobAdmin().Logs(ctx, run, from)
		if err != nil {
			return err
		}
		fmt.Fprint(g.Out, out.Text)
		from = out.Next
		done := out.Status != job.StatusPending && out.Status != job.StatusRunning
		if !follow || (done && out.Text == "") {
			if follow {
				fmt.Fprintf(g.Out, "run %d %s\n", run, out.Status)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func joinIDs(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ", ")
}
