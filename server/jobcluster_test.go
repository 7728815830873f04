package server_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestJobsNoDoubleFireUnderKill9 is issue 5's fault test: two tangram
// servers share one PostgreSQL store and split the job partitions; an
// executor process records every run it executes. Servers are killed with
// SIGKILL and restarted in a loop, then one is paused (SIGSTOP) past its
// lease and resumed, while 20 jobs fire every 100 ms. No fire
// may run twice, every claimed run must end (none stuck running), and the
// jobs must keep firing after each kill.
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
		s.cmd = startProcess(t, bin, s.http, s.data, "--store", dsn, "--rpc", s.rpc, "--broker", "off", "--job-lease-ttl", "2s",
			"--node-name", fmt.Sprintf("j%d-%d", i, time.Now().UnixNano()))
	}
	srvs := make([]*srv, 2)
	for i := range srvs {
		srvs[i] = &srv{http: freeAddr(t), rpc: freeAddr(t), data: t.TempDir()}
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
	for round := range 4 {
		i := rand.IntN(2)
		srvs[i].cmd.Process.Kill()
		srvs[i].cmd.Wait()
		before := lines()
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond) // sleep-ok: the killed server stays down a random while
		start(i, srvs[i])
		api = apiclient.New("http://"+srvs[i].http, servertest.AdminToken)
		wait.For(t, 30*time.Second, fmt.Sprintf("round %d: jobs firing again", round), func() bool { return lines() > before+200 })
	}
	// A pause longer than the lease (SIGSTOP: a GC pause, a frozen VM): the
	// other server takes the partitions; when the paused one wakes, its
	// stale claims must fail the fencing check.
	i := rand.IntN(2)
	if err := srvs[i].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	before := lines()
	wait.For(t, 30*time.Second, "jobs firing while a server is paused", func() bool { return lines() > before+300 })
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
	t.Logf("%d runs executed across 4 kill -9 rounds and a pause, none twice", n)
}
