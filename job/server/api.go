package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/rpc"
)

// prepare validates a job for storing and returns its stored form and
// first fire time (unix ms, 0: none).
func (s *Scheduler) prepare(ctx context.Context, j *job.Job, now time.Time) (string, int64, error) {
	if j.Flow != nil {
		if err := resolveFlowNames(ctx, s.st, j.Flow); err != nil {
			return "", 0, err
		}
	}
	if err := j.Normalize(); err != nil {
		return "", 0, err
	}
	if j.Flow != nil {
		if err := checkFlowJobs(ctx, s.st, j.Flow); err != nil {
			return "", 0, err
		}
	}
	if iv := j.Trigger.Interval(now); iv > 0 && iv < s.cfg.MinInterval {
		// In-process callers (no principal) and unrestricted admins may
		// schedule tighter; everyone else gets the server's floor.
		if p := auth.FromContext(ctx); p != nil && !p.IsAdmin() {
			return "", 0, fmt.Errorf("%w trigger: fires every %s; this server's minimum is %s (an admin may set a tighter schedule)", job.ErrInvalid, iv, s.cfg.MinInterval)
		}
	}
	if err := checkChildren(ctx, s.st, j); err != nil {
		return "", 0, err
	}
	if j.AlarmWebhook != "" {
		if err := s.checkWebhook(j.AlarmWebhook); err != nil {
			return "", 0, err
		}
	}
	body, err := json.Marshal(j)
	if err != nil {
		return "", 0, fmt.Errorf("job: encode %s: %w", j.Name, err)
	}
	next := int64(0)
	if t := j.FirstFire(now); !t.IsZero() {
		next = ms(t)
	}
	return string(body), next, nil
}

