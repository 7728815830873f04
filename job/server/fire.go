package server

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/job"
)

// loadLoop reads the jobs and pending runs of the owned partitions that are
// due within LoadAhead into the wheel, and fails runs whose executor is gone.
func (s *Scheduler) loadLoop() {
	t := time.NewTicker(s.cfg.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.load()
	}
}

func (s *Scheduler) load() {
	parts := s.Owned()
	if len(parts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LoadInterval*5)
	defer cancel()
	in := inList(parts)
	horizon := ms(time.Now().Add(s.cfg.LoadAhead))
	fires, err := triples(ctx, s.st, `SELECT id, part, next_fire_at FROM job_jobs WHERE enabled = 1 AND next_fire_at > 0 AND next_fire_at <= ? AND part IN (`+in+`)`, horizon)
	if err != nil {
		s.log.Warn("job: loading due jobs failed", "err", err)
		return
	}
	for _, f := range fires {
		if at, ok := s.wheel.has(f[0]); ok && at.Equal(s.claimTime(f[2])) {
			continue
		}
		s.claimAt(fireItem{jobID: f[0], part: int(f[1]), fireAt: f[2]})
	}
	runs, err := triples(ctx, s.st, `SELECT id, part, due_at FROM job_runs WHERE status = 'pending' AND due_at <= ? AND part IN (`+in+`)`, horizon)
	if err != nil {
		s.log.Warn("job: loading pending runs failed", "err", err)
		return
	}
	for _, r := range runs {
		if _, ok := s.wheel.has(runKey(r[0])); !ok {
			s.wheel.add(runKey(r[0]), fromMS(r[2]), runItem{runID: r[0], part: int(r[1])})
		}
	}
	s.reapLost(ctx, in)
}

// triples runs a query of three integer columns (id, partition, time).
func triples(ctx context.Context, q store.Querier, query string, args ...any) ([][3]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][3]int64
	for rows.Next() {
		var t [3]int64
		if err := rows.Scan(&t[0], &t[1], &t[2]); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func inList(ps []int) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(p))
	}
	return b.String()
}

// claimTime is when a fire due at fireAt (unix ms) is claimed: ClaimAhead
// before it, to the millisecond.
func (s *Scheduler) claimTime(fireAt int64) time.Time {
	return fromMS(fireAt - s.cfg.ClaimAhead.Milliseconds())
}

// claimAt puts a fire in the wheel for its claim.
func (s *Scheduler) claimAt(f fireItem) { s.wheel.add(f.jobID, s.claimTime(f.fireAt), f) }

// triggerLoop sleeps until the wheel's next due time and hands what is due
// on: a fire to its partition's claimer, a pending run to the workers, a
// claimed run due now to its executor at once.
func (s *Scheduler) triggerLoop() {
	s.wheel.run(s.stop, func(v any) bool {
		var ch chan<- any
		switch it := v.(type) {
		case sendItem:
			s.goFunc(func() { s.sendNow(it) })
			return true
		case fireItem:
			select {
			case s.claims[uint(it.part)%uint(len(s.claims))] <- it: // part < Partitions; the modulo guards a mis-set store
				return true
			case <-s.stop:
				return false
			}
		default:
			ch = s.work
		}
		select {
		case ch <- v:
			return true
		case <-s.stop:
			return false
		}
	})
}

func claimQueues(n int) []chan fireItem {
	qs := make([]chan fireItem, n)
	for i := range qs {
		qs[i] = make(chan fireItem, 4096)
	}
	return qs
}

