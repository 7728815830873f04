package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/apirpc"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/rpc"
)

// Limits on what executors send.
const (
	maxHandlers  = 1024
	maxSignKey   = 128
	maxAddrBytes = 256
)

// rpcError maps job and auth errors to RPC codes.
func rpcError(err error) error { return apirpc.Error(err) }

// RegisterRPC adds the executor-facing services to srv (whose interceptors
// authenticate callers): executors need edit permission on their app.
func (s *Scheduler) RegisterRPC(srv *rpc.Server) error {
	return errors.Join(
		rpc.Handle(srv, "tangram.Job/Heartbeat", func(ctx context.Context, req *job.BeatRequest) (*job.Empty, error) {
			return &job.Empty{}, rpcError(s.heartbeat(ctx, req))
		}),
		rpc.Handle(srv, "tangram.Job/Report", func(ctx context.Context, req *job.ReportRequest) (*job.Empty, error) {
			return &job.Empty{}, rpcError(s.report(ctx, req))
		}),
		rpc.Handle(srv, "tangram.Job/Log", func(ctx context.Context, req *job.LogRequest) (*job.Empty, error) {
			return &job.Empty{}, rpcError(s.appendLog(ctx, req))
		}),
		rpc.Handle(srv, "tangram.Job/Deliver", func(ctx context.Context, req *job.DeliverRequest) (*job.Empty, error) {
			return &job.Empty{}, rpcError(s.deliver(ctx, req))
		}),
		rpc.Handle(srv, "tangram.Job/Leave", func(ctx context.Context, req *job.LeaveRequest) (*job.Empty, error) {
			if err := auth.Check(ctx, auth.PermEdit, "", req.App, ""); err != nil {
				return nil, rpcError(err)
			}
			_, err := s.st.ExecContext(ctx, `DELETE FROM job_executors WHERE app = ? AND addr = ?`, req.App, req.Addr)
			return &job.Empty{}, rpcError(err)
		}),
	)
}

