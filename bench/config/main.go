// Command config benchmarks config push: N long-poll watchers (keep-alive
// HTTP clients, one connection each, in this process) hold watches on one
// `tangram server` (a separate process, so its memory is its own); then a
// release is published and the time from the publish to each watcher's
// notification is measured, over several rounds.
//
// There is no runnable peer here (Apollo and Nacos are Java services not
// installed on this machine); each row is compared with the goal
// instead: all watchers notified, p99 under 200 ms, server under 300 MiB.
//
//	go run ./bench/config            # 10,000 watchers, 6 rounds per system in 2 passes
//	go run ./bench/config -quick     # 10,000 watchers, 4 rounds per system in 2 passes
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tangram-dev/tangram/bench/internal/etcdpeer"
	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/internal/procstat"
)

const token = "tgm_bench-token-0123456789abcdefghij"

// settle is the idle time before each publish (-settle); fetchStorm makes
// watches ask for no content, so every watcher fetches the new
// configuration after each round (-fetch).
var (
	settle     time.Duration
	fetchStorm bool
	withEtcd   bool
)

type result struct {
	Case      string  `json:"case"`
	Watchers  int     `json:"watchers"`
	Notified  int     `json:"notified"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	Maxms     float64 `json:"max_ms"`
	RSSMiB    float64 `json:"server_rss_mib"`
	GoalMet   bool    `json:"goal_met"`
	PublishMs float64 `json:"publish_ms"`
	// CPU spent during the round by the server and by this process (the
	// watchers): both share the machine's cores.
	ServerCPUms float64 `json:"server_cpu_ms"`
	ClientCPUms float64 `json:"client_cpu_ms"`
	// The fetch each watcher makes as soon as it is notified (the SDK's
	// path to the new value); times from the publish, like P50ms/P99ms.
	Fetched    int     `json:"fetched"`
	FetchP50ms float64 `json:"fetch_p50_ms"`
	FetchP99ms float64 `json:"fetch_p99_ms"`
}

func main() {
	watchers := flag.Int("watchers", 10000, "number of long-poll watchers")
	rounds := flag.Int("rounds", 6, "publish rounds per system")
	reps := flag.Int("passes", 2, "passes: each system's rounds are split over this many fresh starts, the systems taking turns going first")
	quick := flag.Bool("quick", false, "fewer rounds (keeps the watcher count); finishes in under a minute")
	flag.DurationVar(&settle, "settle", time.Second, "idle time between all watches being held and the publish")
	flag.BoolVar(&fetchStorm, "fetch", false, "the older protocol: watches ask for no content and each notified watcher fetches the new configuration (timed from the publish)")
	bin := flag.String("bin", "", "tangram binary (default: build ./cmd/tangram)")
	serveEtcdFlag := flag.Bool("serve-etcd", false, "internal: run the etcd peer (args: dir client-url peer-url)")
	flag.BoolVar(&withEtcd, "etcd", true, "also measure etcd (watch on one key) as a peer")
	flag.Parse()
	if *serveEtcdFlag {
		if err := etcdpeer.Serve(flag.Arg(0), flag.Arg(1), flag.Arg(2), flag.Args()[min(3, flag.NArg()):]...); err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			os.Exit(1)
		}
		return
	}
	if *quick {
		*rounds = 4
	}
	// The 10,000 watchers share the machine with the server: collect this
	// process's garbage less often so that the load generator's GC does not
	// add noise to the server's figures (the same for both modes).
	debug.SetGCPercent(400)
	if err := run(*watchers, *rounds, *reps, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench/config:", err)
		os.Exit(1)
	}
}

func raiseFDLimit(n uint64) {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < n {
		l.Cur = min(n, l.Max)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

const etcdName = "etcd (watch)"

func run(n, rounds, reps int, bin string) error {
	raiseFDLimit(uint64(n) + 1024)
	dir, err := os.MkdirTemp("", "tangram-bench-config")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "tangram")
		fmt.Fprintln(os.Stderr, "building tangram…")
		b := exec.Command("go", "build", "-o", bin, "./cmd/tangram")
		b.Stderr = os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("build: %w", err)
		}
	}
	type mode struct {
		name  string
		extra []string
	}
	modes := []mode{{"tangram (parked)", nil}, {"tangram, goroutine per watch", []string{"--config-blocking-watches"}}}
	if withEtcd {
		modes = append(modes, mode{etcdName, nil})
	}
	all := make([][]result, len(modes))
	hwms := make([]float64, len(modes))
	fails := make([]int64, len(modes))
	idx := make([]int, len(modes))
	for i := range idx {
		idx[i] = i
	}
	// The modes take turns going first: reps passes, each a fresh server
	// (or etcd) running its share of the rounds while nothing else runs.
	perRep := (rounds + reps - 1) / reps
	for rep := range reps {
		for _, i := range spread.Order(idx, rep) {
			m := modes[i]
			fmt.Fprintf(os.Stderr, "== pass %d/%d: %s\n", rep+1, reps, m.name)
			var rs []result
			var hwm float64
			var fl int64
			var err error
			if m.name == etcdName {
				rs, hwm, fl, err = measureEtcd(n, perRep, dir)
			} else {
				rs, hwm, fl, err = measure(n, perRep, bin, filepath.Join(dir, fmt.Sprint("data", i, "-", rep)), m.extra)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			all[i] = append(all[i], rs...)
			hwms[i], fails[i] = max(hwms[i], hwm), fails[i]+fl
		}
	}
	fig := func(i int, f func(result) float64) []float64 {
		var xs []float64
		for _, r := range all[i] {
			xs = append(xs, f(r))
		}
		return xs
	}
	of := func(i int, f func(result) float64) spread.Of { return spread.Summarise(fig(i, f)) }
	fmt.Printf("\nbench/config: %d watchers (keep-alive HTTP clients in this process, GOGC 400 here), %d rounds per system in %d passes taking turns going first; servers: tangram GOGC 400 (its default), etcd %s GOGC 100 (its default); %d CPUs shared\n\n",
		n, perRep*reps, reps, spread.Version("go.etcd.io/etcd/server/v3"), runtime.NumCPU())
	fmt.Println("| server | notified (min of rounds) | notified p50 ms | notified p99 ms | max ms | has the value p99 ms | publish ms | server RSS MiB | server CPU ms/round | watchers' CPU ms/round |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for i, m := range modes {
		applied := "same (the event carries it)"
		if m.name != etcdName {
			applied = of(i, func(r result) float64 {
				if r.Fetched < r.Watchers {
					return math.NaN()
				}
				return r.FetchP99ms
			}).Format("%.0f")
		}
		fmt.Printf("| %s | %.0f / %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name, slices.Min(fig(i, func(r result) float64 { return float64(r.Notified) })), n,
			of(i, func(r result) float64 { return r.P50ms }).Format("%.0f"), of(i, func(r result) float64 { return r.P99ms }).Format("%.0f"),
			of(i, func(r result) float64 { return r.Maxms }).Format("%.0f"), applied,
			of(i, func(r result) float64 { return r.PublishMs }).Format("%.0f"), of(i, func(r result) float64 { return r.RSSMiB }).Format("%.0f"),
			of(i, func(r result) float64 { return r.ServerCPUms }).Format("%.0f"), of(i, func(r result) float64 { return r.ClientCPUms }).Format("%.0f"))
	}
	fmt.Printf("\n(median of the rounds, min–max in brackets) server peak RSS (VmHWM):")
	for i, m := range modes {
		fmt.Printf(" %s %.0f MiB (%d failed requests);", m.name, hwms[i], fails[i])
	}
	how := "ours: the watch answer carries the new configuration (the SDK asks for it), checked to hold the published value"
	if fetchStorm {
		how = "ours (-fetch): each notified client fetches the new configuration, as Apollo's and Nacos' do"
	}
	fmt.Printf("\ngoal: every watcher has the new value, p99 < 200 ms, server < 300 MiB. \"Has the value\": %s; an etcd watch event carries the value. Apollo and Nacos (Java) do not run here.\n", how)
	ours := 0
	p99 := func(r result) float64 { return r.P99ms }
	var rows []spread.Row
	for i, m := range modes[1:] {
		pi := i + 1
		name := "push-" + strconv.Itoa(n) + "w"
		if m.name != etcdName {
			name += "-vs-goroutine-per-watch"
		}
		errs := int(fails[ours] + fails[pi])
		rows = append(rows, spread.NewRow(name, of(ours, p99), of(pi, p99), spread.Ratios(fig(pi, p99), fig(ours, p99)), errs))
		if m.name == etcdName {
			applied := func(r result) float64 {
				if r.Fetched < r.Watchers {
					return math.NaN()
				}
				return r.FetchP99ms
			}
			row := spread.NewRow("has-value-"+strconv.Itoa(n)+"w", of(ours, applied), of(pi, p99), spread.Ratios(fig(pi, p99), fig(ours, applied)), errs)
			row.Note = "ours: the watch answer with the configuration; etcd: the watch event"
			if fetchStorm {
				row.Note = "ours: notification + fetch; etcd: the watch event"
			}
			rows = append(rows, row)
		}
	}
	peerName := "tangram with a goroutine per held watch (plain net/http long poll)"
	if withEtcd {
		peerName = "etcd " + spread.Version("go.etcd.io/etcd/server/v3") + " embedded, one client per watcher (rows -vs-goroutine-per-watch: our blocking mode)"
	}
	spread.Print("config", peerName, rows, nil)
	return nil
}

// measure starts a server with extra flags, opens n watchers and runs the
// publish rounds.
func measure(n, rounds int, bin, data string, extra []string) ([]result, float64, int64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, 0, err
	}
	addr := ln.Addr().String()
	ln.Close()
	// --max-conns above the watcher count (docs/security.md: the default,
	// 10,000 per listener, leaves no room for the control connections
	// beside 10,000 watchers).
	args := append([]string{"server", "--http", addr, "--rpc", "127.0.0.1:0", "--broker", "off", "--data", data, "--log-level", "warn",
		"--max-conns", strconv.Itoa(n + 1000)}, extra...)
	if d := os.Getenv("BENCH_DEBUG_ADDR"); d != "" {
		args = append(args, "--debug-addr", d)
	}
	srv := exec.Command(bin, args...)
	srv.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return nil, 0, 0, err
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	}()
	base := "http://" + addr
	tr := &http.Transport{MaxIdleConns: n + 100, MaxIdleConnsPerHost: n + 100, IdleConnTimeout: 5 * time.Minute, DisableCompression: true}
	hc := &http.Client{Transport: tr}
	if err := waitReady(hc, base); err != nil {
		return nil, 0, 0, err
	}
	ctx := context.Background()
	must := func(method, path string, body any) error { return call(ctx, hc, method, base+path, body, nil) }
	ns := "/api/v1/config/envs/dev/apps/bench/clusters/default/namespaces/application"
	if err := must("POST", "/api/v1/config/apps", map[string]string{"name": "bench"}); err != nil {
		return nil, 0, 0, err
	}
	edit := func(v int) error {
		return must("PUT", ns+"/items/value", map[string]string{"value": strconv.Itoa(v)})
	}
	publish := func() error { return must("POST", ns+"/publish", map[string]string{"comment": "bench"}) }
	if err := errors.Join(edit(0), publish()); err != nil {
		return nil, 0, 0, err
	}
	var first struct {
		Changes []struct{ ID int64 } `json:"changes"`
	}
	if err := call(ctx, hc, "POST", base+"/api/v1/config/watch", watchBody(-1, "first"), &first); err != nil || len(first.Changes) != 1 {
		return nil, 0, 0, fmt.Errorf("initial watch: %v %+v", err, first)
	}
	startID := first.Changes[0].ID

	// Watchers: each holds a watch, records when its answer arrives, and
	// watches again with the new id.
	var (
		mu       sync.Mutex
		arrivals = make([][]time.Time, rounds)
		fetched  = make([][]time.Time, rounds)
		failures atomic.Int64
		stop     = make(chan struct{})
		// rearm[r] closes when round r has been measured: watchers re-arm
		// then, so the measured window holds only the notification fan-out
		// and not the next round's watch requests.
		rearm = make([]chan struct{}, rounds)
		wg    sync.WaitGroup
	)
	for i := range rearm {
		rearm[i] = make(chan struct{})
	}
	fmt.Fprintf(os.Stderr, "opening %d watchers…\n", n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		instance := "w" + strconv.Itoa(i)
		go func() {
			defer wg.Done()
			id := startID
			round := 0
			for round < rounds {
				select {
				case <-stop:
					return
				default:
				}
				var out struct {
					Changes []struct {
						ID     int64 `json:"id"`
						Config *struct {
							Items map[string]string `json:"items"`
						} `json:"config"`
					} `json:"changes"`
				}
				var at time.Time // when the answer was read and decoded: the notification
				err := callAt(ctx, hc, "POST", base+"/api/v1/config/watch?timeout=60s", watchBody(id, instance), &out, &at)
				if err != nil {
					failures.Add(1)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if len(out.Changes) == 0 {
					continue // timed out idle; watch again
				}
				id = out.Changes[0].ID
				mu.Lock()
				arrivals[round] = append(arrivals[round], at)
				mu.Unlock()
				// The application has the new value when the answer carries
				// it (as the SDK asks, unless -fetch); otherwise the watcher
				// fetches it at once, as the SDK then does.
				want := strconv.Itoa(round + 1)
				if cfg := out.Changes[0].Config; !fetchStorm && cfg != nil && cfg.Items["value"] == want {
					mu.Lock()
					fetched[round] = append(fetched[round], at)
					mu.Unlock()
				} else {
					var p struct {
						Items map[string]string `json:"items"`
					}
					if err := call(ctx, hc, "GET", base+"/api/v1/config/configs/dev/bench/default/application?instance="+instance, nil, &p); err != nil || p.Items["value"] != want {
						failures.Add(1)
					} else {
						mu.Lock()
						fetched[round] = append(fetched[round], time.Now())
						mu.Unlock()
					}
				}
				select {
				case <-rearm[round]:
				case <-stop:
					return
				}
				round++
			}
		}()
		if i%500 == 499 {
			time.Sleep(20 * time.Millisecond) // open connections in waves, as real clients start
		}
	}
	var results []result
	for r := 0; r < rounds; r++ {
		if err := waitWatchers(hc, base, n, 60*time.Second); err != nil {
			close(stop)
			return nil, 0, 0, err
		}
		// Releases come minutes apart in production, to watchers that have
		// long been idle: let the re-armed watches settle (and this load
		// generator collect its garbage) before publishing.
		time.Sleep(settle)
		runtime.GC()
		rss := serverRSS(srv.Process.Pid)
		if err := edit(r + 1); err != nil {
			close(stop)
			return nil, 0, 0, err
		}
		if f := os.Getenv("BENCH_CPUPROFILE"); f != "" && r == rounds-1 && len(extra) == 0 {
			// Profile this process (the watchers) over the last round.
			if pf, err := os.Create(f); err == nil {
				_ = pprof.StartCPUProfile(pf)
				defer func() { pprof.StopCPUProfile(); pf.Close() }()
			}
		}
		srvCPU0, ownCPU0 := procCPU(srv.Process.Pid), selfCPU()
		start := time.Now()
		if err := publish(); err != nil {
			close(stop)
			return nil, 0, 0, err
		}
		pubDur := time.Since(start)
		lat := collect(&mu, &arrivals[r], n, start, 30*time.Second)
		fl := collect(&mu, &fetched[r], n, start, 60*time.Second) // from the publish, like the notification
		res := newResult(n, r, lat, rss, pubDur)
		res.ServerCPUms, res.ClientCPUms = (procCPU(srv.Process.Pid)-srvCPU0)*1000, (selfCPU()-ownCPU0)*1000
		close(rearm[r])
		res.Fetched = len(fl)
		if len(fl) > 0 {
			res.FetchP50ms, res.FetchP99ms = pct(fl, 0.50), pct(fl, 0.99)
		}
		results = append(results, res)
		fmt.Fprintf(os.Stderr, "round %d: %d/%d notified, p99 %.1f ms, server RSS %.0f MiB\n", r+1, res.Notified, n, res.P99ms, res.RSSMiB)
	}
	close(stop)
	wg.Wait()
	hwm := serverHWM(srv.Process.Pid)
	tr.CloseIdleConnections()
	return results, hwm, failures.Load(), nil
}

// collect waits until n times are in *times (or d passes) and returns the
// delays from start, in milliseconds, sorted.
func collect(mu *sync.Mutex, times *[]time.Time, n int, start time.Time, d time.Duration) []float64 {
	deadline := time.Now().Add(d)
	for {
		mu.Lock()
		got := len(*times)
		mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	lat := make([]float64, 0, len(*times))
	for _, at := range *times {
		lat = append(lat, float64(at.Sub(start).Microseconds())/1000)
	}
	mu.Unlock()
	sort.Float64s(lat)
	return lat
}

// newResult summarises round r's notification delays against the goal.
func newResult(n, r int, lat []float64, rss float64, publish time.Duration) result {
	res := result{Case: fmt.Sprintf("push-%dw-round%d", n, r+1), Watchers: n, Notified: len(lat), RSSMiB: rss, PublishMs: float64(publish.Microseconds()) / 1000}
	if len(lat) > 0 {
		res.P50ms, res.P99ms, res.Maxms = pct(lat, 0.50), pct(lat, 0.99), lat[len(lat)-1]
	}
	res.GoalMet = res.Notified == n && res.P99ms < 200 && res.RSSMiB < 300
	return res
}

func watchBody(id int64, instance string) map[string]any {
	return map[string]any{"env": "dev", "app": "bench", "namespaces": []map[string]any{{"ns": "application", "id": id}}, "instance": instance, "content": !fetchStorm}
}

func pct(sorted []float64, p float64) float64 {
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func call(ctx context.Context, hc *http.Client, method, url string, body, out any) error {
	return callAt(ctx, hc, method, url, body, out, nil)
}

func callAt(ctx context.Context, hc *http.Client, method, url string, body, out any, at *time.Time) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = json.Unmarshal(b, out)
		}
		if at != nil {
			*at = time.Now() // the answer read and decoded: where the application sees it
		}
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if at != nil {
		*at = time.Now()
	}
	return nil
}

func waitReady(hc *http.Client, base string) error {
	for i := 0; i < 200; i++ {
		resp, err := hc.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server at %s not ready", base)
}

// waitWatchers polls the server's tangram_config_watchers gauge.
func waitWatchers(hc *http.Client, base string, n int, d time.Duration) error {
	deadline := time.Now().Add(d)
	last := 0
	for time.Now().Before(deadline) {
		resp, err := hc.Get(base + "/metrics")
		if err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "tangram_config_watchers ") {
					f, _ := strconv.ParseFloat(strings.TrimPrefix(line, "tangram_config_watchers "), 64)
					last = int(f)
				}
			}
			resp.Body.Close()
			if last >= n {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("only %d of %d watchers held after %v", last, n, d)
}

func serverRSS(pid int) float64 { return procstat.MiB(pid, "VmRSS") }
func serverHWM(pid int) float64 { return procstat.MiB(pid, "VmHWM") }

// procCPU returns a process's user+system CPU seconds from /proc.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ") ".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks (USER_HZ = 100 on Linux)
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
