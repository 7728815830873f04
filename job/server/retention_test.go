package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
)

// Retention keeps the newest RunsPerJob runs of a job, removes runs older
// than RunRetention, and takes their logs with them.
func TestRetention(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	s, err := New(Config{Store: st, NodeName: "n1", RunsPerJob: 3, RunRetention: time.Hour, LeaseTTL: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	j := manualJob(t, s)
	for range 5 {
		if _, err := s.Trigger(ctx, j.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "the five runs to fail (no executor)", func() bool {
		rs, _ := s.Runs(ctx, j.ID, 100)
		done := len(rs) == 5
		for _, r := range rs {
			done = done && r.Status == job.StatusFailed
		}
		return done
	})
	rs, _ := s.Runs(ctx, j.ID, 100)
	for _, r := range rs {
		if _, err := st.ExecContext(ctx, `INSERT INTO job_logs (run_id, seq, body, created_at) VALUES (?, 0, 'x', 0)`, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	// An old run of another job, finished two hours ago.
	j2, _ := s.Create(ctx, job.Job{Name: "j2", App: "a", Handler: "h", Trigger: job.Trigger{Kind: job.TriggerManual}, Enabled: true})
	if _, err := st.ExecContext(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
		VALUES (?, ?, 1, 0, 0, 1, 'manual', '', 'succeeded', 0, '', 0, '', 0, 0, ?, '', 0, '')`, j2.ID, partOf(j2.ID, s.cfg.Partitions), ms(time.Now().Add(-2*time.Hour))); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "every partition to be owned", func() bool { return len(s.Owned()) == s.cfg.Partitions })
	n, err := s.sweep(ctx)
	if err != nil || n != 3 {
		t.Fatalf("sweep removed %d runs, want 3 (2 beyond the newest 3, 1 too old): %v", n, err)
	}
	left, _ := s.Runs(ctx, j.ID, 100)
	if len(left) != 3 || left[0].ID != rs[0].ID {
		t.Fatalf("kept %+v", left)
	}
	var logs int
	_ = st.QueryRowContext(ctx, `SELECT COUNT(*) FROM job_logs`).Scan(&logs)
	if logs != 3 {
		t.Fatalf("%d log chunks left, want 3", logs)
	}
}

// An executor that timed out or failed to take runs three times in a
// minute is tried last.
func TestSlowExecutorGoesLast(t *testing.T) {
	s := &Scheduler{log: slog.New(slog.NewTextHandler(io.Discard, nil)), rr: map[int64]int{}, uses: map[string]int64{}, lastAt: map[string]int64{},
		slowHits: map[string][]time.Time{}}
	ex := []job.ExecutorInfo{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}}
	j := &job.Job{ID: 1, Route: job.RouteFirst}
	for range 2 {
		s.markSlow("a")
	}
	if got := s.route(j, 0, ex); got[0].Addr != "a" {
		t.Fatalf("two failures already avoided a: %v", got)
	}
	s.markSlow("a")
	if got := s.route(j, 0, ex); got[0].Addr != "b" || got[2].Addr != "a" {
		t.Fatalf("slow a not last: %v", got)
	}
	if sl := s.Slow(); len(sl) != 1 || sl[0] != "a" {
		t.Fatalf("Slow() = %v", sl)
	}
}
