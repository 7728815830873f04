package server

import (
	oteltrace "go.opentelemetry.io/otel/trace"

	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/rpc"
)

// executors lists the live executors of app that have handler, in address
// order.
func (s *Scheduler) executors(ctx context.Context, app, handler string) ([]job.ExecutorInfo, error) {
	all, err := listExecutors(ctx, s.st, app, time.Now().Add(-s.cfg.ExecutorTimeout))
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, e := range all {
		if handler == "" || slices.Contains(e.Handlers, handler) {
			out = append(out, e)
		}
	}
	return out, nil
}

func listExecutors(ctx context.Context, q store.Querier, app string, since time.Time) ([]job.ExecutorInfo, error) {
	query := `SELECT app, addr, sign_key, capacity, running, handlers, last_beat FROM job_executors WHERE last_beat >= ?`
	args := []any{ms(since)}
	if app != "" {
		query += ` AND app = ?`
		args = append(args, app)
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY app, addr`, args...)
	if err != nil {
		return nil, fmt.Errorf("job: list executors: %w", err)
	}
	defer rows.Close()
	var out []job.ExecutorInfo
	for rows.Next() {
		var e job.ExecutorInfo
		var handlers string
		var beat int64
		if err := rows.Scan(&e.App, &e.Addr, &e.SignKey, &e.Capacity, &e.Running, &handlers, &beat); err != nil {
			return nil, fmt.Errorf("job: list executors: %w", err)
		}
		_ = json.Unmarshal([]byte(handlers), &e.Handlers)
		e.LastBeat = fromMS(beat)
		out = append(out, e)
	}
	return out, rows.Err()
}

// route orders the candidate executors for one run: the first is tried
// first; the rest are fallbacks when it cannot be reached.
func (s *Scheduler) route(j *job.Job, shard int, ex []job.ExecutorInfo) []job.ExecutorInfo {
	if len(ex) <= 1 {
		return ex
	}
	out := slices.Clone(ex)
	rotate := func(i int) {
		i %= len(out)
		out = append(out[i:], out[:i]...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch j.Route {
	case job.RouteFirst, job.RouteFailover:
		// address order; failover skips the unreachable by trying the next
	case job.RouteLast:
		slices.Reverse(out)
	case job.RouteRoundRobin:
		rotate(s.rr[j.ID])
		s.rr[j.ID]++
	case job.RouteRandom:
		rand.Shuffle(len(out), func(a, b int) { out[a], out[b] = out[b], out[a] })
	case job.RouteHash:
		// Rendezvous hashing: the executor with the highest hash of
		// (job, executor) — a job stays put while the set is stable.
		key := strconv.FormatInt(j.ID, 10)
		sort.Slice(out, func(a, b int) bool { return hashOf(key+"/"+out[a].Addr) > hashOf(key+"/"+out[b].Addr) })
	case job.RouteLFU:
		sort.SliceStable(out, func(a, b int) bool {
			return s.uses[useKey(j.ID, out[a].Addr)] < s.uses[useKey(j.ID, out[b].Addr)]
		})
	case job.RouteLRU:
		sort.SliceStable(out, func(a, b int) bool {
			return s.lastAt[useKey(j.ID, out[a].Addr)] < s.lastAt[useKey(j.ID, out[b].Addr)]
		})
	case job.RouteBusyover:
		sort.SliceStable(out, func(a, b int) bool { return out[a].Running < out[b].Running })
	case job.RouteBroadcast:
		rotate(shard)
		return out[:1] // each shard to its own executor
	}
	// Executors marked slow go last: used only when no other will do.
	now := time.Now()
	sort.SliceStable(out, func(a, b int) bool { return !s.slowLocked(out[a].Addr, now) && s.slowLocked(out[b].Addr, now) })
	return out
}

// Slow executors: one that timed out or could not take a run slowThreshold
// times within slowWindow is avoided for slowWindow (XXL-JOB's "slow"
// trigger pool, per executor).
const (
	slowThreshold = 3
	slowWindow    = time.Minute
)

// markSlow records a timeout or dispatch failure on an executor.
func (s *Scheduler) markSlow(addr string) {
	if addr == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	ts := s.slowHits[addr]
	for len(ts) > 0 && now.Sub(ts[0]) > slowWindow {
		ts = ts[1:]
	}
	ts = append(ts, now)
	s.slowHits[addr] = ts
	if len(ts) == slowThreshold {
		s.log.Warn("job: executor marked slow; avoided for a minute", "executor", addr)
	}
}

func (s *Scheduler) slowLocked(addr string, now time.Time) bool {
	ts := s.slowHits[addr]
	n := 0
	for _, t := range ts {
		if now.Sub(t) <= slowWindow {
			n++
		}
	}
	return n >= slowThreshold
}

// Slow lists the executors this server avoids now.
func (s *Scheduler) Slow() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	now := time.Now()
	for a := range s.slowHits {
		if s.slowLocked(a, now) {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

func useKey(job int64, addr string) string { return strconv.FormatInt(job, 10) + "/" + addr }

func (s *Scheduler) noteUse(job int64, addr string) {
	s.mu.Lock()
	s.uses[useKey(job, addr)]++
	s.lastAt[useKey(job, addr)] = time.Now().UnixNano()
	s.mu.Unlock()
}

// client returns a connection to an executor.
func (s *Scheduler) client(ctx context.Context, addr string) (*rpc.Client, error) {
	s.mu.Lock()
	c := s.conns[addr]
	s.mu.Unlock()
	if c != nil {
		return c, nil
	}
	opts := append([]rpc.DialOption{rpc.WithLogger(s.log), rpc.WithDialTimeout(2 * time.Second)}, s.cfg.DialOptions...)
	c, err := rpc.Dial(ctx, addr, opts...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.conns[addr]; old != nil {
		c.Close()
		return old, nil
	}
	s.conns[addr] = c
	return c, nil
}

// dispatchPending dispatches a pending run (a retry, a manual trigger, a
// child) whose time has come.
func (s *Scheduler) dispatchPending(ctx context.Context, it runItem) {
	term, ok := s.term(it.part)
	if !ok {
		return
	}
	var jobID int64
	var status string
	if err := s.st.QueryRowContext(ctx, `SELECT job_id, status FROM job_runs WHERE id = ?`, it.runID).Scan(&jobID, &status); err != nil || status != job.StatusPending {
		return
	}
	j, err := loadJob(ctx, s.st, jobID)
	if err != nil {
		s.finish(ctx, it.runID, job.StatusFailed, err.Error(), "")
		return
	}
	s.dispatch(ctx, j, it.runID, it.part, term)
}

// dispatch sends a pending run to an executor chosen by the job's route,
// trying the next candidate when one cannot be reached. The run turns
// running in the store (under the partition's term) before the request
// goes out, so a run is never sent twice.
func (s *Scheduler) dispatch(ctx context.Context, j *job.Job, runID int64, part int, term int64) {
	var rr job.RunRequest
	var status string
	err := s.st.QueryRowContext(ctx, `SELECT fire_at, attempt, shard_index, shard_total, params, status FROM job_runs WHERE id = ?`, runID).
		Scan(&rr.FireAt, &rr.Attempt, &rr.ShardIndex, &rr.ShardTotal, &rr.Params, &status)
	if err != nil || status != job.StatusPending {
		return
	}
	switch g, err := s.gate(ctx, s.st, j); {
	case err != nil:
		s.wheel.add(runKey(runID), time.Now().Add(time.Second), runItem{runID: runID, part: part})
		return
	case g == gateWait:
		// serial: wait for a running run to end (checked every 200 ms).
		s.wheel.add(runKey(runID), time.Now().Add(200*time.Millisecond), runItem{runID: runID, part: part})
		return
	case g == gateDiscard:
		s.finish(ctx, runID, job.StatusDiscarded, fmt.Sprintf("max_concurrency %d reached (block strategy discard_later)", j.MaxConcurrency), "")
		return
	case g == gateCover:
		s.coverOldest(ctx, j)
	}
	ex, err := s.executors(ctx, j.App, j.Handler)
	if err != nil {
		s.log.Warn("job: listing executors failed; the run waits", "job", j.Name, "err", err)
		s.wheel.add(runKey(runID), time.Now().Add(time.Second), runItem{runID: runID, part: part})
		return
	}
	if len(ex) == 0 {
		s.finish(ctx, runID, job.StatusFailed, fmt.Sprintf("no live executor of app %q has handler %q", j.App, j.Handler), "")
		return
	}
	rr.RunID, rr.JobID, rr.Job, rr.Handler, rr.Block = runID, j.ID, j.Name, j.Handler, j.Block
	if t := job.GlueType(j.Handler); t != "" {
		g, err := s.Glue(ctx, j.ID, 0)
		if err != nil {
			s.finish(ctx, runID, job.StatusFailed, fmt.Sprintf("glue job %s has no source saved", j.Name), "")
			return
		}
		rr.GlueType, rr.GlueVersion, rr.GlueSource = t, g.Version, g.Source
	}
	rr.TimeoutMS = j.Timeout.D().Milliseconds()
	var lastErr error
	for _, e := range s.route(j, rr.ShardIndex, ex) {
		// Claim: pending → running on e, fenced.
		started := ms(time.Now())
		rr.Deadline = started + job.DispatchWindow.Milliseconds()
		err := s.st.InTx(ctx, func(tx *store.Tx) error {
			if err := s.fenceTx(ctx, tx, part, term); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, `UPDATE job_runs SET status = 'running', executor = ?, started_at = ?, term = ? WHERE id = ? AND status = 'pending'`,
				e.Addr, started, term, runID)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return errStale
			}
			return nil
		})
		if err != nil {
			if !errors.Is(err, errStale) && !errors.Is(err, errFenced) {
				s.log.Warn("job: claiming a run failed", "run", runID, "err", err)
			}
			return
		}
		span := s.startRunSpan(ctx, j, &rr, e.Addr)
		s.stamp(&rr)
		rr.Sign(e.SignKey)
		reply, sent, err := s.send(ctx, e.Addr, &rr)
		endRunSpan(span, err)
		if err == nil {
			s.noteUse(j.ID, e.Addr)
			if reply.Discarded {
				s.finish(ctx, runID, job.StatusDiscarded, "the previous run is still going (block strategy discard_later)", "")
			}
			return
		}
		lastErr = err
		s.log.Warn("job: executor unreachable; trying the next", "job", j.Name, "executor", e.Addr, "err", err)
		// Back to pending for the next candidate — only if the executor
		// certainly did not get it (no connection); otherwise it may be
		// running there, and the run fails rather than runs twice.
		if sent {
			break
		}
		if _, err := s.st.ExecContext(ctx, `UPDATE job_runs SET status = 'pending', executor = '' WHERE id = ? AND status = 'running' AND executor = ?`, runID, e.Addr); err != nil {
			return
		}
		if j.Route == job.RouteBroadcast {
			break
		}
	}
	s.finish(ctx, runID, job.StatusFailed, fmt.Sprintf("no executor took the run: %v", lastErr), "")
}

// send delivers a run; sent is false when no connection could be made (the
// executor certainly did not get it).
func (s *Scheduler) send(ctx context.Context, addr string, rr *job.RunRequest) (reply *job.RunReply, sent bool, err error) {
	c, err := s.client(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err = rpc.Call[job.RunReply](cctx, c, "tangram.Executor/Run", rr)
	return reply, err == nil || !rpc.NotSent(err), err
}

// finish records a run's outcome once (a repeated report is acknowledged
// and ignored), then applies the job's policy: a retry after a failure, the
// children after a success, the next fire of a delay trigger, the next
// nodes of a flow.
func (s *Scheduler) finish(ctx context.Context, runID int64, status, msg, output string) error {
	var newRuns []int64
	var finished bool
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		var err error
		newRuns, finished, err = s.finishTx(ctx, tx, runID, status, msg, output, time.Now())
		return err
	})
	if err != nil {
		s.log.Error("job: recording a run's outcome failed", "run", runID, "err", err)
		return err
	}
	if finished {
		s.metrics.countFinished(status, 1)
	}
	s.queueRuns(ctx, newRuns)
	return nil
}

// finishTx is finish inside tx; it returns the runs it started and
// whether this call finished the run (false for a repeated report).
func (s *Scheduler) finishTx(ctx context.Context, tx *store.Tx, runID int64, status, msg, output string, now time.Time) (newRuns []int64, finished bool, err error) {
	res, err := tx.ExecContext(ctx, `UPDATE job_runs SET status = ?, error = ?, finished_at = ?, output = ? WHERE id = ? AND status IN ('pending', 'running')`,
		status, truncate(msg, 4000), ms(now), truncate(output, job.MaxOutput), runID)
	if err != nil {
		return nil, false, fmt.Errorf("job: finish run %d: %w", runID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, false, nil // already finished: a repeated report
	}
	rs, err := readRuns(ctx, tx, []int64{runID}, false)
	if err != nil {
		return nil, true, err
	}
	r, ok := rs[runID]
	if !ok {
		return nil, true, nil
	}
	j, err := loadJob(ctx, tx, r.jobID)
	if errors.Is(err, job.ErrNotFound) {
		return nil, true, nil
	}
	if err != nil {
		return nil, true, err
	}
	newRuns, err = s.afterFinish(ctx, tx, r, j, status, msg, output, now)
	return newRuns, true, err
}

// runRow is what finishing a run needs to know of it.
type runRow struct {
	id, jobID, fireAt, flowID int64
	attempt, shard            int
	params, node, executor    string
	status                    string
}

// readRuns reads the runs of ids in one query; with
// lock, their rows stay locked until tx ends (PostgreSQL, MySQL), so their
// status cannot change under the caller. A run that is gone is absent.
func readRuns(ctx context.Context, tx *store.Tx, ids []int64, lock bool) (map[int64]*runRow, error) {
	out := make(map[int64]*runRow, len(ids))
	tail := `) ORDER BY id`
	if lock && tx.Dialect() != store.SQLite {
		tail += ` FOR UPDATE` // in id order, as every batch locks them
	}
	err := byIDs(ctx, tx, `SELECT id, job_id, fire_at, attempt, shard_index, params, flow_id, node, executor, status FROM job_runs WHERE id IN (`, tail, ids,
		func(rows *sql.Rows) error {
			r := &runRow{}
			if err := rows.Scan(&r.id, &r.jobID, &r.fireAt, &r.attempt, &r.shard, &r.params, &r.flowID, &r.node, &r.executor, &r.status); err != nil {
				return err
			}
			out[r.id] = r
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("job: read runs: %w", err)
	}
	return out, nil
}

// afterFinish applies job j's policy to run r, which has just finished
// with status: alarms, the workflow's next nodes, a retry, children, a
// delay trigger's next fire. It returns the runs it queued.
func (s *Scheduler) afterFinish(ctx context.Context, tx *store.Tx, r *runRow, j *job.Job, status, msg, output string, now time.Time) ([]int64, error) {
	var newRuns []int64
	runID, attempt, fireAt, executor := r.id, r.attempt, r.fireAt, r.executor
	if status == job.StatusFailed && strings.HasPrefix(msg, "timed out after") {
		s.markSlow(executor)
	}
	retry := status == job.StatusFailed && attempt < j.Retries
	if (j.AlarmWebhook != "" || len(j.AlarmEmail) > 0) && !retry && status != job.StatusSucceeded && status != job.StatusDiscarded {
		s.alarm(job.Alarm{Job: j.Name, JobID: j.ID, App: j.App, RunID: runID, Status: status, Error: msg, Attempt: attempt,
			FireAt: fromMS(fireAt), Executor: executor, Server: s.cfg.NodeName}, j.AlarmWebhook, j.AlarmEmail)
	}
	if r.flowID != 0 {
		ids, err := s.advanceFlow(ctx, tx, r.flowID, r.node, status, retry, now)
		if err != nil {
			return nil, err
		}
		newRuns = append(newRuns, ids...)
	}
	switch {
	case retry:
		backoff := j.RetryBackoff.D() << min(attempt, 20)
		id, err := tx.InsertID(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node, covers)
			SELECT job_id, part, fire_at, attempt + 1, shard_index, shard_total, cause, params, 'pending', ?, '', 0, '', ?, 0, 0, '', flow_id, node, covers FROM job_runs WHERE id = ?`,
			ms(now.Add(backoff)), ms(now), runID)
		if err != nil {
			return nil, fmt.Errorf("job: schedule retry of run %d: %w", runID, err)
		}
		if backoff < s.cfg.LoadInterval {
			newRuns = append(newRuns, id)
		}
	case status == job.StatusSucceeded:
		for _, c := range j.Children {
			child, err := loadJob(ctx, tx, c)
			if err != nil {
				continue // a deleted child
			}
			p := child.Params
			if output != "" {
				p = output // a parent's small output feeds its children
			}
			ids, err := s.insertPending(ctx, tx, child, "child", p, now)
			if err != nil {
				return nil, err
			}
			newRuns = append(newRuns, ids...)
		}
	}
	if j.Trigger.Kind == job.TriggerDelay && j.Enabled && r.shard == 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE job_jobs SET next_fire_at = ? WHERE id = ? AND next_fire_at = 0`, ms(now.Add(j.Trigger.Every.D())), j.ID); err != nil {
			return nil, err
		}
		s.wakeLoader()
	}
	return newRuns, nil
}

// queueRuns puts new pending runs in the wheel at once when this server
// holds their partitions (the holders' loaders find the others).
func (s *Scheduler) queueRuns(ctx context.Context, ids []int64) {
	for _, id := range ids {
		var part int
		var due int64
		if err := s.st.QueryRowContext(ctx, `SELECT part, due_at FROM job_runs WHERE id = ?`, id).Scan(&part, &due); err != nil {
			continue
		}
		if _, ok := s.term(part); ok {
			s.wheel.add(runKey(id), fromMS(due), runItem{runID: id, part: part})
		}
	}
}

// insertPending adds a run to dispatch now (manual trigger, child).
func (s *Scheduler) insertPending(ctx context.Context, tx *store.Tx, j *job.Job, cause, params string, now time.Time) ([]int64, error) {
	if j.Flow != nil {
		pj := *j
		pj.Params = params
		return s.startFlow(ctx, tx, &pj, ms(now), cause, now)
	}
	// After any run of the same cause at or after now: a manual or child
	// run never takes the slot (fire time, cause) of another.
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(fire_at), 0) FROM job_runs WHERE job_id = ? AND cause = ? AND flow_id = 0 AND fire_at >= ?`,
		j.ID, cause, ms(now)).Scan(&last); err != nil {
		return nil, fmt.Errorf("job: trigger %s: %w", j.Name, err)
	}
	ids, err := s.insertRuns(ctx, tx, j, max(ms(now), last+1), 0, cause, params, 0, now, flowRef{})
	if errors.Is(err, errStale) {
		return nil, fmt.Errorf("%w: %s was triggered twice at the same moment; trigger again", job.ErrInvalid, j.Name)
	}
	return ids, err
}

