package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/store"
)

// checkFlowJobs verifies that a flow's nodes name existing jobs that are
// not flows themselves.
func checkFlowJobs(ctx context.Context, q store.Querier, f *job.Flow) error {
	for _, n := range f.Nodes {
		j, err := loadJob(ctx, q, n.Job)
		if err != nil {
			return fmt.Errorf("%w flow: node %s: %v", job.ErrInvalid, n.Name, err)
		}
		if j.Flow != nil {
			return fmt.Errorf("%w flow: node %s: job %s is a flow; flows do not nest", job.ErrInvalid, n.Name, j.Name)
		}
	}
	return nil
}

// resolveFlowNames turns the nodes that name their job (job_name) into
// nodes that carry its ID; a node giving both must give the same job.
func resolveFlowNames(ctx context.Context, q store.Querier, f *job.Flow) error {
	for i := range f.Nodes {
		n := &f.Nodes[i]
		if n.JobName == "" {
			continue
		}
		var id int64
		err := q.QueryRowContext(ctx, `SELECT id FROM job_jobs WHERE name = ?`, n.JobName).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w flow: node %s: no job named %q", job.ErrInvalid, n.Name, n.JobName)
		}
		if err != nil {
			return fmt.Errorf("job: flow node %s: %w", n.Name, err)
		}
		if n.Job != 0 && n.Job != id {
			return fmt.Errorf("%w flow: node %s: job %d is not %q (job %d)", job.ErrInvalid, n.Name, n.Job, n.JobName, id)
		}
		n.Job, n.JobName = id, ""
	}
	return nil
}

type flowRef struct {
	id   int64
	node string
}

// startFlow records a flow run and inserts the runs of its root nodes.
func (s *Scheduler) startFlow(ctx context.Context, tx *store.Tx, j *job.Job, fireAt int64, cause string, now time.Time) ([]int64, error) {
	fid, err := tx.InsertID(ctx, `INSERT INTO job_flows (job_id, fire_at, status, created_at, finished_at) VALUES (?, ?, 'running', ?, 0)`,
		j.ID, fireAt, ms(now))
	if err != nil {
		return nil, fmt.Errorf("job: start flow %s: %w", j.Name, err)
	}
	var ids []int64
	for _, n := range j.Flow.Nodes {
		if len(n.After) > 0 {
			continue
		}
		r, err := s.startNode(ctx, tx, fid, fireAt, n, j.Params, 0, now)
		if err != nil {
			return nil, err
		}
		ids = append(ids, r...)
	}
	return ids, nil
}

// flowOfRun is the flow a node's run belongs to (0: none).
func (s *Scheduler) flowOfRun(ctx context.Context, run int64) int64 {
	var fid int64
	_ = s.st.QueryRowContext(ctx, `SELECT flow_id FROM job_runs WHERE id = ?`, run).Scan(&fid)
	return fid
}

func (s *Scheduler) startNode(ctx context.Context, tx *store.Tx, fid, fireAt int64, n job.FlowNode, params string, attempt int, now time.Time) ([]int64, error) {
	nj, err := loadJob(ctx, tx, n.Job)
	if err != nil {
		return nil, fmt.Errorf("job: flow node %s: %w", n.Name, err)
	}
	if params == "" {
		params = nj.Params
	}
	return s.insertRuns(ctx, tx, nj, fireAt, attempt, "flow", params, 0, now, flowRef{id: fid, node: n.Name})
}

type nodeState struct {
	runID   int64
	status  string
	output  string
	errText string
	attempt int
}

