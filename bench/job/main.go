// Command job benchmarks Tangram's job scheduler: trigger lateness (the
// scheduled time to the handler's start, on an executor in another
// process) and double or missed fires, with one tangram server and with two
// sharing a PostgreSQL store, against robfig/cron/v3 in-process — the
// single-node floor: no store, no network, no executor process.
//
// Workload: N rate jobs, each every P, phases spread evenly (so N/P
// triggers a second, one every P/N): 10,000 jobs every 10 s = 1,000
// triggers/s by default. After a warm-up, fires whose scheduled time falls
// in the measured window are counted: each job's expected fires, the ones
// executed, the ones executed twice.
//
//	go run ./bench/job            # 10,000 jobs, 1,000/s, 3 rounds of 30 s measured
//	go run ./bench/job -quick     # 3 rounds of 15 s measured
//	sudo go run ./bench/job -scaleout   # capacity of 1, 2, 3 servers of 0.3 CPU each
//
// Each case runs -rounds times, the cases taking turns going first; the
// table shows the median and spread (min–max) of each figure. -scaleout
// gives every tangram server a fixed CPU budget with a cgroup (PostgreSQL
// and the executor are not budgeted) and finds, for 1, 2 and 3 servers, the
// highest trigger rate held with p99 lateness under 20 ms and nothing
// missed, double or early. It prints a markdown table and, last, one JSON
// line (the shape every bench shares).
package main

import (
	"bufio"
	"cmp"
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/robfig/cron/v3"

	"github.com/tangram-dev/tangram/bench/internal/cpubudget"
	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/job"
)

const token = "tgm_benchjobtoken00000000000000000000000"

type result struct {
	Impl     string  `json:"impl"`
	Servers  int     `json:"servers"`
	Expected int     `json:"expected_fires"`
	Executed int     `json:"executed"`
	Double   int     `json:"double_fires"`
	Missed   int     `json:"missed_fires"`
	Early    int     `json:"early_fires"` // started before their scheduled time: must be 0
	Min      float64 `json:"lateness_min_ms"`
	P50      float64 `json:"lateness_p50_ms"`
	P99      float64 `json:"lateness_p99_ms"`
	Max      float64 `json:"lateness_max_ms"`
	Rate     float64 `json:"triggers_per_sec"`
	// -scaleout: CPUs the budgeted servers and PostgreSQL used over the
	// measured window.
	ServerCPU float64 `json:"server_cpus,omitempty"`
	DBCPU     float64 `json:"postgres_cpus,omitempty"`
}

// record is one executed fire.
type record struct {
	job    int64
	fireAt int64 // unix ms
	start  int64 // unix ns
}

func main() {
	role := flag.String("role", "", "internal: executor")
	servers := flag.String("servers", "", "internal: executor's servers")
	out := flag.String("out", "", "internal: executor's record file")
	n := flag.Int("jobs", 10000, "jobs")
	period := flag.Duration("every", 10*time.Second, "each job's period")
	measure := flag.Duration("d", 30*time.Second, "measured window")
	quick := flag.Bool("quick", false, "15 s measured per round")
	rounds := flag.Int("rounds", 3, "rounds per case (the median is reported)")
	bin := flag.String("bin", "", "tangram binary (default: build ./cmd/tangram)")
	cases := flag.String("cases", "robfig,tangram-1,tangram-2", "cases to run")
	scaleout := flag.Bool("scaleout", false, "measure the capacity of 1, 2, 3 CPU-budgeted servers instead")
	cpus := flag.Float64("cpu", 0.3, "-scaleout: CPUs each server may use")
	cfsPeriod := flag.Duration("cfs-period", 10*time.Millisecond, "-scaleout: the CFS period of each server's budget (at 100 ms a server that spends its quota early stalls up to 70 ms, which alone breaks a 20 ms p99)")
	serverCounts := flag.String("counts", "1,2,3", "-scaleout: server counts")
	goal := flag.Duration("goal", 20*time.Millisecond, "-scaleout: the p99 lateness a rate must hold")
	flag.Parse()
	if *role == "executor" {
		if err := runExecutor(*servers, *out); err != nil {
			fmt.Fprintln(os.Stderr, "executor:", err)
			os.Exit(1)
		}
		return
	}
	if *quick {
		*measure = 15 * time.Second
	}
	var err error
	if *scaleout {
		err = runScaleout(*period, *measure, *bin, *cpus, *cfsPeriod, *serverCounts, *goal)
	} else {
		err = run(*n, *period, *measure, *bin, strings.Split(*cases, ","), *rounds)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/job:", err)
		os.Exit(1)
	}
}

