package job

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/rpc"
)

// Run is one execution of a job (one shard of one attempt of one fire).
type Run struct {
	ID         int64     `json:"id"`
	JobID      int64     `json:"job_id"`
	FireAt     time.Time `json:"fire_at"`
	Attempt    int       `json:"attempt"`
	ShardIndex int       `json:"shard_index"`
	ShardTotal int       `json:"shard_total"`
	Cause      string    `json:"cause"` // schedule, misfire, manual, retry, child
	Params     string    `json:"params,omitempty"`
	Status     string    `json:"status"`
	Executor   string    `json:"executor,omitempty"`
	Error      string    `json:"error,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// prepare validates a job for storing and returns its stored form and
// first fire time (unix ms, 0: none).
func (s *Scheduler) prepare(ctx context.Context, j *Job, now time.Time) (string, int64, error) {
	if err := j.Normalize(); err != nil {
		return "", 0, err
	}
	if j.Flow != nil {
		if err := checkFlowJobs(ctx, s.st, j.Flow); err != nil {
			return "", 0, err
		}
	}
	body, err := json.Marshal(j)
	if err != nil {
		return "", 0, fmt.Errorf("job: encode %s: %w", j.Name, err)
	}
	next := int64(0)
	if t := j.firstFire(now); !t.IsZero() {
		next = ms(t)
	}
	return string(body), next, nil
}

// Create stores a new job and schedules it.
func (s *Scheduler) Create(ctx context.Context, j Job) (*Job, error) {
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
				return fmt.Errorf("%w name: a job named %q exists", ErrInvalid, j.Name)
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
func (s *Scheduler) Update(ctx context.Context, id int64, j Job) (*Job, error) {
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
			return nil, fmt.Errorf("%w name: a job named %q exists", ErrInvalid, j.Name)
		}
		return nil, fmt.Errorf("job: update %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, fmt.Errorf("%w: job %d", ErrNotFound, id)
	}
	s.wheel.remove(id)
	s.wakeLoader()
	return s.Get(ctx, id)
}

// SetEnabled turns a job's schedule on or off.
func (s *Scheduler) SetEnabled(ctx context.Context, id int64, on bool) (*Job, error) {
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
		return fmt.Errorf("%w: job %d", ErrNotFound, id)
	}
	s.wheel.remove(id)
	return nil
}

// Get reads a job.
func (s *Scheduler) Get(ctx context.Context, id int64) (*Job, error) { return loadJob(ctx, s.st, id) }

// ByName reads a job by name.
func (s *Scheduler) ByName(ctx context.Context, name string) (*Job, error) {
	var id int64
	err := s.st.QueryRowContext(ctx, `SELECT id FROM job_jobs WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: job %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("job: find %q: %w", name, err)
	}
	return loadJob(ctx, s.st, id)
}

// List returns the jobs, of one app when app is not empty, by ID.
func (s *Scheduler) List(ctx context.Context, app string) ([]*Job, error) {
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
	out := make([]*Job, 0, len(ids))
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
	if len(params) > MaxParamsBytes {
		return nil, fmt.Errorf("%w params: %d bytes, at most %d", ErrInvalid, len(params), MaxParamsBytes)
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
func (s *Scheduler) Runs(ctx context.Context, jobID int64, limit int) ([]Run, error) {
	if limit <= 0 || limit > 1000 {
		limit = 50
	}
	return s.queryRuns(ctx, ` WHERE job_id = ? ORDER BY id DESC LIMIT ?`, jobID, limit)
}

// GetRun reads one run.
func (s *Scheduler) GetRun(ctx context.Context, id int64) (*Run, error) {
	rs, err := s.queryRuns(ctx, ` WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("%w: run %d", ErrNotFound, id)
	}
	return &rs[0], nil
}

func (s *Scheduler) queryRuns(ctx context.Context, where string, args ...any) ([]Run, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT id, job_id, fire_at, attempt, shard_index, shard_total, cause, params, status, executor, error, created_at, started_at, finished_at FROM job_runs`+where, args...)
	if err != nil {
		return nil, fmt.Errorf("job: runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		var r Run
		var fire, created, started, finished int64
		if err := rows.Scan(&r.ID, &r.JobID, &fire, &r.Attempt, &r.ShardIndex, &r.ShardTotal, &r.Cause, &r.Params, &r.Status, &r.Executor, &r.Error, &created, &started, &finished); err != nil {
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
	case StatusPending:
		return s.finish(ctx, runID, StatusKilled, "killed before it started", "")
	case StatusRunning:
	default:
		return fmt.Errorf("%w: run %d is %s, not running", ErrInvalid, runID, r.Status)
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
		kr := KillRequest{RunID: runID, Stamp: ms(time.Now())}
		kr.Sig = sign(e.signKey, kr.canonical())
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = rpc.Call[Empty](cctx, c, "tangram.Executor/Kill", &kr)
		cancel()
		if err == nil || rpc.CodeOf(err) != rpc.NotFound {
			return err // the executor reports the run killed
		}
	}
	return s.finish(ctx, runID, StatusKilled, "killed (its executor no longer had it)", "")
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
func (s *Scheduler) Executors(ctx context.Context, app string) ([]ExecutorInfo, error) {
	return listExecutors(ctx, s.st, app, time.Now().Add(-s.cfg.ExecutorTimeout))
}

// Empty is an empty message.
type Empty struct{}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Stats summarises recent runs for the console's dashboard.
type Stats struct {
	Since      time.Time      `json:"since"`
	ByStatus   map[string]int `json:"by_status"`
	Total      int            `json:"total"`
	Success    float64        `json:"success_rate"` // of finished runs
	LateP50    float64        `json:"lateness_p50_ms"`
	LateP99    float64        `json:"lateness_p99_ms"`
	PerDay     []DayCount     `json:"per_day"`
	Jobs       int            `json:"jobs"`
	Executors  int            `json:"executors"`
	Partitions []int          `json:"partitions"`
}

// DayCount is the runs of one day (UTC).
type DayCount struct {
	Day       string `json:"day"`
	Runs      int    `json:"runs"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
}

// Stats counts the runs created in the last day by status, the success
// rate, the lateness (scheduled time → start) of scheduled runs, and runs
// per day over the last week.
func (s *Scheduler) Stats(ctx context.Context) (*Stats, error) {
	now := time.Now().UTC()
	st := &Stats{Since: now.Add(-24 * time.Hour), ByStatus: map[string]int{}, Partitions: s.Owned()}
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
	if fin := st.ByStatus[StatusSucceeded] + st.ByStatus[StatusFailed] + st.ByStatus[StatusKilled]; fin > 0 {
		st.Success = float64(st.ByStatus[StatusSucceeded]) / float64(fin)
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
	days := map[string]*DayCount{}
	for i := 6; i >= 0; i-- {
		d := now.AddDate(0, 0, -i).Format("2006-01-02")
		dc := &DayCount{Day: d}
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
			case StatusSucceeded:
				dc.Succeeded++
			case StatusFailed, StatusKilled:
				dc.Failed++
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
