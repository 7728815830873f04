package server_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/faults"
	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestJobsNoDoubleFireUnderKill9: two tangram servers with default flags
// (each its own data dir, so its own stable node name) share one
// PostgreSQL store and split the job partitions; an executor process
// records every run it executes. While 20 jobs fire every 100 ms, servers
// are killed with SIGKILL: restarted at once (the same node takes its
// partitions back), or left down past the lease (the other server takes
// them over), and one is paused (SIGSTOP) past its lease and the executor's
// dispatch grace, and resumed. No
// fire may run twice, none may be missed (every scheduled time has its
// run), every claimed run must end, and no fire may wait 5 s or more.
func TestJobsNoDoubleFireUnderKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries, kills processes")
	}
	bin := buildBinary(t)
	exe := buildPkg(t, "github.com/tangram-dev/tangram/examples/job/executor")
	dsn := storetest.DSN(t, store.Postgres)
	type srv struct {
		cmd       *exec.Cmd
		http, rpc string
		data      string
	}
	start := func(i int, s *srv) {
		s.cmd = startProcess(t, bin, s.http, s.data, "--store", dsn, "--rpc", s.rpc, "--broker", "off")
	}
	srvs := make([]*srv, 2)
	for i := range srvs {
		srvs[i] = &srv{http: port.Free(t), rpc: port.Free(t), data: t.TempDir()}
		start(i, srvs[i])
	}
	t.Cleanup(func() {
		for _, s := range srvs {
			s.cmd.Process.Signal(syscall.SIGCONT)
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	api := apiclient.New("http://"+srvs[0].http, servertest.AdminToken)
	record := filepath.Join(t.TempDir(), "runs.txt")
	ex := exec.Command(exe, "-servers", srvs[0].rpc+","+srvs[1].rpc, "-record", record)
	ex.Env = append(os.Environ(), "TANGRAM_TOKEN="+servertest.AdminToken)
	if err := ex.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Process.Signal(syscall.SIGTERM); ex.Wait() })
	ctx := context.Background()
	wait.For(t, 20*time.Second, "the executor registered", func() bool {
		var l struct{ Items []job.ExecutorInfo }
		return api.Do(ctx, "GET", "/api/v1/job-executors", nil, &l) == nil && len(l.Items) == 1
	})
	var ids []int64
	for i := range 20 {
		var j job.Job
		err := api.Do(ctx, "POST", "/api/v1/jobs", map[string]any{"name": fmt.Sprintf("rec-%d", i), "app": "demo", "handler": "record",
			"enabled": true, "retries": 3, "retry_backoff": "100ms", "misfire": "fire_once",
			"trigger": map[string]any{"kind": "rate", "every": "100ms"}}, &j)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	lines := func() int {
		b, _ := os.ReadFile(record)
		return strings.Count(string(b), "\n")
	}
	wait.For(t, 20*time.Second, "runs recorded", func() bool { return lines() > 100 })
	rounds := faults.Rounds(4, 16)
	for round := range rounds {
		i := rand.IntN(2)
		srvs[i].cmd.Process.Kill()
		srvs[i].cmd.Wait()
		before := lines()
		down := time.Duration(300+rand.IntN(700)) * time.Millisecond
		if round%2 == 1 {
			down = 5 * time.Second // past the 3 s lease: the other server takes over
		}
		time.Sleep(down) // sleep-ok: the killed server stays down a while
		start(i, srvs[i])
		api = apiclient.New("http://"+srvs[i].http, servertest.AdminToken)
		// About 2 s of fires (200 a second) before the next kill.
		wait.For(t, 30*time.Second, fmt.Sprintf("round %d: jobs firing again", round), func() bool { return lines() > before+600 })
	}
	// A pause longer than the lease (SIGSTOP: a GC pause, a frozen VM): the
	// other server takes the partitions; when the paused one wakes, its
	// stale claims must fail the fencing check.
	// The paused server is one that holds partitions, so that it has
	// claimed runs in its wheel when it stops.
	owned := func(s *srv) int {
		var st job.Status
		if apiclient.New("http://"+s.http, servertest.AdminToken).Do(ctx, "GET", "/api/v1/job-status", nil, &st) != nil {
			return 0
		}
		return len(st.Owned)
	}
	i := rand.IntN(2)
	if owned(srvs[i]) == 0 {
		i = 1 - i
	}
	if err := srvs[i].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	before := lines()
	pausedAt := time.Now()
	wait.For(t, 30*time.Second, "jobs firing while a server is paused", func() bool { return lines() > before+300 })
	// Long enough for the executor's heartbeats to have the runs the
	// paused server claimed but had not sent failed as lost (and retried)
	// while they still sit in its wheel: woken, it sends them, and the
	// executor must refuse them as past their dispatch deadline.
	if d := 2*job.DispatchWindow + 2*time.Second - time.Since(pausedAt); d > 0 {
		time.Sleep(d) // sleep-ok: the pause has to outlast the dispatch grace
	}
	if err := srvs[i].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	before = lines()
	wait.For(t, 30*time.Second, "jobs firing after the pause", func() bool { return lines() > before+300 })
	// Stop firing, let everything settle.
	for _, id := range ids {
		if err := api.Do(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/disable", id), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	all := map[int64][]job.Run{}
	wait.For(t, 30*time.Second, "every run finished", func() bool {
		for _, id := range ids {
			var l struct{ Items []job.Run }
			if err := api.Do(ctx, "GET", fmt.Sprintf("/api/v1/jobs/%d/runs?limit=1000", id), nil, &l); err != nil {
				return false
			}
			for _, r := range l.Items {
				if r.Status == job.StatusPending || r.Status == job.StatusRunning {
					return false
				}
			}
			all[id] = l.Items
		}
		return true
	})
	f, err := os.Open(record)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]string{}
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 {
			t.Fatalf("bad record line %q", sc.Text())
		}
		key := fs[0] + "@" + fs[1] + "#" + fs[3]
		if prev, dup := seen[key]; dup {
			t.Fatalf("double fire: job %s at %s ran as runs %s and %s", fs[0], fs[1], prev, fs[2])
		}
		seen[key] = fs[2]
		n++
	}
	// Every scheduled time of each job, from its first fire to its last,
	// is covered by exactly one fire (attempt 0; Covers counts the fires a
	// misfire collapsed); lateness is from the scheduled instant to the
	// claim.
	var missed, double int
	var lates []time.Duration
	for _, id := range ids {
		fires := map[int64]int{} // fire time (ms) → runs covering it
		var first, last int64 = 1 << 62, 0
		for _, r := range all[id] {
			if r.Attempt != 0 {
				continue
			}
			at := r.FireAt.UnixMilli()
			for k := range max(r.Covers, 1) {
				fires[at+int64(k)*100]++
			}
			first, last = min(first, at), max(last, at)
			lates = append(lates, r.CreatedAt.Sub(r.FireAt))
		}
		for at := first; at <= last; at += 100 {
			switch c := fires[at]; {
			case c == 0:
				missed++
				if missed <= 5 {
					t.Errorf("job %d: the fire at %s has no run", id, time.UnixMilli(at).UTC().Format(time.RFC3339Nano))
				}
			case c > 1:
				double++
				t.Errorf("job %d: the fire at %s was claimed %d times", id, time.UnixMilli(at).UTC().Format(time.RFC3339Nano), c)
			}
		}
	}
	slices.Sort(lates)
	worst := lates[len(lates)-1]
	faults.Report(t, "scheduler two-server kill loop", "rounds", rounds, "runs_executed", n, "fires", len(lates),
		"double", double, "missed", missed, "lateness_p99", lates[len(lates)*99/100].Round(time.Millisecond), "lateness_max", worst.Round(time.Millisecond))
	if missed > 0 || double > 0 {
		t.Fatalf("%d fires missed, %d claimed twice", missed, double)
	}
	// The goal is under 5 s, held on a quiet machine (make robustness);
	// inside make test every other package's tests share the two cores,
	// and the short version allows that load 3 s more.
	limit := 8 * time.Second
	if faults.Long() {
		limit = 5 * time.Second
	}
	if worst >= limit {
		t.Fatalf("a fire waited %v for a takeover: want under %v", worst, limit)
	}
}