func run(n int, period, measure time.Duration, bin string, cases []string, rounds int) error {
	dir, err := os.MkdirTemp("", "bench-job-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if slices.ContainsFunc(cases, func(c string) bool { return strings.HasPrefix(c, "tangram-") }) {
		if bin, err = tangrambin.Build(dir, bin); err != nil {
			return err
		}
	}
	all := map[string][]result{}
	for r := range rounds {
		for _, c := range spread.Order(cases, r) {
			fmt.Fprintf(os.Stderr, "round %d/%d %s: %d jobs every %v, %v measured …\n", r+1, rounds, c, n, period, measure)
			var res result
			var err error
			switch {
			case c == "robfig":
				res, err = measureRobfig(n, period, measure)
			case strings.HasPrefix(c, "tangram-"):
				k, _ := strconv.Atoi(strings.TrimPrefix(c, "tangram-"))
				res, err = measureTangram(bin, dir, k, n, period, measure, nil)
			default:
				err = fmt.Errorf("unknown case %q", c)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", c, err)
			}
			fmt.Fprintf(os.Stderr, "  %s: p50 %.2f ms p99 %.2f ms max %.2f ms, executed %d/%d, double %d, missed %d, early %d\n",
				c, res.P50, res.P99, res.Max, res.Executed, res.Expected, res.Double, res.Missed, res.Early)
			all[c] = append(all[c], res)
		}
	}
	fmt.Printf("\nbench/job: %d jobs every %v (%.0f triggers/s), %d round(s) of %v measured, cases alternating; executor in another process; %d CPUs shared by everything; robfig/cron %s\n\n",
		n, period, float64(n)/period.Seconds(), rounds, measure, runtime.NumCPU(), spread.Version("github.com/robfig/cron/v3"))
	fmt.Println("| case | servers | lateness min | p50 | p99 | max | early | executed / expected | double | missed |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	figs := func(rs []result, f func(result) float64) spread.Of {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return spread.Summarise(xs)
	}
	for _, c := range cases {
		rs := all[c]
		sum := func(f func(result) int) int {
			t := 0
			for _, r := range rs {
				t += f(r)
			}
			return t
		}
		fmt.Printf("| %s | %d | %s ms | %s ms | %s ms | %s ms | %d | %d / %d | %d | %d |\n", rs[0].Impl, rs[0].Servers,
			figs(rs, func(r result) float64 { return r.Min }).Format("%.2f"), figs(rs, func(r result) float64 { return r.P50 }).Format("%.2f"),
			figs(rs, func(r result) float64 { return r.P99 }).Format("%.2f"), figs(rs, func(r result) float64 { return r.Max }).Format("%.2f"),
			sum(func(r result) int { return r.Early }), sum(func(r result) int { return r.Executed }), sum(func(r result) int { return r.Expected }),
			sum(func(r result) int { return r.Double }), sum(func(r result) int { return r.Missed }))
	}
	fmt.Println("\n(median of the rounds, min–max in brackets; counts are totals over all rounds)")
	var rows []spread.Row
	peer := all["robfig"]
	for _, c := range cases {
		if c == "robfig" {
			continue
		}
		rs := all[c]
		// peer p99 / ours, round by round: above 1, ours is less late.
		ratios := spread.Ratios(pick(peer, func(r result) float64 { return r.P99 }), pick(rs, func(r result) float64 { return r.P99 }))
		errs := 0
		for _, r := range rs {
			errs += r.Missed + r.Double + r.Early
		}
		row := spread.NewRow(fmt.Sprintf("lateness-%dk-per-sec-%d-server", int(float64(n)/period.Seconds())/1000, rs[0].Servers),
			median(rs), median(peer), ratios, errs)
		row.Note = "ratio: robfig/cron p99 over ours (in-process single-node floor, not XXL-JOB)"
		rows = append(rows, row)
	}
	spread.Print("job", "robfig/cron/v3 (in-process)", rows, nil)
	return nil
}

