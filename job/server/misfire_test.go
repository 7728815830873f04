package server

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/job"
)

// A job found late: within its misfire threshold each missed fire runs, in
// turn; beyond it, fire_once runs once for all of them and skip records
// them as one skipped run. Either way every scheduled fire is accounted
// for exactly once (Covers), none silently lost.
func TestMisfirePolicies(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	s, err := New(Config{Store: st, NodeName: "n1", LeaseTTL: time.Second, Partitions: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mk := func(name, policy string, threshold time.Duration) *job.Job {
		j, err := s.Create(ctx, job.Job{Name: name, App: "a", Handler: "h", Misfire: policy, MisfireThreshold: job.Duration(threshold),
			Trigger: job.Trigger{Kind: job.TriggerRate, Every: job.Duration(time.Second)}})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	within := mk("within", "", 0) // defaults: fire_once, 60 s
	once := mk("once", job.MisfireFireOnce, time.Second)
	skip := mk("skip", job.MisfireSkip, time.Second)
	// Each was due 3.5 s ago: the server was down.
	t0 := time.Now().Add(-3500 * time.Millisecond).Truncate(time.Millisecond)
	for _, j := range []*job.Job{within, once, skip} {
		if _, err := st.ExecContext(ctx, `UPDATE job_jobs SET enabled = 1, next_fire_at = ? WHERE id = ?`, ms(t0), j.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fires := func(j *job.Job) []job.Run {
		rs, err := s.Runs(ctx, j.ID, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []job.Run
		for _, r := range rs {
			if r.Attempt == 0 {
				out = append(out, r)
			}
		}
		slices.SortFunc(out, func(a, b job.Run) int { return a.FireAt.Compare(b.FireAt) })
		return out
	}
	// Until the first on-time fire (t0+4s) of each has been recorded.
	wait.For(t, 15*time.Second, "the fires up to t0+4s", func() bool {
		for _, j := range []*job.Job{within, once, skip} {
			rs := fires(j)
			if len(rs) == 0 || rs[len(rs)-1].FireAt.Before(t0.Add(4*time.Second)) {
				return false
			}
		}
		return true
	})
	at := func(k int) time.Time { return t0.Add(time.Duration(k) * time.Second).UTC() }
	rs := fires(within)
	for k := 0; k <= 4; k++ {
		if k >= len(rs) || !rs[k].FireAt.Equal(at(k)) || rs[k].Covers != 1 || rs[k].Cause != "schedule" {
			t.Fatalf("within the threshold, fire %d: want its own run at %v; runs %+v", k, at(k), rs)
		}
	}
	rs = fires(once)
	if len(rs) < 2 || !rs[0].FireAt.Equal(at(0)) || rs[0].Covers != 4 || rs[0].Cause != "misfire" || rs[0].Status == job.StatusSkipped {
		t.Fatalf("fire_once: want one misfire run covering 4 fires at %v; runs %+v", at(0), rs)
	}
	if !rs[1].FireAt.Equal(at(4)) || rs[1].Covers != 1 || rs[1].Cause != "schedule" {
		t.Fatalf("fire_once: then on schedule at %v; runs %+v", at(4), rs)
	}
	rs = fires(skip)
	if len(rs) < 2 || rs[0].Status != job.StatusSkipped || rs[0].Covers != 4 || !rs[0].FireAt.Equal(at(0)) || rs[0].Error == "" {
		t.Fatalf("skip: want one skipped record covering 4 fires; runs %+v", rs)
	}
	if !rs[1].FireAt.Equal(at(4)) || rs[1].Status == job.StatusSkipped {
		t.Fatalf("skip: then on schedule at %v; runs %+v", at(4), rs)
	}
	if got := s.Coalesced(); got != 6 {
		t.Fatalf("coalesced %d, want 6 (3 per job beyond the threshold)", got)
	}
	t.Logf("skip record: %s", rs[0].Error)
}