// Create stores a new job and schedules it.
func (s *Scheduler) Create(ctx context.Context, j job.Job) (*job.Job, error) {
	j.ID = 0
	now := time.Now()
	body, next, err := s.prepare(ctx, &j, now)
	if err != nil {
		return nil, err
	}
	var id int64
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var err error
		id, err = tx.InsertID(ctx, `INSERT INTO job_jobs (name, app, body, enabled, part, next_fire_at, version, created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, 1, ?, ?)`,
			j.Name, j.App, body, boolInt(j.Enabled), next, ms(now), ms(now))
		if err != nil {
			if store.IsUniqueViolation(err) {
				return fmt.Errorf("%w name: a job named %q exists", job.ErrInvalid, j.Name)
			}
			return fmt.Errorf("job: create %s: %w", j.Name, err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE job_jobs SET part = ? WHERE id = ?`, partOf(id, s.cfg.Partitions), id)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.wakeLoader()
	return s.Get(ctx, id)
}

// Update replaces a job's definition (its ID stays); the schedule restarts
// from now.
func (s *Scheduler) Update(ctx context.Context, id int64, j job.Job) (*job.Job, error) {
	j.ID = id
	now := time.Now()
	body, next, err := s.prepare(ctx, &j, now)
	if err != nil {
		return nil, err
	}
	res, err := s.st.ExecContext(ctx, `UPDATE job_jobs SET name = ?, app = ?, body = ?, enabled = ?, next_fire_at = ?, version = version + 1, updated_at = ? WHERE id = ?`,
		j.Name, j.App, body, boolInt(j.Enabled), next, ms(now), id)
	if err != nil {
		if store.IsUniqueViolation(err) {
			return nil, fmt.Errorf("%w name: a job named %q exists", job.ErrInvalid, j.Name)
		}
		return nil, fmt.Errorf("job: update %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, fmt.Errorf("%w: job %d", job.ErrNotFound, id)
	}
	s.wheel.remove(id)
	s.wakeLoader()
	return s.Get(ctx, id)
}

// SetEnabled turns a job's schedule on or off.
func (s *Scheduler) SetEnabled(ctx context.Context, id int64, on bool) (*job.Job, error) {
	j, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	j.Enabled = on
	return s.Update(ctx, id, *j)
}

// Delete removes a job; its runs and logs stay for the record.
func (s *Scheduler) Delete(ctx context.Context, id int64) error {
	res, err := s.st.ExecContext(ctx, `DELETE FROM job_jobs WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("job: delete %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: job %d", job.ErrNotFound, id)
	}
	s.wheel.remove(id)
	return nil
}

// Get reads a job.
func (s *Scheduler) Get(ctx context.Context, id int64) (*job.Job, error) {
	return loadJob(ctx, s.st, id)
}

// ByName reads a job by name.
func (s *Scheduler) ByName(ctx context.Context, name string) (*job.Job, error) {
	var id int64
	err := s.st.QueryRowContext(ctx, `SELECT id FROM job_jobs WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: job %q", job.ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("job: find %q: %w", name, err)
	}
	return loadJob(ctx, s.st, id)
}

// List returns the jobs, of one app when app is not empty, by ID.
func (s *Scheduler) List(ctx context.Context, app string) ([]*job.Job, error) {
	q := `SELECT id FROM job_jobs`
	var args []any
	if app != "" {
		q += ` WHERE app = ?`
		args = append(args, app)
	}
	rows, err := s.st.QueryContext(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("job: list: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	out := make([]*job.Job, 0, len(ids))
	for _, id := range ids {
		if j, err := loadJob(ctx, s.st, id); err == nil {
			out = append(out, j)
		}
	}
	return out, nil
}

// Trigger runs a job now, with params (empty: the job's own), whatever its
// schedule; the run is dispatched by its partition's holder at once.
func (s *Scheduler) Trigger(ctx context.Context, id int64, params string) ([]int64, error) {
	if len(params) > job.MaxParamsBytes {
		return nil, fmt.Errorf("%w params: %d bytes, at most %d", job.ErrInvalid, len(params), job.MaxParamsBytes)
	}
	j, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if params == "" {
		params = j.Params
	}
	var ids []int64
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		ids, err = s.insertPending(ctx, tx, j, "manual", params, time.Now())
		return err
	})
	if err != nil {
		return nil, err
	}
	s.queueRuns(ctx, ids)
	return ids, nil
}

// Runs lists a job's runs, newest first, at most limit (default 50).
func (s *Scheduler) Runs(ctx context.Context, jobID int64, limit int) ([]job.Run, error) {
	return s.RunsBefore(ctx, jobID, 0, limit)
}

// RunsBefore is a page of Runs: those with an ID below before (0: from the
// newest).
func (s *Scheduler) RunsBefore(ctx context.Context, jobID, before int64, limit int) ([]job.Run, error) {
	if limit <= 0 || limit > 1000 {
		limit = 50
	}
	if before > 0 {
		return s.queryRuns(ctx, ` WHERE job_id = ? AND id < ? ORDER BY id DESC LIMIT ?`, jobID, before, limit)
	}
	return s.queryRuns(ctx, ` WHERE job_id = ? ORDER BY id DESC LIMIT ?`, jobID, limit)
}

// GetRun reads one run.
func (s *Scheduler) GetRun(ctx context.Context, id int64) (*job.Run, error) {
	rs, err := s.queryRuns(ctx, ` WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("%w: run %d", job.ErrNotFound, id)
	}
	return &rs[0], nil
}

func (s *Scheduler) queryRuns(ctx context.Context, where string, args ...any) ([]job.Run, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT id, job_id, fire_at, attempt, shard_index, shard_total, cause, params, status, executor, error, created_at, started_at, finished_at, covers FROM job_runs`+where, args...)
	if err != nil {
		return nil, fmt.Errorf("job: runs: %w", err)
	}
	defer rows.Close()
	var out []job.Run
	for rows.Next() {
		var r job.Run
		var fire, created, started, finished int64
		if err := rows.Scan(&r.ID, &r.JobID, &fire, &r.Attempt, &r.ShardIndex, &r.ShardTotal, &r.Cause, &r.Params, &r.Status, &r.Executor, &r.Error, &created, &started, &finished, &r.Covers); err != nil {
			return nil, fmt.Errorf("job: runs: %w", err)
		}
		r.FireAt, r.CreatedAt = fromMS(fire), fromMS(created)
		if started > 0 {
			r.StartedAt = fromMS(started)
		}
		if finished > 0 {
			r.FinishedAt = fromMS(finished)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Kill cancels a running run: its executor cancels the handler's context
// (a script's process group gets SIGTERM, then SIGKILL) and reports it
// killed. A pending run, or one whose executor is gone, is marked killed
// at once.
func (s *Scheduler) Kill(ctx context.Context, runID int64) error {
	r, err := s.GetRun(ctx, runID)
	if err != nil {
		return err
	}
	switch r.Status {
	case job.StatusPending:
		return s.finish(ctx, runID, job.StatusKilled, "killed before it started", "")
	case job.StatusRunning:
	default:
		return fmt.Errorf("%w: run %d is %s, not running", job.ErrInvalid, runID, r.Status)
	}
	ex, err := listExecutors(ctx, s.st, "", time.Now().Add(-s.cfg.ExecutorTimeout))
	if err != nil {
		return err
	}
	for _, e := range ex {
		if e.Addr != r.Executor {
			continue
		}
		c, err := s.client(ctx, e.Addr)
		if err != nil {
			break
		}
		kr := job.KillRequest{RunID: runID, Stamp: ms(time.Now())}
		kr.Sign(e.SignKey)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = rpc.Call[job.Empty](cctx, c, "tangram.Executor/Kill", &kr)
		cancel()
		if err == nil || rpc.CodeOf(err) != rpc.NotFound {
			return err // the executor reports the run killed
		}
	}
	return s.finish(ctx, runID, job.StatusKilled, "killed (its executor no longer had it)", "")
}

// Logs returns a run's log from chunk seq on, and the next seq to ask for.
func (s *Scheduler) Logs(ctx context.Context, runID int64, from int) (string, int, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT seq, body FROM job_logs WHERE run_id = ? AND seq >= ? ORDER BY seq`, runID, from)
	if err != nil {
		return "", from, fmt.Errorf("job: logs of run %d: %w", runID, err)
	}
	defer rows.Close()
	var b strings.Builder
	next := from
	for rows.Next() {
		var seq int
		var body string
		if err := rows.Scan(&seq, &body); err != nil {
			return "", from, err
		}
		b.WriteString(body)
		next = seq + 1
	}
	return b.String(), next, rows.Err()
}