// reapLost fails the running runs of the owned partitions whose executor
// stopped heartbeating, or that ran past their timeout by a minute (the
// executor should have killed them); retries follow the job's policy.
func (s *Scheduler) reapLost(ctx context.Context, in string) {
	cut := ms(time.Now().Add(-s.cfg.ExecutorTimeout))
	rows, err := s.st.QueryContext(ctx, `SELECT r.id FROM job_runs r WHERE r.part IN (`+in+`) AND r.status = 'running' AND r.started_at < ?
		AND NOT EXISTS (SELECT 1 FROM job_executors e WHERE e.addr = r.executor AND e.last_beat >= ?)`, cut, cut)
	if err != nil {
		s.log.Warn("job: looking for lost runs failed", "err", err)
		return
	}
	var lost []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			lost = append(lost, id)
		}
	}
	rows.Close()
	for _, id := range lost {
		s.log.Warn("job: run lost with its executor", "run", id)
		s.finish(ctx, id, job.StatusFailed, "executor lost (no heartbeat)", "")
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

type execCache struct {
	at   time.Time
	list []job.ExecutorInfo
}

// cachedExecutors is executors with the list of each app kept for a
// second (the trigger path asks for it on every fire).
func (s *Scheduler) cachedExecutors(ctx context.Context, app, handler string) ([]job.ExecutorInfo, error) {
	s.mu.Lock()
	c, ok := s.execs[app]
	s.mu.Unlock()
	if !ok || time.Since(c.at) > time.Second {
		list, err := listExecutors(ctx, s.st, app, time.Now().Add(-s.cfg.ExecutorTimeout))
		if err != nil {
			return nil, err
		}
		c = execCache{at: time.Now(), list: list}
		s.mu.Lock()
		s.execs[app] = c
		s.mu.Unlock()
	}
	out := make([]job.ExecutorInfo, 0, len(c.list))
	for _, e := range c.list {
		if slices.Contains(e.Handlers, handler) {
			out = append(out, e)
		}
	}
	return out, nil
}

// forgetExecutors drops an app's cached list (an executor failed).
func (s *Scheduler) forgetExecutors(app string) {
	s.mu.Lock()
	delete(s.execs, app)
	s.mu.Unlock()
}

// sending is a run request on its way to an executor.
type sending struct {
	j       *job.Job
	a       assigned
	part    int
	term    int64
	fut     *rpc.Future[job.RunReply]
	dialErr error
	span    oteltrace.Span // the run's dispatch span (nil untraced)
}

// sendAsync sends an assigned run without waiting for the answer.
func (s *Scheduler) sendAsync(ctx context.Context, j *job.Job, a assigned, part int, term int64) *sending {
	sd := &sending{j: j, a: a, part: part, term: term}
	rr := job.RunRequest{RunID: a.id, JobID: j.ID, Job: j.Name, Handler: j.Handler, Params: j.Params, ShardIndex: a.shard, ShardTotal: a.total,
		Block: j.Block, TimeoutMS: j.Timeout.D().Milliseconds(), FireAt: a.fireAt, Deadline: a.started + job.DispatchWindow.Milliseconds()}
	sd.span = s.startRunSpan(ctx, j, &rr, a.ex.Addr)
	s.stamp(&rr)
	rr.Sign(a.ex.SignKey)
	c, err := s.client(ctx, a.ex.Addr)
	if err != nil {
		sd.dialErr = err
		return sd
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	sd.fut = rpc.Go[job.RunReply](cctx, c, "tangram.Executor/Run", &rr)
	go func() { <-sd.fut.Done(); cancel() }()
	return sd
}

// sent settles a sendAsync: a run its executor did not get goes back to
// pending and down the slow path (the next candidate); one it may have got
// but did not confirm fails (retried per the job) rather than risk running
// twice.
func (s *Scheduler) sent(ctx context.Context, sd *sending) {
	var reply *job.RunReply
	err := sd.dialErr
	if err == nil {
		reply, err = sd.fut.Wait()
	}
	endRunSpan(sd.span, err)
	if err == nil {
		s.noteUse(sd.j.ID, sd.a.ex.Addr)
		if reply.Discarded {
			s.finish(ctx, sd.a.id, job.StatusDiscarded, "the previous run is still going (block strategy discard_later)", "")
		}
		return
	}
	if rpc.CodeOf(err) == rpc.FailedPrecondition {
		// Refused as past its dispatch deadline (this server was held up):
		// the executor is fine; the run fails and is retried per its job.
		s.finish(ctx, sd.a.id, job.StatusFailed, fmt.Sprintf("executor %s: %v", sd.a.ex.Addr, err), "")
		return
	}
	s.forgetExecutors(sd.j.App)
	s.markSlow(sd.a.ex.Addr)
	if sd.dialErr != nil || rpc.NotSent(err) {
		s.log.Warn("job: executor unreachable; routing the run elsewhere", "job", sd.j.Name, "executor", sd.a.ex.Addr, "err", err)
		if _, err := s.st.ExecContext(ctx, `UPDATE job_runs SET status = 'pending', executor = '' WHERE id = ? AND status = 'running' AND executor = ?`,
			sd.a.id, sd.a.ex.Addr); err == nil {
			s.dispatch(ctx, sd.j, sd.a.id, sd.part, sd.term)
		}
		return
	}
	s.finish(ctx, sd.a.id, job.StatusFailed, fmt.Sprintf("executor %s: %v", sd.a.ex.Addr, err), "")
}

// Concurrency gate outcomes.
const (
	gateOpen    = iota // under the cap (or no cap)
	gateWait           // serial: wait for a slot
	gateDiscard        // discard_later: drop the new run
	gateCover          // cover_early: kill the oldest running run, then go
)

// gate applies a job's max_concurrency.
func (s *Scheduler) gate(ctx context.Context, q store.Querier, j *job.Job) (int, error) {
	if j.MaxConcurrency <= 0 {
		return gateOpen, nil
	}
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM job_runs WHERE job_id = ? AND status = 'running'`, j.ID).Scan(&n); err != nil {
		return gateOpen, fmt.Errorf("job: running runs of %s: %w", j.Name, err)
	}
	if n < j.MaxConcurrency {
		return gateOpen, nil
	}
	switch j.Block {
	case job.BlockDiscard:
		return gateDiscard, nil
	case job.BlockCover:
		return gateCover, nil
	}
	return gateWait, nil
}

// coverOldest kills the job's oldest running run (cover_early).
func (s *Scheduler) coverOldest(ctx context.Context, j *job.Job) {
	var id int64
	if err := s.st.QueryRowContext(ctx, `SELECT id FROM job_runs WHERE job_id = ? AND status = 'running' ORDER BY id LIMIT 1`, j.ID).Scan(&id); err != nil {
		return
	}
	if err := s.Kill(ctx, id); err != nil {
		s.log.Warn("job: covering the oldest run failed", "job", j.Name, "run", id, "err", err)
	}
}
