package server

import (
	"context"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/job"
)

// A claim's writes are batched: every job advanced in one statement (a job
// claimed twice in the batch keeps its last advance), every run inserted in
// multi-row statements and each given back its own id — across more rows
// than one statement holds. On every store.
func TestClaimWritesBatched(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			st := storetest.Open(t, d)
			var logs syncBuffer
			s := testScheduler(t, st, &logs)
			ctx := auth.WithPrincipal(context.Background(), &auth.Principal{Name: "t", Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}})
			var jobs []*job.Job
			for i := range 3 {
				j, err := s.Create(ctx, job.Job{Name: "j" + string(rune('a'+i)), App: "a", Handler: "h", Trigger: job.Trigger{Kind: job.TriggerManual}, Enabled: true})
				if err != nil {
					t.Fatal(err)
				}
				jobs = append(jobs, j)
			}
			base := time.Now().Truncate(time.Millisecond).Add(time.Hour)
			var runs []*plannedRun
			for i := range 450 { // three INSERT statements
				j := jobs[i%3]
				runs = append(runs, &plannedRun{a: assigned{fireAt: ms(base) + int64(i), shard: 0, total: 1}, jobID: j.ID, cause: "schedule",
					status: job.StatusPending, due: ms(base) + int64(i), covers: 1})
			}
			advs := []advance{{jobs[0].ID, ms(base)}, {jobs[1].ID, 0}, {jobs[0].ID, ms(base) + 5000}, {jobs[2].ID, ms(base) + 7}}
			err := st.InTx(ctx, func(tx *store.Tx) error {
				if _, err := loadJobsLocked(ctx, tx, []int64{jobs[2].ID, jobs[0].ID, jobs[1].ID}); err != nil {
					return err
				}
				if err := advanceJobs(ctx, tx, advs); err != nil {
					return err
				}
				return insertPlanned(ctx, tx, s.cfg.Partitions, runs)
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range []int64{ms(base) + 5000, 0, ms(base) + 7} {
				var got int64
				if err := st.QueryRowContext(ctx, `SELECT next_fire_at FROM job_jobs WHERE id = ?`, jobs[i].ID).Scan(&got); err != nil || got != want {
					t.Fatalf("job %d next fire %d (%v), want %d", i, got, err, want)
				}
			}
			seen := map[int64]bool{}
			for _, r := range runs {
				var jobID, fireAt int64
				if err := st.QueryRowContext(ctx, `SELECT job_id, fire_at FROM job_runs WHERE id = ?`, r.a.id).Scan(&jobID, &fireAt); err != nil {
					t.Fatalf("run id %d: %v", r.a.id, err)
				}
				if jobID != r.jobID || fireAt != r.a.fireAt || seen[r.a.id] {
					t.Fatalf("run id %d is job %d at %d, planned job %d at %d (or given twice)", r.a.id, jobID, fireAt, r.jobID, r.a.fireAt)
				}
				seen[r.a.id] = true
			}
		})
	}
}