// claimer claims the fires of partition p. One per partition: fires of
// one partition are claimed under its lease row's lock, so two
// transactions of the same partition would only wait for each other;
// instead, whatever came due while one transaction ran goes into the next
// (group commit: the busier the partition, the bigger the batch).
func (s *Scheduler) claimer(p int) {
	const maxBatch = 512
	for {
		var batch []fireItem
		select {
		case <-s.stop:
			return
		case f := <-s.claims[p]:
			batch = append(batch, f)
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case f := <-s.claims[p]:
				batch = append(batch, f)
			default:
				break drain
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s.fireBatch(ctx, p, batch)
		cancel()
	}
}

// worker dispatches pending runs as they come due.
func (s *Scheduler) worker() {
	for {
		select {
		case <-s.stop:
			return
		case v := <-s.work:
			if it, ok := v.(runItem); ok {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				s.dispatchPending(ctx, it)
				cancel()
			}
		}
	}
}

// fireBatch claims scheduled fires of one partition in the store — each
// job's next_fire_at moves on from exactly its fire time, under the
// partition's term, in the same transaction that inserts the runs, already
// assigned to an executor by the job's route — and then sends them.
func (s *Scheduler) fireBatch(ctx context.Context, part int, items []fireItem) {
	term, ok := s.term(part)
	if !ok {
		return
	}
	now := time.Now()
	type claim struct {
		j    *job.Job
		runs []assigned
	}
	var claims []claim
	var flowRuns []int64
	var retry []fireItem
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		claims, flowRuns, retry = claims[:0], flowRuns[:0], retry[:0]
		if err := s.fenceTx(ctx, tx, part, term); err != nil {
			return err
		}
		ids := make([]int64, len(items))
		for i, f := range items {
			ids[i] = f.jobID
		}
		jobs, err := loadJobs(ctx, tx, ids) // one query for the batch
		if err != nil {
			return err
		}
		for _, f := range items {
			j, ok := jobs[f.jobID]
			if !ok {
				continue // deleted
			}
			if !j.Enabled || ms(j.NextFireAt) != f.fireAt {
				continue // changed, or fired already
			}
			fireAt := fromMS(f.fireAt)
			next := j.NextFire(fireAt)
			cause, covers := "schedule", 1
			if late := now.Sub(fireAt); late > j.MisfireThreshold.D() {
				// Missed (the cluster was down, the store unreachable):
				// every fire already past goes with this one.
				for ; !next.IsZero() && next.Before(now) && covers < 1_000_000; covers++ {
					next = j.NextFire(next)
				}
				if !next.IsZero() && next.Before(now) {
					next = j.NextFire(now)
				}
				if covers > 1 {
					s.coalesced.Add(int64(covers - 1))
				}
				if err := s.advanceJob(ctx, tx, j, f.fireAt, next); err != nil {
					if errors.Is(err, errStale) {
						continue
					}
					return err
				}
				if j.Misfire == job.MisfireSkip {
					s.log.Warn("job: missed fires skipped", "job", j.Name, "fire_at", fireAt, "fires", covers, "late", late.Round(time.Millisecond))
					if err := s.recordSkipped(ctx, tx, j, f.fireAt, covers, late, term, now); err != nil {
						return err
					}
					if nf := j.NextFireAt; !nf.IsZero() && nf.Before(now.Add(s.cfg.LoadAhead)) {
						retry = append(retry, fireItem{jobID: j.ID, fireAt: ms(nf), part: part})
					}
					continue
				}
				cause = "misfire"
			} else if err := s.advanceJob(ctx, tx, j, f.fireAt, next); err != nil {
				// Within the threshold, each fire runs, late, in turn: the
				// next one, if already due, is fired right after this.
				if errors.Is(err, errStale) {
					continue
				}
				return err
			}
			// Claimed ahead, the run is due at its fire time: it is
			// recorded as starting then, and nothing dispatches it before.
			due := now
			if at := fromMS(f.fireAt); at.After(now) {
				due = at
			}
			if j.Flow != nil {
				ids, err := s.startFlow(ctx, tx, j, f.fireAt, cause, due)
				if err != nil {
					return err
				}
				flowRuns = append(flowRuns, ids...)
			} else {
				runs, err := s.insertAssigned(ctx, tx, j, f.fireAt, cause, covers, term, due)
				if err != nil {
					return err
				}
				claims = append(claims, claim{j, runs})
			}
			if nf := j.NextFireAt; !nf.IsZero() && nf.Before(now.Add(s.cfg.LoadAhead)) {
				retry = append(retry, fireItem{jobID: j.ID, fireAt: ms(nf), part: part})
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errFenced):
		return
	case err != nil:
		s.log.Error("job: claiming fires failed; they will be retried", "fires", len(items), "err", err)
		for _, f := range items {
			s.wheel.add(f.jobID, time.Now().Add(time.Second), f) // the store may be down: claim again in a second
		}
		return
	}
	for _, f := range retry {
		s.claimAt(f)
	}
	s.queueRuns(ctx, flowRuns)
	var sends []*sending
	for _, c := range claims {
		for _, a := range c.runs {
			if a.ex == nil { // no executor chosen: the slow path fails or routes it, at its time
				if at := fromMS(a.fireAt); time.Now().Before(at) {
					s.wheel.add(runKey(a.id), at, runItem{runID: a.id, part: part})
					continue
				}
				s.dispatch(ctx, c.j, a.id, part, term)
				continue
			}
			if at := fromMS(a.fireAt); time.Now().Before(at) {
				s.wheel.add(sendKey(a.id), at, sendItem{j: c.j, a: a, part: part, term: term}) // sent on time, never before
				continue
			}
			sends = append(sends, s.sendAsync(ctx, c.j, a, part, term))
		}
	}
	for _, sd := range sends {
		s.sent(ctx, sd)
	}
}

// assigned is a run inserted by fireBatch, running on ex (nil: pending).
type assigned struct {
	id     int64
	fireAt int64
	shard  int
	total  int
	ex     *job.ExecutorInfo
}

// insertAssigned inserts the runs of one fire already assigned to the
// executor the job's route picks (one per executor for a broadcast).
func (s *Scheduler) insertAssigned(ctx context.Context, tx *store.Tx, j *job.Job, fireAt int64, cause string, covers int, term int64, now time.Time) ([]assigned, error) {
	ex, err := s.cachedExecutors(ctx, j.App, j.Handler)
	if err != nil {
		return nil, err
	}
	gate, err := s.gate(ctx, tx, j)
	if err != nil {
		return nil, err
	}
	total := 1
	if j.Route == job.RouteBroadcast {
		total = max(len(ex), 1)
	}
	out := make([]assigned, 0, total)
	for i := range total {
		a := assigned{fireAt: fireAt, shard: i, total: total}
		status, addr, started := job.StatusPending, "", int64(0)
		if gate != gateOpen {
			// Over max_concurrency: pending, for dispatch (which applies the
			// block strategy) rather than straight to an executor.
		} else if job.GlueType(j.Handler) == "" {
			if cands := s.route(j, i, ex); len(cands) > 0 {
				e := cands[0]
				a.ex, status, addr, started = &e, job.StatusRunning, e.Addr, ms(now)
			}
		}
		a.id, err = tx.InsertID(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node, covers)
			VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, 0, '', 0, '', ?)`,
			j.ID, partOf(j.ID, s.cfg.Partitions), fireAt, i, total, cause, j.Params, status, ms(now), addr, term, ms(now), started, covers)
		if err != nil {
			return nil, fmt.Errorf("job: insert run of %s: %w", j.Name, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// recordSkipped keeps the fires the skip policy dropped as one finished
// run, status skipped: visible in the job's runs, never run.
func (s *Scheduler) recordSkipped(ctx context.Context, tx *store.Tx, j *job.Job, fireAt int64, covers int, late time.Duration, term int64, now time.Time) error {
	msg := fmt.Sprintf("%d fire(s) from %s skipped: %v late, beyond the misfire threshold %v (policy skip)",
		covers, fromMS(fireAt).Format(time.RFC3339Nano), late.Round(time.Millisecond), j.MisfireThreshold.D())
	_, err := tx.ExecContext(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node, covers)
		VALUES (?, ?, ?, 0, 0, 1, 'misfire', ?, ?, ?, '', ?, ?, ?, 0, ?, '', 0, '', ?)`,
		j.ID, partOf(j.ID, s.cfg.Partitions), fireAt, j.Params, job.StatusSkipped, ms(now), term, msg, ms(now), ms(now), covers)
	if err != nil {
		return fmt.Errorf("job: record skipped fires of %s: %w", j.Name, err)
	}
	return nil
}