func (s *Scheduler) heartbeat(ctx context.Context, req *job.BeatRequest) error {
	if err := auth.Check(ctx, auth.PermEdit, "", req.App, ""); err != nil {
		return err
	}
	if job.ValidName(req.App) != nil {
		return fmt.Errorf("%w app %q", job.ErrInvalid, req.App)
	}
	if req.Addr == "" || len(req.Addr) > maxAddrBytes || len(req.SignKey) < 16 || len(req.SignKey) > maxSignKey ||
		len(req.Handlers) > maxHandlers || req.Capacity < 0 {
		return fmt.Errorf("%w executor registration: address, a 16–128 byte signing key, at most %d handlers", job.ErrInvalid, maxHandlers)
	}
	handlers, _ := json.Marshal(req.Handlers)
	now := ms(time.Now())
	res, err := s.st.ExecContext(ctx, `UPDATE job_executors SET sign_key = ?, capacity = ?, running = ?, handlers = ?, last_beat = ? WHERE app = ? AND addr = ?`,
		req.SignKey, req.Capacity, req.Running, string(handlers), now, req.App, req.Addr)
	if err != nil {
		return fmt.Errorf("job: executor heartbeat: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		s.reconcile(ctx, req)
		return nil
	}
	_, err = s.st.ExecContext(ctx, `INSERT INTO job_executors (app, addr, sign_key, capacity, running, handlers, last_beat) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		req.App, req.Addr, req.SignKey, req.Capacity, req.Running, string(handlers), now)
	if err != nil && !store.IsUniqueViolation(err) {
		return fmt.Errorf("job: executor registration: %w", err)
	}
	if err == nil {
		s.log.Info("job: executor registered", "app", req.App, "addr", req.Addr, "handlers", len(req.Handlers))
	}
	return nil
}

// reconcile fails the runs the store has running on this executor that it
// does not have. Only runs assigned dispatchGrace before the executor took
// its list count: an executor refuses a run DispatchWindow after its
// assignment (RunRequest.Deadline), so such a run, not listed, can no
// longer arrive — not from a scheduler that was paused with it, nor from a
// call retried late — and failing it (and retrying per the job) never runs
// it twice. Both instants are the executor's clock, so skew between hosts
// does not matter; a heartbeat without a stamp counts from now.
func (s *Scheduler) reconcile(ctx context.Context, req *job.BeatRequest) {
	taken := time.Now()
	if req.Stamp > 0 && req.Stamp < ms(taken) {
		taken = fromMS(req.Stamp)
	}
	rows, err := s.st.QueryContext(ctx, `SELECT id FROM job_runs WHERE executor = ? AND status = 'running' AND started_at < ?`,
		req.Addr, ms(taken.Add(-dispatchGrace)))
	if err != nil {
		return
	}
	has := make(map[int64]bool, len(req.Runs))
	for _, id := range req.Runs {
		has[id] = true
	}
	var lost []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil && !has[id] {
			lost = append(lost, id)
		}
	}
	rows.Close()
	for _, id := range lost {
		s.log.Warn("job: a run its executor does not have failed", "run", id, "executor", req.Addr)
		_ = s.finish(ctx, id, job.StatusFailed, "lost: its executor does not have it (dispatch cut short, or the executor restarted)", "")
	}
}

// dispatchGrace is how long a run may be marked running on an executor
// before the executor's heartbeats must list it: longer than
// job.DispatchWindow, after which the executor refuses it.
const dispatchGrace = 2 * job.DispatchWindow

// appOfRun checks that a run belongs to a job of app.
func (s *Scheduler) appOfRun(ctx context.Context, runID int64, app string) error {
	var got string
	err := s.st.QueryRowContext(ctx, `SELECT j.app FROM job_runs r JOIN job_jobs j ON j.id = r.job_id WHERE r.id = ?`, runID).Scan(&got)
	if err != nil {
		return fmt.Errorf("%w: run %d", job.ErrNotFound, runID)
	}
	if got != app {
		return fmt.Errorf("%w: run %d belongs to app %q, not %q", job.ErrInvalid, runID, got, app)
	}
	return nil
}

func (s *Scheduler) report(ctx context.Context, req *job.ReportRequest) error {
	if err := auth.Check(ctx, auth.PermEdit, "", req.App, ""); err != nil {
		return err
	}
	switch req.Status {
	case job.StatusSucceeded, job.StatusFailed, job.StatusKilled, job.StatusDiscarded:
	default:
		return fmt.Errorf("%w status %q: want succeeded, failed, killed or discarded", job.ErrInvalid, req.Status)
	}
	if len(req.Output) > job.MaxOutput {
		return fmt.Errorf("%w output: %d bytes, at most %d", job.ErrInvalid, len(req.Output), job.MaxOutput)
	}
	if err := s.appOfRun(ctx, req.RunID, req.App); err != nil {
		return err
	}
	return s.finish(ctx, req.RunID, req.Status, req.Error, req.Output)
}

func (s *Scheduler) appendLog(ctx context.Context, req *job.LogRequest) error {
	if err := auth.Check(ctx, auth.PermEdit, "", req.App, ""); err != nil {
		return err
	}
	if len(req.Text) > job.MaxLogChunk || req.Seq < 0 {
		return fmt.Errorf("%w log chunk: at most %d bytes, seq ≥ 0", job.ErrInvalid, job.MaxLogChunk)
	}
	if err := s.appOfRun(ctx, req.RunID, req.App); err != nil {
		return err
	}
	_, err := s.st.ExecContext(ctx, `INSERT INTO job_logs (run_id, seq, body, created_at) VALUES (?, ?, ?, ?)`, req.RunID, req.Seq, req.Text, ms(time.Now()))
	if err != nil && !store.IsUniqueViolation(err) { // a resent chunk
		return fmt.Errorf("job: append log: %w", err)
	}
	return nil
}

func (s *Scheduler) deliver(ctx context.Context, req *job.DeliverRequest) error {
	if err := auth.Check(ctx, auth.PermEdit, "", req.App, ""); err != nil {
		return err
	}
	if len(req.Logs)+len(req.Reports) > job.MaxDeliver {
		return fmt.Errorf("%w delivery: %d items, at most %d", job.ErrInvalid, len(req.Logs)+len(req.Reports), job.MaxDeliver)
	}
	for _, l := range req.Logs {
		if l.App != req.App || len(l.Text) > job.MaxLogChunk || l.Seq < 0 {
			return fmt.Errorf("%w log chunk of run %d: app %q, at most %d bytes, seq ≥ 0", job.ErrInvalid, l.RunID, l.App, job.MaxLogChunk)
		}
	}
	for _, r := range req.Reports {
		if r.App != req.App || len(r.Output) > job.MaxOutput {
			return fmt.Errorf("%w report of run %d: app %q, output at most %d bytes", job.ErrInvalid, r.RunID, r.App, job.MaxOutput)
		}
		switch r.Status {
		case job.StatusSucceeded, job.StatusFailed, job.StatusKilled, job.StatusDiscarded:
		default:
			return fmt.Errorf("%w report of run %d: status %q", job.ErrInvalid, r.RunID, r.Status)
		}
	}
	// One transaction for the lot; if it fails, each item alone, so one
	// report that cannot be recorded does not hold up the executor's queue
	// behind it forever (it is logged and its run failed instead).
	if ids, err := s.deliverTx(ctx, req.App, req.Logs, req.Reports); err == nil {
		s.queueRuns(ctx, ids)
		return nil
	} else if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The call ended (this server is shutting down, the executor gave
		// up): nothing is failed; the executor delivers again, to this
		// server or another.
		return fmt.Errorf("job: delivery not recorded: %w", err)
	}
	ok := 0
	var lastErr error
	for i := range req.Logs {
		if _, err := s.deliverTx(ctx, req.App, req.Logs[i:i+1], nil); err != nil {
			lastErr = err
			s.log.Error("job: a run's log chunk could not be stored; dropped", "run", req.Logs[i].RunID, "err", err)
			continue
		}
		ok++
	}
	for i := range req.Reports {
		ids, err := s.deliverTx(ctx, req.App, nil, req.Reports[i:i+1])
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("job: delivery not recorded: %w", err) // redelivered whole; repeats are ignored
		}
		if err != nil {
			lastErr = err
			r := req.Reports[i]
			s.log.Error("job: a run's report could not be recorded; the run is failed", "run", r.RunID, "status", r.Status, "err", err)
			if ferr := s.finishPlain(ctx, r.RunID, fmt.Sprintf("its report (%s) could not be recorded: %v", r.Status, err)); ferr != nil {
				s.log.Error("job: failing the run failed too", "run", r.RunID, "err", ferr)
			}
			continue
		}
		ok++
		s.queueRuns(ctx, ids)
	}
	if ok == 0 && lastErr != nil {
		return lastErr // nothing went in: the store is likely down; the executor retries
	}
	return nil
}

// deliverTx records log chunks and reports of app in one transaction.
func (s *Scheduler) deliverTx(ctx context.Context, app string, logs []job.LogRequest, reports []job.ReportRequest) ([]int64, error) {
	var newRuns []int64
	var ended map[string]int // runs finished by status, counted once committed
	now := time.Now()
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		newRuns = newRuns[:0]
		ended = map[string]int{}
		// One query reads (and on PostgreSQL and MySQL locks) every run
		// the batch names, one reads their jobs, and one statement
		// finishes the runs that share a status: a few round trips for a
		// batch, not four for each report.
		var ids []int64
		for _, l := range logs {
			ids = append(ids, l.RunID)
		}
		for _, r := range reports {
			ids = append(ids, r.RunID)
		}
		slices.Sort(ids)
		runs, err := readRuns(ctx, tx, slices.Compact(ids), len(reports) > 0)
		if err != nil {
			return err
		}
		jobIDs := make([]int64, 0, len(runs))
		for _, r := range runs {
			jobIDs = append(jobIDs, r.jobID)
		}
		slices.Sort(jobIDs)
		jobs, err := loadJobs(ctx, tx, slices.Compact(jobIDs))
		if err != nil {
			return err
		}
		// Runs of other apps (or gone) are skipped, not failed: the batch
		// must not be refused whole for one stale entry.
		ours := func(id int64) *runRow {
			if r, ok := runs[id]; ok && jobs[r.jobID] != nil && jobs[r.jobID].App == app {
				return r
			}
			return nil
		}
		for _, l := range logs {
			if ours(l.RunID) == nil {
				continue
			}
			// A resent chunk has the same (run, seq): skip it.
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM job_logs WHERE run_id = ? AND seq = ?`, l.RunID, l.Seq).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO job_logs (run_id, seq, body, created_at) VALUES (?, ?, ?, ?)`, l.RunID, l.Seq, l.Text, ms(now)); err != nil {
				return fmt.Errorf("job: append log: %w", err)
			}
		}
		type outcome struct{ status, msg, output string }
		type finished struct {
			run *runRow
			out outcome
		}
		var done []finished
		groups := map[outcome][]any{}
		var order []outcome
		for _, rep := range reports {
			r := ours(rep.RunID)
			if r == nil {
				s.log.Warn("job: report for a run of another app or a deleted job ignored", "run", rep.RunID, "app", app)
				continue
			}
			if r.status != job.StatusPending && r.status != job.StatusRunning {
				continue // already finished: a repeated report
			}
			o := outcome{rep.Status, truncate(rep.Error, 4000), truncate(rep.Output, job.MaxOutput)}
			r.status = rep.Status // a second report of it in this batch is a repeat
			if _, ok := groups[o]; !ok {
				order = append(order, o)
			}
			groups[o] = append(groups[o], r.id)
			done = append(done, finished{r, o})
			ended[o.status]++
		}
		for _, o := range order {
			for ids := groups[o]; len(ids) > 0; {
				chunk := ids[:min(len(ids), 500)]
				ids = ids[len(chunk):]
				if _, err := tx.ExecContext(ctx, `UPDATE job_runs SET status = ?, error = ?, finished_at = ?, output = ? WHERE status IN ('pending', 'running') AND id IN (?`+strings.Repeat(", ?", len(chunk)-1)+`)`,
					append([]any{o.status, o.msg, ms(now), o.output}, chunk...)...); err != nil {
					return fmt.Errorf("job: finish %d runs: %w", len(chunk), err)
				}
			}
		}
		for _, f := range done {
			j := jobs[f.run.jobID]
			ids, err := s.afterFinish(ctx, tx, f.run, j, f.out.status, f.out.msg, f.out.output, now)
			if err != nil {
				return err
			}
			newRuns = append(newRuns, ids...)
		}
		return nil
	})
	if err == nil {
		for st, n := range ended {
			s.metrics.countFinished(st, n)
		}
	}
	return newRuns, err
}

// finishPlain marks a run failed without applying its job's policy (the
// policy is what failed).
func (s *Scheduler) finishPlain(ctx context.Context, runID int64, msg string) error {
	res, err := s.st.ExecContext(ctx, `UPDATE job_runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND status IN ('pending', 'running')`,
		truncate(msg, 4000), ms(time.Now()), runID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		s.metrics.countFinished(job.StatusFailed, 1)
	}
	return nil
}