// pick is one figure of each round.
func pick(rs []result, f func(result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// median is the round with the median p99.
func median(rs []result) *result {
	if len(rs) == 0 {
		return nil
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return cmp.Compare(a.P99, b.P99) })
	return &s[len(s)/2]
}

// phase is job i's offset in the period.
func phase(i, n int, period time.Duration) time.Duration {
	return period * time.Duration(i) / time.Duration(n)
}

// evaluate turns records into a result for fires scheduled in [from, to).
func evaluate(impl string, servers, n int, period time.Duration, base, from, to time.Time, recs []record) result {
	r := result{Impl: impl, Servers: servers}
	// Expected: each job's scheduled times base+phase+k*period in the window.
	for i := range n {
		first := base.Add(phase(i, n, period))
		for t := first; t.Before(to); t = t.Add(period) {
			if !t.Before(from) {
				r.Expected++
			}
		}
	}
	seen := map[[2]int64]bool{}
	var lat []float64
	for _, rc := range recs {
		at := time.UnixMilli(rc.fireAt)
		if at.Before(from) || !at.Before(to) {
			continue
		}
		k := [2]int64{rc.job, rc.fireAt}
		if seen[k] {
			r.Double++
			continue
		}
		seen[k] = true
		r.Executed++
		l := float64(rc.start-at.UnixNano()) / 1e6 // from the exact scheduled instant
		if l < 0 {
			r.Early++
		}
		lat = append(lat, l)
	}
	r.Missed = max(r.Expected-r.Executed, 0)
	if os.Getenv("BENCH_JOB_DEBUG") != "" {
		// The worst lateness per second of the window: periodic spikes
		// point at a periodic cause.
		worst := map[int64]float64{}
		for _, rc := range recs {
			at := time.UnixMilli(rc.fireAt)
			if at.Before(from) || !at.Before(to) {
				continue
			}
			sec := int64(at.Sub(from) / time.Second)
			worst[sec] = max(worst[sec], float64(rc.start-at.UnixNano())/1e6)
		}
		var line []string
		for sec := int64(0); sec < int64(to.Sub(from)/time.Second); sec++ {
			line = append(line, fmt.Sprintf("%.0f", worst[sec]))
		}
		fmt.Fprintf(os.Stderr, "%s/%d worst lateness per second (ms): %s\n", impl, servers, strings.Join(line, " "))
	}
	r.Rate = float64(r.Executed) / to.Sub(from).Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		r.Min, r.P50, r.P99, r.Max = lat[0], lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1]
	}
	return r
}

// sched is a robfig/cron Schedule firing at base+phase+k*period, to the
// millisecond (robfig's own @every rounds to seconds).
type sched struct {
	first  time.Time
	period time.Duration
}

func (s sched) Next(t time.Time) time.Time {
	if t.Before(s.first) {
		return s.first
	}
	k := t.Sub(s.first)/s.period + 1
	return s.first.Add(k * s.period)
}