var errStale = errors.New("job: fire already claimed or job changed")

// advanceJob moves the job's next fire from exactly prev to next (zero:
// none); zero rows means another holder already did — a double fire avoided.
func (s *Scheduler) advanceJob(ctx context.Context, tx *store.Tx, j *job.Job, prev int64, next time.Time) error {
	nv := int64(0)
	if !next.IsZero() {
		nv = ms(next)
	}
	res, err := tx.ExecContext(ctx, `UPDATE job_jobs SET next_fire_at = ? WHERE id = ? AND next_fire_at = ?`, nv, j.ID, prev)
	if err != nil {
		return fmt.Errorf("job: advance %s: %w", j.Name, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errStale
	}
	j.NextFireAt = time.Time{}
	if nv > 0 {
		j.NextFireAt = fromMS(nv)
	}
	return nil
}

// insertRuns adds the pending run(s) of one fire: one per executor for a
// sharding broadcast, else one.
func (s *Scheduler) insertRuns(ctx context.Context, tx *store.Tx, j *job.Job, fireAt int64, attempt int, cause, params string, term int64, now time.Time, fl flowRef) ([]int64, error) {
	total := 1
	if j.Route == job.RouteBroadcast {
		ex, err := s.executors(ctx, j.App, j.Handler)
		if err != nil {
			return nil, err
		}
		total = max(len(ex), 1)
	}
	ids := make([]int64, 0, total)
	for i := range total {
		id, err := tx.InsertID(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, '', ?, '', ?, 0, 0, '', ?, ?)`,
			j.ID, partOf(j.ID, s.cfg.Partitions), fireAt, attempt, i, total, cause, params, ms(now), term, ms(now), fl.id, fl.node)
		if err != nil {
			if store.IsUniqueViolation(err) {
				return nil, errStale
			}
			return nil, fmt.Errorf("job: insert run of %s: %w", j.Name, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// hashOf is the consistent-hash position of a string.
func hashOf(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// sendNow sends a claimed run whose time has come and settles the answer.
func (s *Scheduler) sendNow(sd sendItem) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.sent(ctx, s.sendAsync(ctx, sd.j, sd.a, sd.part, sd.term))
}

// sendClaimed sends, at their times, the claimed runs still in the wheel
// when the scheduler stops (at most ClaimAhead away), so that a shutdown
// loses none; ctx bounds the wait.
func (s *Scheduler) sendClaimed(ctx context.Context) {
	items := s.wheel.take(func(key any) bool { _, ok := key.(sendKey); return ok })
	var sends []*sending
	for _, it := range items {
		sd := it.value.(sendItem)
		select {
		case <-ctx.Done():
			return // left to the executors' reconciliation: failed as lost, retried per the job
		case <-time.After(time.Until(it.at)): // a claimed run goes out at its time, never before
		}
		sends = append(sends, s.sendAsync(ctx, sd.j, sd.a, sd.part, sd.term))
	}
	for _, sd := range sends {
		s.sent(ctx, sd)
	}
}
