package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
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
// on: a fire to the claimer, a pending run to the workers, a
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
			case s.claims <- it:
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

// claimer claims the fires this server has to claim. It is the only one:
// whatever comes due within a short gathering window, and whatever came due
// while its last transaction ran, goes into one transaction over all the
// partitions involved (group commit). A transaction costs about the same
// for one fire as for fifty, so batching by time, not by partition, keeps
// the cost per fire low at any rate and with any number of servers.
func (s *Scheduler) claimer() {
	// A batch holds the lease rows of its partitions locked until it
	// commits, and the renewal skips locked rows: a transaction must stay
	// well inside the lease, or a busy server loses every partition it
	// holds at once. Hence a bounded batch and a deadline of a sixth of
	// the lease (fires not claimed by then are retried a second later).
	const maxBatch = 128
	gather := min(s.cfg.ClaimAhead/5, 20*time.Millisecond)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var batch []fireItem
		select {
		case <-s.stop:
			return
		case f := <-s.claims:
			batch = append(batch, f)
		}
		timer.Reset(gather)
	collect:
		for len(batch) < maxBatch {
			select {
			case f := <-s.claims:
				batch = append(batch, f)
			case <-timer.C:
				break collect
			case <-s.stop:
				return
			}
		}
		for len(batch) < maxBatch { // what queued meanwhile goes too
			select {
			case f := <-s.claims:
				batch = append(batch, f)
				continue
			default:
			}
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s.fireBatch(ctx, batch)
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

// fireBatch claims scheduled fires in the store — each job's next_fire_at
// moves on from exactly its fire time, under its partition's term, in the
// same transaction that inserts the runs, already assigned to an executor
// by the job's route — and then sends them at their times. Fires of
// partitions this server no longer holds are dropped (their new holder
// fires them).
func (s *Scheduler) fireBatch(ctx context.Context, items []fireItem) {
	terms := map[int]int64{}
	live := items[:0:0]
	for _, f := range items {
		t, ok := terms[f.part]
		if !ok {
			if t, ok = s.term(f.part); !ok {
				continue
			}
			terms[f.part] = t
		}
		live = append(live, f)
	}
	for attempt := 0; len(live) > 0 && attempt <= len(terms); attempt++ {
		lost, err := s.claimBatch(ctx, live, terms)
		if err != nil || len(lost) == 0 {
			return
		}
		// Some partitions were lost since: claim the rest without them.
		rest := live[:0:0]
		for _, f := range live {
			if !slices.Contains(lost, f.part) {
				rest = append(rest, f)
			}
		}
		for _, p := range lost {
			delete(terms, p)
		}
		live = rest
	}
}

// errPartitionsLost carries the partitions that failed the fence.
type errPartitionsLost []int

func (e errPartitionsLost) Error() string { return fmt.Sprintf("job: partitions %v lost", []int(e)) }

// claimBatch is one claiming transaction; it returns the partitions that
// failed the fence (nothing was claimed then).
func (s *Scheduler) claimBatch(ctx context.Context, items []fireItem, terms map[int]int64) ([]int, error) {
	now := time.Now()
	type claim struct {
		j    *job.Job
		runs []*plannedRun
		part int
		term int64
	}
	var claims []claim
	var flowRuns []int64
	var retry []fireItem
	txCtx, cancelTx := context.WithTimeout(ctx, max(s.cfg.LeaseTTL/6, 100*time.Millisecond)) // see claimer
	defer cancelTx()
	err := s.st.InTx(txCtx, func(tx *store.Tx) error {
		ctx := txCtx
		claims, flowRuns, retry = claims[:0], flowRuns[:0], retry[:0]
		if err := s.fenceAll(ctx, tx, terms); err != nil {
			return err
		}
		ids := make([]int64, len(items))
		for i, f := range items {
			ids[i] = f.jobID
		}
		// One query for the batch, the rows locked until the claim commits
		// (PostgreSQL, MySQL; SQLite serialises writers): what is checked
		// here cannot change before the batched writes below.
		jobs, err := loadJobsLocked(ctx, tx, ids)
		if err != nil {
			return err
		}
		var advances []advance
		var inserts []*plannedRun
		for _, f := range items {
			part, term := f.part, terms[f.part]
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
				advances = append(advances, advanceTo(j, next))
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
			} else {
				// Within the threshold, each fire runs, late, in turn: the
				// next one, if already due, is fired right after this.
				advances = append(advances, advanceTo(j, next))
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
				planned, err := s.planAssigned(ctx, tx, j, f.fireAt, cause, covers, term, due)
				if err != nil {
					return err
				}
				claims = append(claims, claim{j, planned, part, term})
				inserts = append(inserts, planned...)
			}
			if nf := j.NextFireAt; !nf.IsZero() && nf.Before(now.Add(s.cfg.LoadAhead)) {
				retry = append(retry, fireItem{jobID: j.ID, fireAt: ms(nf), part: part})
			}
		}
		// The batch's writes: a few statements, not two per fire.
		if err := advanceJobs(ctx, tx, advances); err != nil {
			return err
		}
		return insertPlanned(ctx, tx, s.cfg.Partitions, inserts)
	})
	var lost errPartitionsLost
	switch {
	case errors.As(err, &lost):
		for _, p := range lost {
			s.drop(p) // the lease loop confirms and rebalances
		}
		return lost, nil
	case err != nil:
		s.log.Error("job: claiming fires failed; they will be retried", "fires", len(items), "err", err)
		for _, f := range items {
			s.wheel.add(f.jobID, time.Now().Add(time.Second), f) // the store may be down: claim again in a second
		}
		return nil, err
	}
	for _, f := range retry {
		s.claimAt(f)
	}
	s.queueRuns(ctx, flowRuns)
	var sends []*sending
	for _, c := range claims {
		for _, pr := range c.runs {
			a := pr.a
			if a.ex == nil { // no executor chosen: the slow path fails or routes it, at its time
				if at := fromMS(a.fireAt); time.Now().Before(at) {
					s.wheel.add(runKey(a.id), at, runItem{runID: a.id, part: c.part})
					continue
				}
				s.dispatch(ctx, c.j, a.id, c.part, c.term)
				continue
			}
			if at := fromMS(a.fireAt); time.Now().Before(at) {
				s.wheel.add(sendKey(a.id), at, sendItem{j: c.j, a: a, part: c.part, term: c.term}) // sent on time, never before
				continue
			}
			sends = append(sends, s.sendAsync(ctx, c.j, a, c.part, c.term))
		}
	}
	for _, sd := range sends {
		s.sent(ctx, sd)
	}
	return nil, nil
}

// fenceAll fences every partition of a claim (store.FenceLeases, one
// statement); errPartitionsLost names those this server no longer holds.
func (s *Scheduler) fenceAll(ctx context.Context, tx *store.Tx, terms map[int]int64) error {
	byName := make(map[string]int64, len(terms))
	for p, t := range terms {
		byName[partLease(p)] = t
	}
	lost, err := store.FenceLeases(ctx, tx, s.holder.ID, byName, s.cfg.LeaseTTL)
	if err != nil {
		return fmt.Errorf("job: fence: %w", err)
	}
	if len(lost) == 0 {
		return nil
	}
	var ps errPartitionsLost
	for _, n := range lost {
		if p, err := strconv.Atoi(strings.TrimPrefix(n, "job/p/")); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// assigned is a run inserted by fireBatch, running on ex (nil: pending).
type assigned struct {
	id     int64
	fireAt int64
	shard  int
	total  int
	ex     *job.ExecutorInfo
	// started is the run's started_at (unix ms): its RunRequest.Deadline
	// is this plus job.DispatchWindow.
	started int64
}

// plannedRun is a run a claim inserts: its row's values, and (once
// inserted) its id in a.
type plannedRun struct {
	a       assigned
	jobID   int64
	cause   string
	params  string
	status  string
	due     int64
	addr    string
	term    int64
	started int64
	covers  int
}

// planAssigned plans the runs of one fire, assigned to the executor the
// job's route picks (one per executor for a broadcast); insertPlanned
// writes them.
func (s *Scheduler) planAssigned(ctx context.Context, tx *store.Tx, j *job.Job, fireAt int64, cause string, covers int, term int64, now time.Time) ([]*plannedRun, error) {
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
	out := make([]*plannedRun, 0, total)
	for i := range total {
		pr := &plannedRun{a: assigned{fireAt: fireAt, shard: i, total: total}, jobID: j.ID, cause: cause, params: j.Params,
			status: job.StatusPending, due: ms(now), term: term, covers: covers}
		if gate != gateOpen {
			// Over max_concurrency: pending, for dispatch (which applies the
			// block strategy) rather than straight to an executor.
		} else if job.GlueType(j.Handler) == "" {
			if cands := s.route(j, i, ex); len(cands) > 0 {
				e := cands[0]
				pr.a.ex, pr.status, pr.addr, pr.started = &e, job.StatusRunning, e.Addr, ms(now)
				pr.a.started = pr.started
			}
		}
		out = append(out, pr)
	}
	return out, nil
}

// insertPlanned inserts planned runs with one multi-row INSERT per 200 and
// gives each its id: from the INSERT's RETURNING rows (PostgreSQL, SQLite),
// or read back by the runs' unique key (job, fire time, attempt 0, shard,
// cause) where a multi-row INSERT reports only one id (MySQL). Rows are
// matched by key, not by position.
func insertPlanned(ctx context.Context, tx *store.Tx, partitions int, runs []*plannedRun) error {
	type key struct {
		job, fireAt int64
		shard       int
		cause       string
	}
	want := make(map[key]*plannedRun, len(runs))
	for _, r := range runs {
		want[key{r.jobID, r.a.fireAt, r.a.shard, r.cause}] = r
	}
	scan := func(rows *sql.Rows) error {
		var id int64
		var k key
		if err := rows.Scan(&id, &k.job, &k.fireAt, &k.shard, &k.cause); err != nil {
			return err
		}
		if r := want[k]; r != nil {
			r.a.id = id
		}
		return nil
	}
	returning := tx.Dialect() != store.MySQL
	const rowsPer = 200
	for rest := runs; len(rest) > 0; {
		part := rest[:min(rowsPer, len(rest))]
		rest = rest[len(part):]
		args := make([]any, 0, 14*len(part))
		for _, r := range part {
			args = append(args, r.jobID, partOf(r.jobID, partitions), r.a.fireAt, r.a.shard, r.a.total, r.cause, r.params, r.status, r.due, r.addr, r.term, r.due, r.started, r.covers)
		}
		q := `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node, covers) VALUES ` +
			strings.TrimSuffix(strings.Repeat(`(?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, 0, '', 0, '', ?), `, len(part)), ", ")
		if !returning {
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("job: insert %d runs: %w", len(part), err)
			}
			continue
		}
		rows, err := tx.QueryContext(ctx, q+` RETURNING id, job_id, fire_at, shard_index, cause`, args...)
		if err != nil {
			return fmt.Errorf("job: insert %d runs: %w", len(part), err)
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return fmt.Errorf("job: insert %d runs: %w", len(part), err)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("job: insert %d runs: %w", len(part), err)
		}
	}
	if !returning {
		var jobIDs []int64
		fires := map[int64]bool{}
		for _, r := range runs {
			jobIDs = append(jobIDs, r.jobID)
			fires[r.a.fireAt] = true
		}
		slices.Sort(jobIDs)
		jobIDs = slices.Compact(jobIDs)
		fireList := make([]string, 0, len(fires))
		for f := range fires {
			fireList = append(fireList, strconv.FormatInt(f, 10))
		}
		err := byIDs(ctx, tx, `SELECT id, job_id, fire_at, shard_index, cause FROM job_runs WHERE attempt = 0 AND flow_id = 0 AND node = '' AND fire_at IN (`+strings.Join(fireList, ", ")+`) AND job_id IN (`, `)`, jobIDs, scan)
		if err != nil {
			return fmt.Errorf("job: read the ids of %d runs: %w", len(runs), err)
		}
	}
	for _, r := range runs {
		if r.a.id == 0 {
			return fmt.Errorf("job: run of job %d at %d (shard %d) not found after its insert", r.jobID, r.a.fireAt, r.a.shard)
		}
	}
	return nil
}

// advance is a job's next fire, set by a claim.
type advance struct{ id, next int64 }

// advanceTo sets j's next fire in memory and returns the write for
// advanceJobs (next zero: none).
func advanceTo(j *job.Job, next time.Time) advance {
	j.NextFireAt = next
	if next.IsZero() {
		return advance{j.ID, 0}
	}
	j.NextFireAt = fromMS(ms(next))
	return advance{j.ID, ms(next)}
}

// advanceJobs writes the next fires of a claim, one statement per 500
// jobs. The rows were read locked in the same transaction, so each job is
// still at the fire the claim checked.
func advanceJobs(ctx context.Context, tx *store.Tx, advs []advance) error {
	// A job fired twice in one claim is written once, at its last advance.
	last := make(map[int64]int, len(advs))
	for i, a := range advs {
		last[a.id] = i
	}
	if len(last) < len(advs) {
		uniq := make([]advance, 0, len(last))
		for i, a := range advs {
			if last[a.id] == i {
				uniq = append(uniq, a)
			}
		}
		advs = uniq
	}
	for len(advs) > 0 {
		part := advs[:min(500, len(advs))]
		advs = advs[len(part):]
		args := make([]any, 0, 3*len(part))
		var b strings.Builder
		b.WriteString(`UPDATE job_jobs SET next_fire_at = CASE id`)
		for _, a := range part {
			b.WriteString(` WHEN ? THEN ?`)
			args = append(args, a.id, a.next)
		}
		b.WriteString(` ELSE next_fire_at END WHERE id IN (?` + strings.Repeat(", ?", len(part)-1) + `)`)
		for _, a := range part {
			args = append(args, a.id)
		}
		res, err := tx.ExecContext(ctx, b.String(), args...)
		if err != nil {
			return fmt.Errorf("job: advance %d jobs: %w", len(part), err)
		}
		if n, err := res.RowsAffected(); err == nil && n != int64(len(part)) && tx.Dialect() != store.MySQL {
			// MySQL counts only rows whose value changed; elsewhere a row
			// missing is a job deleted under a lock it should not pass.
			return fmt.Errorf("job: advanced %d of %d jobs", n, len(part))
		}
	}
	return nil
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