func measureRobfig(n int, period, measure time.Duration) (result, error) {
	c := cron.New()
	base := time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	var mu sync.Mutex
	recs := make([]record, 0, n*int(measure/period+3))
	for i := range n {
		s := sched{first: base.Add(phase(i, n, period)), period: period}
		var next atomic.Int64
		next.Store(s.first.UnixMilli())
		c.Schedule(s, cron.FuncJob(func() {
			start := time.Now().UnixNano()
			// The scheduled time this run stands for: the latest one not after now.
			at := next.Load()
			for time.UnixMilli(at + period.Milliseconds()).Before(time.Unix(0, start)) {
				at += period.Milliseconds()
			}
			next.Store(at + period.Milliseconds())
			mu.Lock()
			recs = append(recs, record{job: int64(i), fireAt: at, start: start})
			mu.Unlock()
		}))
	}
	c.Start()
	warm := period
	from := base.Add(warm)
	to := from.Add(measure)
	time.Sleep(time.Until(to) + 500*time.Millisecond)
	<-c.Stop().Done()
	mu.Lock()
	defer mu.Unlock()
	// robfig's job IDs are the job index; map to the evaluation's by index.
	return evaluate("robfig/cron", 1, n, period, base, from, to, recs), nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// freshPostgres creates an empty database and returns its URL and a drop.
func freshPostgres() (string, func(), error) {
	base := os.Getenv("TANGRAM_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("bench_job_%d", rand.Uint32())
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("PostgreSQL at %s (set TANGRAM_TEST_POSTGRES; scripts/services.sh starts one): %w", base, err)
	}
	u, _ := url.Parse(base)
	u.Path = "/" + name
	return u.String(), func() {
		_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	}, nil
}

// budget is the CPU budget of each server (-scaleout).
type budget struct {
	cpus   float64
	period time.Duration
}

func measureTangram(bin, dir string, servers, n int, period, measure time.Duration, bud *budget) (result, error) {
	dsn, drop, err := freshPostgres()
	if err != nil {
		return result{}, err
	}
	defer drop()
	var https, rpcs []string
	var pids []int
	for i := range servers {
		h, err1 := freeAddr()
		r, err2 := freeAddr()
		if err1 != nil || err2 != nil {
			return result{}, fmt.Errorf("ports: %v %v", err1, err2)
		}
		cmd := exec.Command(bin, "server", "--http", h, "--rpc", r, "--broker", "off", "--kv", "off", "--otlp-http", "off", "--otlp-grpc", "off", "--data", filepath.Join(dir, fmt.Sprintf("s%d-%d", servers, i)),
			"--store", dsn, "--node-name", fmt.Sprintf("bench-%d", i), "--log-level", "error")
		if a := os.Getenv("BENCH_JOB_PPROF"); a != "" && i == 0 {
			cmd.Args = append(cmd.Args, "--debug-addr", a) // profile the first server while it runs
		}
		cmd.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token, "TANGRAM_SECRET_KEY="+strings.Repeat("ab", 32))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return result{}, err
		}
		defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
		pids = append(pids, cmd.Process.Pid)
		https, rpcs = append(https, h), append(rpcs, r)
		// The first server migrates the store; start the second after it.
		if err := waitReady("http://" + h); err != nil {
			return result{}, err
		}
	}
	recFile := filepath.Join(dir, fmt.Sprintf("records-%d.txt", servers))
	self, _ := os.Executable()
	ex := exec.Command(self, "-role", "executor", "-servers", strings.Join(rpcs, ","), "-out", recFile)
	ex.Env = append(os.Environ(), "TANGRAM_TOKEN="+token)
	ex.Stderr = os.Stderr
	if err := ex.Start(); err != nil {
		return result{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = ex.Process.Kill()
			_ = ex.Wait()
		}
	}()
	api := apiclient.New("http://"+https[0], token)
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var l struct{ Items []job.ExecutorInfo }
		if err := api.Do(ctx, "GET", "/api/v1/job-executors", nil, &l); err == nil && len(l.Items) == 1 {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("the executor never registered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Create the jobs, phases spread over the period from base.
	base := time.Now().Add(time.Duration(n)*time.Millisecond + 3*time.Second).Truncate(time.Millisecond)
	var next atomic.Int64
	var wg sync.WaitGroup
	var cerr atomic.Value
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := apiclient.New("http://"+https[0], token)
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				j := map[string]any{"name": fmt.Sprintf("bench-%d", i), "app": "bench", "handler": "rec", "enabled": true,
					"start_at": base.Add(phase(i, n, period)).Format(time.RFC3339Nano), "misfire": "fire_once",
					"trigger": map[string]any{"kind": "rate", "every": period.String()}}
				if err := c.Do(ctx, "POST", "/api/v1/jobs", j, nil); err != nil {
					cerr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e, _ := cerr.Load().(error); e != nil {
		return result{}, fmt.Errorf("creating jobs: %w", e)
	}
	if time.Now().After(base) {
		return result{}, fmt.Errorf("creating %d jobs took past their start; use fewer jobs", n)
	}
	// The jobs are in; from here on each server has its budget (creating
	// them is not what is measured).
	var groups []*cpubudget.Group
	defer func() {
		for _, g := range groups {
			_ = g.Close()
		}
	}()
	if bud != nil {
		for i, pid := range pids {
			g, err := cpubudget.New(fmt.Sprintf("tangram-bench-job-%d-%d", os.Getpid(), i), bud.cpus, bud.period)
			if err != nil {
				return result{}, err
			}
			groups = append(groups, g)
			if err := g.Add(pid); err != nil {
				return result{}, err
			}
		}
	}
	from := base.Add(period) // one period of warm-up
	to := from.Add(measure)
	time.Sleep(time.Until(from))
	cpu0, db0 := procCPU(pids...), postgresCPU()
	time.Sleep(time.Until(to))
	cpu1, db1 := procCPU(pids...), postgresCPU()
	time.Sleep(2 * time.Second)
	_ = ex.Process.Signal(syscall.SIGTERM)
	_ = ex.Wait()
	stopped = true
	recs, err := readRecords(recFile)
	if err != nil {
		return result{}, err
	}
	// Map job IDs to indexes: jobs were created in order of name; read them.
	var l struct{ Items []*job.Job }
	if err := api.Do(ctx, "GET", "/api/v1/jobs", nil, &l); err != nil {
		return result{}, err
	}
	idx := map[int64]int64{}
	for _, j := range l.Items {
		i, _ := strconv.Atoi(strings.TrimPrefix(j.Name, "bench-"))
		idx[j.ID] = int64(i)
	}
	for k := range recs {
		recs[k].job = idx[recs[k].job]
	}
	r := evaluate("tangram", servers, n, period, base, from, to, recs)
	r.ServerCPU = (cpu1 - cpu0).Seconds() / measure.Seconds()
	r.DBCPU = (db1 - db0).Seconds() / measure.Seconds()
	return r, nil
}

// postgresCPU is the CPU time of every postgres process on the machine
// (the store's share of the machine during the window).
func postgresCPU() time.Duration {
	ents, _ := os.ReadDir("/proc")
	var t time.Duration
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if name, cpu := statCPU(pid); strings.HasPrefix(name, "postgres") {
				t += cpu
			}
		}
	}
	return t
}

