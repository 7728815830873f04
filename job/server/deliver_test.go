package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/job"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testScheduler is a scheduler on st, not started, logging to logs.
func testScheduler(t *testing.T, st *store.Store, logs *syncBuffer) *Scheduler {
	t.Helper()
	s, err := New(Config{Store: st, NodeName: "n1", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// manualJob creates job "j" of app "a" (handler "h", triggered by hand).
func manualJob(t *testing.T, s *Scheduler) *job.Job {
	t.Helper()
	j, err := s.Create(context.Background(), job.Job{Name: "j", App: "a", Handler: "h", Trigger: job.Trigger{Kind: job.TriggerManual}, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// asExecutor is the context of an executor's calls (an admin principal).
func asExecutor() context.Context {
	return auth.WithPrincipal(context.Background(), &auth.Principal{Name: "ex", Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}})
}

// insertRun adds a run of job to the store as the fire path does.
func insertRun(t *testing.T, s *Scheduler, jobID int64, fireAt int64, status string) int64 {
	t.Helper()
	ctx := context.Background()
	var id int64
	err := s.st.InTx(ctx, func(tx *store.Tx) (err error) {
		id, err = tx.InsertID(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
			VALUES (?, ?, ?, 0, 0, 1, 'manual', '', ?, ?, 'ex:1', 0, '', ?, ?, 0, '', 0, '')`, jobID, partOf(jobID, s.cfg.Partitions), fireAt, status, fireAt, fireAt, fireAt)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// One delivery finishes many runs in a few statements: a report repeated in
// the batch, a report for a run already finished and one for another app's
// run change nothing; a failed run is retried per its job; logs are kept.
// On every store (PostgreSQL and MySQL lock the batch's runs).
func TestDeliveryBatch(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			st := storetest.Open(t, d)
			var logs syncBuffer
			s := testScheduler(t, st, &logs)
			ctx := asExecutor()
			mk := func(name, app string, retries int) *job.Job {
				j, err := s.Create(ctx, job.Job{Name: name, App: app, Handler: "h", Trigger: job.Trigger{Kind: job.TriggerManual}, Enabled: true, Retries: retries})
				if err != nil {
					t.Fatal(err)
				}
				return j
			}
			a, flaky, other := mk("a", "a", 0), mk("flaky", "a", 1), mk("other", "b", 0)
			now := ms(time.Now())
			var ok []int64
			for i := range 20 {
				ok = append(ok, insertRun(t, s, a.ID, now+int64(i), job.StatusRunning))
			}
			failing := insertRun(t, s, flaky.ID, now, job.StatusRunning)
			done := insertRun(t, s, a.ID, now+100, job.StatusKilled)
			foreign := insertRun(t, s, other.ID, now, job.StatusRunning)
			req := &job.DeliverRequest{App: "a", Logs: []job.LogRequest{{App: "a", RunID: ok[0], Seq: 1, Text: "hello\n"}, {App: "a", RunID: foreign, Seq: 1, Text: "not mine\n"}}}
			for _, id := range ok {
				req.Reports = append(req.Reports, job.ReportRequest{App: "a", RunID: id, Status: job.StatusSucceeded})
			}
			req.Reports = append(req.Reports,
				job.ReportRequest{App: "a", RunID: ok[3], Status: job.StatusFailed, Error: "a repeat must not win"},
				job.ReportRequest{App: "a", RunID: failing, Status: job.StatusFailed, Error: "boom"},
				job.ReportRequest{App: "a", RunID: done, Status: job.StatusSucceeded},
				job.ReportRequest{App: "a", RunID: foreign, Status: job.StatusSucceeded})
			if err := s.deliver(ctx, req); err != nil {
				t.Fatal(err)
			}
			for _, id := range ok {
				if r, err := s.GetRun(ctx, id); err != nil || r.Status != job.StatusSucceeded || r.Error != "" {
					t.Fatalf("run %d: %+v %v", id, r, err)
				}
			}
			for id, want := range map[int64]string{failing: job.StatusFailed, done: job.StatusKilled, foreign: job.StatusRunning} {
				if r, _ := s.GetRun(ctx, id); r.Status != want {
					t.Fatalf("run %d: %s, want %s", id, r.Status, want)
				}
			}
			var retries int
			if err := st.QueryRowContext(ctx, `SELECT COUNT(*) FROM job_runs WHERE job_id = ? AND attempt = 1 AND status = 'pending'`, flaky.ID).Scan(&retries); err != nil || retries != 1 {
				t.Fatalf("retries of the failed run: %d %v, want 1", retries, err)
			}
			var nlogs int
			if err := st.QueryRowContext(ctx, `SELECT COUNT(*) FROM job_logs`).Scan(&nlogs); err != nil || nlogs != 1 {
				t.Fatalf("log chunks kept: %d %v, want 1 (another app's refused)", nlogs, err)
			}
		})
	}
}

// A delivery whose call ends before it is recorded (the server shutting
// down, the executor giving up) is refused whole, for the executor to
// deliver again: the runs it reports are neither failed nor logged as
// lost. Delivered again, it is recorded.
func TestDeliveryCutOffIsRedeliveredNotFailed(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	var logs syncBuffer
	s := testScheduler(t, st, &logs)
	ctx := asExecutor()
	j := manualJob(t, s)
	runID := insertRun(t, s, j.ID, ms(time.Now()), job.StatusRunning)
	req := &job.DeliverRequest{App: "a", Reports: []job.ReportRequest{{App: "a", RunID: runID, Status: job.StatusSucceeded}}}
	cut, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.deliver(cut, req); err == nil {
		t.Fatal("a delivery cut off before it was recorded was acknowledged")
	}
	r, err := s.GetRun(ctx, runID)
	if err != nil || r.Status != job.StatusRunning {
		t.Fatalf("after the cut-off delivery: %+v %v (want still running, for the redelivery)", r, err)
	}
	if strings.Contains(logs.String(), "could not be recorded") {
		t.Fatalf("a cut-off delivery was logged as a lost report:\n%s", logs.String())
	}
	if err := s.deliver(ctx, req); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.GetRun(ctx, runID); r.Status != job.StatusSucceeded {
		t.Fatalf("redelivered: %+v", r)
	}
}

// A killed run is the operator's decision: the dashboard counts it as
// killed, and it neither lowers the success rate nor counts as a failure.
func TestStatsCountKilledApart(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	s := testScheduler(t, st, &syncBuffer{})
	ctx := context.Background()
	j := manualJob(t, s)
	now := ms(time.Now())
	for i, status := range []string{job.StatusSucceeded, job.StatusSucceeded, job.StatusSucceeded, job.StatusFailed, job.StatusKilled, job.StatusKilled} {
		if _, err := st.ExecContext(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
			VALUES (?, 0, ?, 0, 0, 1, 'manual', '', ?, ?, '', 0, '', ?, ?, ?, '', 0, '')`, j.ID, now+int64(i), status, now, now, now, now); err != nil {
			t.Fatal(err)
		}
	}
	stats, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	today := stats.PerDay[len(stats.PerDay)-1]
	if stats.Success != 0.75 || today.Succeeded != 3 || today.Failed != 1 || today.Killed != 2 {
		t.Fatalf("success %.2f, today %+v: want 0.75 and 3/1/2", stats.Success, today)
	}
}

// Runs are paged newest first: before a run ID, the older ones.
func TestRunsPaging(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	s := testScheduler(t, st, &syncBuffer{})
	ctx := context.Background()
	j := manualJob(t, s)
	for i := range 7 {
		if _, err := st.ExecContext(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
			VALUES (?, 0, ?, 0, 0, 1, 'manual', '', 'succeeded', 0, '', 0, '', 0, 0, 0, '', 0, '')`, j.ID, i+1); err != nil {
			t.Fatal(err)
		}
	}
	var ids []int64
	for before := int64(0); ; {
		page, err := s.RunsBefore(ctx, j.ID, before, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			ids = append(ids, r.ID)
		}
		before = page[len(page)-1].ID
	}
	if len(ids) != 7 {
		t.Fatalf("paged %v, want 7 runs", ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] >= ids[i-1] {
			t.Fatalf("not newest first: %v", ids)
		}
	}
}

// A heartbeat's list counts from when the executor took it, not from when
// it arrived: a heartbeat held up for seconds (a retried call, a server
// paused with it) fails only the runs assigned dispatchGrace before its
// stamp — a run assigned after that could still have reached the executor
// after the list was taken, and failing it would run it twice.
func TestReconcileCountsFromTheHeartbeatsStamp(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	var logs syncBuffer
	s := testScheduler(t, st, &logs)
	ctx := asExecutor()
	j := manualJob(t, s)
	now := time.Now()
	taken := now.Add(-4 * time.Second) // the heartbeat's list is 4 s old
	old := insertRun(t, s, j.ID, ms(taken.Add(-dispatchGrace-time.Second)), job.StatusRunning)
	recent := insertRun(t, s, j.ID, ms(taken.Add(-dispatchGrace+time.Second)), job.StatusRunning)
	s.reconcile(ctx, &job.BeatRequest{App: "a", Addr: "ex:1", Stamp: ms(taken)})
	if r, _ := s.GetRun(ctx, old); r.Status != job.StatusFailed {
		t.Fatalf("a run assigned %v before the list, not in it: %s (want failed as lost)", dispatchGrace+time.Second, r.Status)
	}
	if r, _ := s.GetRun(ctx, recent); r.Status != job.StatusRunning {
		t.Fatalf("a run assigned %v before the list (it may have arrived after): %s (want still running)", dispatchGrace-time.Second, r.Status)
	}
	// Without a stamp (an older executor), the list counts from now.
	s.reconcile(ctx, &job.BeatRequest{App: "a", Addr: "ex:1"})
	if r, _ := s.GetRun(ctx, recent); r.Status != job.StatusFailed {
		t.Fatalf("an unstamped heartbeat: %s (want failed)", r.Status)
	}
}