// nodeStates returns the latest run of each node of a flow run.
func nodeStates(ctx context.Context, q store.Querier, fid int64) (map[string]nodeState, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, node, status, output, error, attempt FROM job_runs WHERE flow_id = ? ORDER BY id`, fid)
	if err != nil {
		return nil, fmt.Errorf("job: flow %d: %w", fid, err)
	}
	defer rows.Close()
	out := map[string]nodeState{}
	for rows.Next() {
		var n string
		var st nodeState
		if err := rows.Scan(&st.runID, &n, &st.status, &st.output, &st.errText, &st.attempt); err != nil {
			return nil, err
		}
		if prev, ok := out[n]; ok && prev.status == job.StatusSucceeded {
			continue // a node's success stands
		}
		out[n] = st
	}
	return out, rows.Err()
}

// advanceFlow moves a flow run on after one of its node runs ended (in the
// same transaction): it starts the nodes now ready, or ends the flow.
func (s *Scheduler) advanceFlow(ctx context.Context, tx *store.Tx, fid int64, node, status string, retrying bool, now time.Time) ([]int64, error) {
	var jobID, fireAt int64
	var fstatus string
	if err := tx.QueryRowContext(ctx, `SELECT job_id, fire_at, status FROM job_flows WHERE id = ?`, fid).Scan(&jobID, &fireAt, &fstatus); err != nil {
		return nil, fmt.Errorf("job: flow %d: %w", fid, err)
	}
	fj, err := loadJob(ctx, tx, jobID)
	if err != nil || fj.Flow == nil {
		return nil, nil // the flow job was deleted or changed kind
	}
	if status != job.StatusSucceeded {
		if !retrying {
			_, err := tx.ExecContext(ctx, `UPDATE job_flows SET status = 'failed', finished_at = ? WHERE id = ?`, ms(now), fid)
			return nil, err
		}
		return nil, nil
	}
	states, err := nodeStates(ctx, tx, fid)
	if err != nil {
		return nil, err
	}
	var ids []int64
	done := 0
	for _, n := range fj.Flow.Nodes {
		if st, ok := states[n.Name]; ok {
			if st.status == job.StatusSucceeded {
				done++
			}
			continue
		}
		var outs []string
		ready := true
		for _, a := range n.After {
			st, ok := states[a]
			if !ok || st.status != job.StatusSucceeded {
				ready = false
				break
			}
			if st.output != "" {
				outs = append(outs, st.output)
			}
		}
		if !ready {
			continue
		}
		r, err := s.startNode(ctx, tx, fid, fireAt, n, strings.Join(outs, "\n"), 0, now)
		if err != nil {
			return nil, err
		}
		ids = append(ids, r...)
	}
	if done == len(fj.Flow.Nodes) {
		_, err := tx.ExecContext(ctx, `UPDATE job_flows SET status = 'succeeded', finished_at = ? WHERE id = ?`, ms(now), fid)
		return nil, err
	}
	return ids, nil
}

// GetFlow reads a flow run with the state of each node.
func (s *Scheduler) GetFlow(ctx context.Context, fid int64) (*job.FlowRun, error) {
	f := &job.FlowRun{ID: fid}
	var fire, created, finished int64
	err := s.st.QueryRowContext(ctx, `SELECT job_id, fire_at, status, created_at, finished_at FROM job_flows WHERE id = ?`, fid).
		Scan(&f.JobID, &fire, &f.Status, &created, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: flow run %d", job.ErrNotFound, fid)
	}
	if err != nil {
		return nil, fmt.Errorf("job: flow run %d: %w", fid, err)
	}
	f.FireAt, f.CreatedAt = fromMS(fire), fromMS(created)
	if finished > 0 {
		f.FinishedAt = fromMS(finished)
	}
	j, err := s.Get(ctx, f.JobID)
	if err != nil || j.Flow == nil {
		return f, nil
	}
	states, err := nodeStates(ctx, s.st, fid)
	if err != nil {
		return nil, err
	}
	for _, n := range j.Flow.Nodes {
		ns := job.FlowNodeState{FlowNode: n, Status: "waiting"}
		if st, ok := states[n.Name]; ok {
			ns.Status, ns.RunID, ns.Attempt, ns.Output, ns.Error = st.status, st.runID, st.attempt, st.output, st.errText
		}
		f.Nodes = append(f.Nodes, ns)
	}
	return f, nil
}

// Flows lists a flow job's runs, newest first.
func (s *Scheduler) Flows(ctx context.Context, jobID int64, limit int) ([]job.FlowRun, error) {
	if limit <= 0 || limit > 1000 {
		limit = 50
	}
	rows, err := s.st.QueryContext(ctx, `SELECT id, fire_at, status, created_at, finished_at FROM job_flows WHERE job_id = ? ORDER BY id DESC LIMIT ?`, jobID, limit)
	if err != nil {
		return nil, fmt.Errorf("job: flow runs of %d: %w", jobID, err)
	}
	defer rows.Close()
	var out []job.FlowRun
	for rows.Next() {
		f := job.FlowRun{JobID: jobID}
		var fire, created, finished int64
		if err := rows.Scan(&f.ID, &fire, &f.Status, &created, &finished); err != nil {
			return nil, err
		}
		f.FireAt, f.CreatedAt = fromMS(fire), fromMS(created)
		if finished > 0 {
			f.FinishedAt = fromMS(finished)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// RetryNode runs a failed node of a flow run again; on success the flow
// resumes from it.
func (s *Scheduler) RetryNode(ctx context.Context, fid int64, node string) ([]int64, error) {
	var ids []int64
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		var jobID, fireAt int64
		if err := tx.QueryRowContext(ctx, `SELECT job_id, fire_at FROM job_flows WHERE id = ?`, fid).Scan(&jobID, &fireAt); err != nil {
			return fmt.Errorf("%w: flow run %d", job.ErrNotFound, fid)
		}
		fj, err := loadJob(ctx, tx, jobID)
		if err != nil || fj.Flow == nil {
			return fmt.Errorf("%w: flow run %d: its job is gone or no longer a flow", job.ErrInvalid, fid)
		}
		var n *job.FlowNode
		for i := range fj.Flow.Nodes {
			if fj.Flow.Nodes[i].Name == node {
				n = &fj.Flow.Nodes[i]
			}
		}
		if n == nil {
			return fmt.Errorf("%w: flow run %d has no node %q", job.ErrNotFound, fid, node)
		}
		states, err := nodeStates(ctx, tx, fid)
		if err != nil {
			return err
		}
		st, ok := states[node]
		if !ok || (st.status != job.StatusFailed && st.status != job.StatusKilled && st.status != job.StatusDiscarded) {
			return fmt.Errorf("%w: node %s of flow run %d has not failed", job.ErrInvalid, node, fid)
		}
		var maxAttempt int
		if err := tx.QueryRowContext(ctx, `SELECT MAX(attempt) FROM job_runs WHERE flow_id = ? AND node = ?`, fid, node).Scan(&maxAttempt); err != nil {
			return err
		}
		var outs []string
		for _, a := range n.After {
			if o := states[a].output; o != "" {
				outs = append(outs, o)
			}
		}
		ids, err = s.startNode(ctx, tx, fid, fireAt, *n, strings.Join(outs, "\n"), maxAttempt+1, time.Now())
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE job_flows SET status = 'running', finished_at = 0 WHERE id = ?`, fid)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.queueRuns(ctx, ids)
	return ids, nil
}