// procCPU is the CPU time the processes have used.
func procCPU(pids ...int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		_, cpu := statCPU(p)
		t += cpu
	}
	return t
}

// statCPU reads a process's name and user+system CPU time from
// /proc/<pid>/stat.
func statCPU(pid int) (string, time.Duration) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0
	}
	st := string(b)
	open, close := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
	if open < 0 || close < open {
		return "", 0
	}
	f := strings.Fields(st[close+1:])
	if len(f) <= 12 {
		return st[open+1 : close], 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)                           // utime: field 14 of stat
	k, _ := strconv.ParseInt(f[12], 10, 64)                           // stime: field 15
	return st[open+1 : close], time.Duration(u+k) * time.Second / 100 // USER_HZ
}

func waitReady(base string) error {
	c := apiclient.New(base, "")
	for range 400 {
		if err := c.Do(context.Background(), "GET", "/readyz", nil, nil); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server at %s never became ready", base)
}

func readRecords(path string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r record
		if _, err := fmt.Sscan(sc.Text(), &r.job, &r.fireAt, &r.start); err == nil {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}

// runExecutor is the benchmark's executor process: handler "rec" notes the
// job, its scheduled time and the moment it started; the notes go to out
// when the process is told to stop.
func runExecutor(servers, out string) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: strings.Split(servers, ","), Token: os.Getenv("TANGRAM_TOKEN"), App: "bench", Logger: log,
		Capacity: 4096, HeartbeatInterval: time.Second})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var recs []record
	e.Handle("rec", func(ctx context.Context, jc *job.Context) error {
		start := time.Now().UnixNano()
		mu.Lock()
		recs = append(recs, record{job: jc.JobID, fireAt: jc.FireAt.UnixMilli(), start: start})
		mu.Unlock()
		return nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := e.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	mu.Lock()
	f, err := os.Create(out)
	if err == nil {
		w := bufio.NewWriter(f)
		for _, r := range recs {
			fmt.Fprintf(w, "%d %d %d\n", r.job, r.fireAt, r.start)
		}
		err = w.Flush()
		f.Close()
	}
	mu.Unlock()
	return err // the process ends here; the servers drop it by heartbeat
}