// Executors lists live executors (of app, when not empty).
func (s *Scheduler) Executors(ctx context.Context, app string) ([]job.ExecutorInfo, error) {
	return listExecutors(ctx, s.st, app, time.Now().Add(-s.cfg.ExecutorTimeout))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Stats counts the runs created in the last day by status, the success
// rate, the lateness (scheduled time → start) of scheduled runs, and runs
// per day over the last week.
func (s *Scheduler) Stats(ctx context.Context) (*job.Stats, error) {
	now := time.Now().UTC()
	st := &job.Stats{Since: now.Add(-24 * time.Hour), ByStatus: map[string]int{}, Partitions: s.Owned()}
	rows, err := s.st.QueryContext(ctx, `SELECT status, COUNT(*) FROM job_runs WHERE created_at >= ? GROUP BY status`, ms(st.Since))
	if err != nil {
		return nil, fmt.Errorf("job: stats: %w", err)
	}
	for rows.Next() {
		var k string
		var n int
		if rows.Scan(&k, &n) == nil {
			st.ByStatus[k] = n
			st.Total += n
		}
	}
	rows.Close()
	// A killed run was an operator's decision, not the job's failure.
	if fin := st.ByStatus[job.StatusSucceeded] + st.ByStatus[job.StatusFailed]; fin > 0 {
		st.Success = float64(st.ByStatus[job.StatusSucceeded]) / float64(fin)
	}
	rows, err = s.st.QueryContext(ctx, `SELECT started_at - fire_at FROM job_runs WHERE created_at >= ? AND cause = 'schedule' AND attempt = 0 AND started_at > 0 ORDER BY id DESC LIMIT 20000`, ms(st.Since))
	if err != nil {
		return nil, fmt.Errorf("job: stats: %w", err)
	}
	var late []int64
	for rows.Next() {
		var d int64
		if rows.Scan(&d) == nil {
			late = append(late, d)
		}
	}
	rows.Close()
	if len(late) > 0 {
		slices.Sort(late)
		st.LateP50, st.LateP99 = float64(late[len(late)/2]), float64(late[min(len(late)-1, len(late)*99/100)])
	}
	days := map[string]*job.DayCount{}
	for i := 6; i >= 0; i-- {
		d := now.AddDate(0, 0, -i).Format("2006-01-02")
		dc := &job.DayCount{Day: d}
		days[d] = dc
		st.PerDay = append(st.PerDay, *dc)
	}
	rows, err = s.st.QueryContext(ctx, `SELECT created_at, status FROM job_runs WHERE created_at >= ? ORDER BY id DESC LIMIT 200000`,
		ms(now.AddDate(0, 0, -6).Truncate(24*time.Hour)))
	if err != nil {
		return nil, fmt.Errorf("job: stats: %w", err)
	}
	for rows.Next() {
		var at int64
		var status string
		if rows.Scan(&at, &status) != nil {
			continue
		}
		if dc := days[fromMS(at).Format("2006-01-02")]; dc != nil {
			dc.Runs++
			switch status {
			case job.StatusSucceeded:
				dc.Succeeded++
			case job.StatusFailed:
				dc.Failed++
			case job.StatusKilled:
				dc.Killed++
			}
		}
	}
	rows.Close()
	for i := range st.PerDay {
		st.PerDay[i] = *days[st.PerDay[i].Day]
	}
	_ = s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM job_jobs`).Scan(&st.Jobs)
	ex, _ := s.Executors(ctx, "")
	st.Executors = len(ex)
	return st, nil
}

// checkChildren refuses children that name no job.
func checkChildren(ctx context.Context, q store.Querier, j *job.Job) error {
	for _, c := range j.Children {
		var n int
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM job_jobs WHERE id = ?`, c).Scan(&n); err != nil {
			return fmt.Errorf("job: check child %d: %w", c, err)
		}
		if n == 0 {
			return fmt.Errorf("%w children: job %d does not exist", job.ErrInvalid, c)
		}
	}
	return nil
}
