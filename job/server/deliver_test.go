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

// A delivery whose call ends before it is recorded (the server shutting
// down, the executor giving up) is refused whole, for the executor to
// deliver again: the runs it reports are neither failed nor logged as
// lost. Delivered again, it is recorded.
func TestDeliveryCutOffIsRedeliveredNotFailed(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	var logs syncBuffer
	s, err := New(Config{Store: st, NodeName: "n1", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := auth.WithPrincipal(context.Background(), &auth.Principal{Name: "ex", Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}})
	j, err := s.Create(ctx, job.Job{Name: "j", App: "a", Handler: "h", Trigger: job.Trigger{Kind: job.TriggerManual}, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	now := ms(time.Now())
	var runID int64
	err = st.InTx(ctx, func(tx *store.Tx) error {
		runID, err = tx.InsertID(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
			VALUES (?, ?, ?, 0, 0, 1, 'manual', '', 'running', ?, 'ex:1', 0, '', ?, ?, 0, '', 0, '')`, j.ID, partOf(j.ID, s.cfg.Partitions), now, now, now, now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
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
	s, err := New(Config{Store: st, NodeName: "n1", Logger: slog.New(slog.NewTextHandler(&syncBuffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	j, err := s.Create(ctx, job.Job{Name: "j", App: "a", Handler: "h", Trigger: job.Trigger{Kind: job.TriggerManual}, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
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
	s, err := New(Config{Store: st, NodeName: "n1", Logger: slog.New(slog.NewTextHandler(&syncBuffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	j, err := s.Create(ctx, job.Job{Name: "j", App: "a", Handler: "h", Trigger: job.Trigger{Kind: job.TriggerManual}, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
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
