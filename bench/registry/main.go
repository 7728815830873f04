// Command registry benchmarks Tangram's service registry against etcd (the
// leases-and-watch registry many Go shops use), both in child processes of
// the benchmark on loopback:
//
//   - register-N: N instances (100 per service) registered with 64 callers
//     at once — ours over Tangram RPC (tangram.Registry/Register), etcd as a
//     lease grant plus a put with that lease per instance;
//   - memory-per-instance: the server's live heap after a forced GC, and its
//     anonymous memory (RssAnon: not the page cache of etcd's mmapped bbolt
//     file), grown over those N, divided by N;
//   - push-1k-watchers: 1,000 watchers on one service (ours: RPC watch
//     streams; etcd: prefix watches), then a new instance of it; the time from
//     the registration's request (etcd: its Put; the lease is granted before
//     the clock starts) to each watcher's event.
//
// Durability differs and is in the table: ours is memory + gossip (AP, as
// Nacos' ephemeral instances), etcd is raft + fsync; a third system, etcd
// with UnsafeNoFsync, is the nearest like-for-like. The systems take turns
// going first over -rounds rounds (one at a time: each runs only while it
// is measured); figures are medians with their spread. It prints a
// markdown table and, last, one JSON line (the shape every bench shares).
//
//	go run ./bench/registry           # 100,000 instances, 10 push rounds, 3 rounds
//	go run ./bench/registry -quick    # 20,000 instances, 10 push rounds, 3 rounds
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tangram-dev/tangram/bench/internal/etcdpeer"
	"github.com/tangram-dev/tangram/bench/internal/heap"
	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
	"github.com/tangram-dev/tangram/internal/procstat"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
)

const token = "tgm_benchregistrytoken0000000000000000"

type result struct {
	Impl           string  `json:"impl"`
	Instances      int     `json:"instances"`
	RegPerSec      float64 `json:"registrations_per_sec"`
	BytesPerInst   float64 `json:"server_bytes_per_instance"`
	Watchers       int     `json:"watchers"`
	Notified       int     `json:"notified"`
	P50ms          float64 `json:"push_p50_ms"`
	P99ms          float64 `json:"push_p99_ms"`
	Maxms          float64 `json:"push_max_ms"`
	LivePerInst    float64 `json:"live_heap_bytes_per_instance"`
	AnonPerInst    float64 `json:"rss_anon_bytes_per_instance"`
	ServerPeakMiB  float64 `json:"server_peak_mib"`
	RegisterErrors int64   `json:"register_errors"`
}

func main() {
	serve := flag.Bool("serve-etcd", false, "internal: run the etcd peer (args: dir client-url peer-url)")
	quick := flag.Bool("quick", false, "20,000 instances (10 push rounds, as the full run: the push tail needs as many samples)")
	n := flag.Int("n", 100000, "instances to register")
	watchers := flag.Int("watchers", 1000, "watchers of the pushed service")
	rounds := flag.Int("push-rounds", 10, "push rounds per measurement")
	reps := flag.Int("rounds", 3, "rounds: each system measured this many times, taking turns going first")
	conc := flag.Int("c", 64, "concurrent registering callers")
	bin := flag.String("bin", "", "tangram binary (default: build ./cmd/tangram)")
	cpuprofile := flag.String("cpuprofile", "", "write the benchmark process's CPU profile here")
	onlyOurs := flag.Bool("ours", false, "measure Tangram only (profiling; no table or JSON)")
	flag.Parse()
	if *cpuprofile != "" {
		if f, err := os.Create(*cpuprofile); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if *serve {
		if err := etcdpeer.Serve(flag.Arg(0), flag.Arg(1), flag.Arg(2), flag.Args()[min(3, flag.NArg()):]...); err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			os.Exit(1)
		}
		return
	}
	if *quick {
		*n = 20000
	}
	if *onlyOurs {
		dir, _ := os.MkdirTemp("", "bench-registry-")
		defer os.RemoveAll(dir)
		ours, err := measureOurs(*bin, filepath.Join(dir, "data"), *n, *watchers, *rounds, *conc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/registry:", err)
			os.Exit(1)
		}
		fmt.Printf("tangram: %.0f registrations/s, %.0f B/instance, push p50 %.2f ms p99 %.2f ms max %.2f ms (%d/%d)\n",
			ours.RegPerSec, ours.BytesPerInst, ours.P50ms, ours.P99ms, ours.Maxms, ours.Notified, *watchers**rounds)
		return
	}
	if err := run(*n, *watchers, *rounds, *conc, *bin, *reps); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/registry:", err)
		os.Exit(1)
	}
}

// system is one of the measured registries.
type system struct {
	name, durability string
	measure          func(dir string) (result, error)
}

func run(n, watchers, rounds, conc int, bin string, reps int) error {
	dir, err := os.MkdirTemp("", "bench-registry-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin, err = tangrambin.Build(dir, bin); err != nil {
		return err
	}
	etcdVer := spread.Version("go.etcd.io/etcd/server/v3")
	systems := []system{
		{"tangram", "memory + gossip (AP)", func(d string) (result, error) { return measureOurs(bin, d, n, watchers, rounds, conc) }},
		{"etcd " + etcdVer, "raft + fsync", func(d string) (result, error) { return measureEtcd(d, n, watchers, rounds, conc, false) }},
		{"etcd " + etcdVer + " UnsafeNoFsync", "raft, no fsync", func(d string) (result, error) { return measureEtcd(d, n, watchers, rounds, conc, true) }},
	}
	all := map[string][]result{}
	for r := range reps {
		for i, sys := range spread.Order(systems, r) {
			fmt.Fprintf(os.Stderr, "round %d/%d %s: registering %d instances, then %d watchers × %d pushes …\n", r+1, reps, sys.name, n, watchers, rounds)
			res, err := sys.measure(filepath.Join(dir, fmt.Sprintf("r%d-%d", r, i)))
			if err != nil {
				return fmt.Errorf("%s: %w", sys.name, err)
			}
			fmt.Fprintf(os.Stderr, "  %.0f registrations/s (%d errors), %.0f B live / %.0f B anon per instance, push p50 %.2f p99 %.2f max %.2f ms (%d/%d)\n",
				res.RegPerSec, res.RegisterErrors, res.LivePerInst, res.AnonPerInst, res.P50ms, res.P99ms, res.Maxms, res.Notified, watchers*rounds)
			all[sys.name] = append(all[sys.name], res)
		}
	}
	fig := func(name string, f func(result) float64) []float64 {
		var xs []float64
		for _, r := range all[name] {
			xs = append(xs, f(r))
		}
		return xs
	}
	of := func(name string, f func(result) float64) spread.Of { return spread.Summarise(fig(name, f)) }
	errsOf := func(name string) int {
		t := 0
		for _, r := range all[name] {
			t += int(r.RegisterErrors) + r.Watchers*rounds - r.Notified
		}
		return t
	}
	fmt.Printf("\nbench/registry: %d instances (100 per service), %d callers; %d watchers × %d pushes; %d rounds, systems alternating, one running at a time; %d CPUs shared; GOGC: tangram server 400 (its default), etcd 100 (its default) — memory is the live heap after a forced GC and RssAnon, neither depends on it\n\n",
		n, conc, watchers, rounds, reps, runtime.NumCPU())
	fmt.Println("| system | durability | registrations/s | live heap B/instance | RssAnon B/instance | push p50 ms | push p99 ms | push max ms | errors |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, sys := range systems {
		nm := sys.name
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", nm, sys.durability,
			of(nm, func(r result) float64 { return r.RegPerSec }).Format("%.0f"),
			of(nm, func(r result) float64 { return r.LivePerInst }).Format("%.0f"),
			of(nm, func(r result) float64 { return r.AnonPerInst }).Format("%.0f"),
			of(nm, func(r result) float64 { return r.P50ms }).Format("%.2f"),
			of(nm, func(r result) float64 { return r.P99ms }).Format("%.2f"),
			of(nm, func(r result) float64 { return r.Maxms }).Format("%.2f"), errsOf(nm))
	}
	fmt.Println("\n(median of the rounds, min–max in brackets)")
	ours := systems[0].name
	var rows []spread.Row
	regCase, pushCase := fmt.Sprintf("register-%dk", n/1000), fmt.Sprintf("push-%dk-watchers", watchers/1000)
	for _, peer := range systems[1:] {
		p := peer.name
		suffix := ""
		if strings.Contains(p, "UnsafeNoFsync") {
			suffix = "-vs-nofsync"
		}
		rows = append(rows,
			spread.NewRow(regCase+suffix, of(ours, func(r result) float64 { return r.RegPerSec }), of(p, func(r result) float64 { return r.RegPerSec }),
				spread.Ratios(fig(ours, func(r result) float64 { return r.RegPerSec }), fig(p, func(r result) float64 { return r.RegPerSec })), errsOf(ours)+errsOf(p)),
			spread.NewRow(pushCase+suffix, of(ours, func(r result) float64 { return r.P99ms }), of(p, func(r result) float64 { return r.P99ms }),
				spread.Ratios(fig(p, func(r result) float64 { return r.P99ms }), fig(ours, func(r result) float64 { return r.P99ms })), 0),
			spread.NewRow("memory-per-instance"+suffix, of(ours, func(r result) float64 { return r.LivePerInst }), of(p, func(r result) float64 { return r.LivePerInst }),
				spread.Ratios(fig(p, func(r result) float64 { return r.LivePerInst }), fig(ours, func(r result) float64 { return r.LivePerInst })), 0))
	}
	reg, push, mem := rows[0], rows[1], of(ours, func(r result) float64 { return r.LivePerInst })
	fmt.Printf("\ngoal: registrations ≥ 10× etcd (%.2f×, rounds %.2f–%.2f), push p99 < 10 ms (%s ms), < 512 B per instance (%s B live)\n",
		reg.Ratio, reg.RatioMin, reg.RatioMax, of(ours, func(r result) float64 { return r.P99ms }).Format("%.2f"), mem.Format("%.0f"))
	_ = push
	spread.Print("registry", "etcd "+etcdVer+" (embedded, child process; rows -vs-nofsync: UnsafeNoFsync)", rows, nil)
	return nil
}

func rssBytes(pid int, field string) float64 { return procstat.MiB(pid, field) * (1 << 20) }

// parallel runs f(i) for i in [0, n) on conc goroutines and returns the
// elapsed time.
func parallel(n, conc int, f func(i int)) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

func percentiles(lat []time.Duration) (p50, p99, mx float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	return q(0.5), q(0.99), float64(lat[len(lat)-1]) / 1e6
}

// arrivals records, for every watcher, when its event of each round came:
// each watcher writes its own slot (no lock or channel shared by a thousand
// receivers to skew either side's figures).
type arrivals struct {
	round atomic.Int64
	count atomic.Int64
	at    [][]time.Time // [watcher][round]
}

func newArrivals(watchers, rounds int) *arrivals {
	a := &arrivals{at: make([][]time.Time, watchers)}
	for i := range a.at {
		a.at[i] = make([]time.Time, rounds)
	}
	return a
}

// note records watcher i's first event of the current round.
func (a *arrivals) note(i int) {
	now := time.Now()
	r := a.round.Load()
	if r < 0 || a.at[i][r] != (time.Time{}) {
		return
	}
	a.at[i][r] = now
	a.count.Add(1)
}

// pushRounds changes the watched service once per round (prepare, then
// change) and collects, for every watcher, the time from the start of the
// change to its event, waiting at most 10 s per round.
func pushRounds(rounds, watchers int, a *arrivals, prepare, change func(round int) error) ([]time.Duration, error) {
	a.round.Store(-1)
	starts := make([]time.Time, rounds)
	for r := range rounds {
		time.Sleep(300 * time.Millisecond)
		if prepare != nil {
			if err := prepare(r); err != nil { // before the clock: not part of the push
				return nil, err
			}
		}
		a.round.Store(int64(r))
		a.count.Store(0)
		starts[r] = time.Now()
		if err := change(r); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(10 * time.Second)
		for a.count.Load() < int64(watchers) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // stragglers past the count are late, not lost
		a.round.Store(-1)
	}
	var lat []time.Duration
	perRound := make([][]time.Duration, rounds)
	for _, w := range a.at {
		for r, t := range w {
			if !t.IsZero() {
				lat = append(lat, t.Sub(starts[r]))
				perRound[r] = append(perRound[r], t.Sub(starts[r]))
			}
		}
	}
	if os.Getenv("BENCH_REGISTRY_DEBUG") != "" {
		for r, l := range perRound {
			p50, p99, mx := percentiles(l)
			fmt.Fprintf(os.Stderr, "    push round %d: p50 %.2f p99 %.2f max %.2f ms\n", r+1, p50, p99, mx)
		}
	}
	return lat, nil
}

func measureOurs(bin, data string, n, watchers, rounds, conc int) (result, error) {
	res := result{Impl: "tangram", Instances: n, Watchers: watchers}
	httpAddr, err1 := tangrambin.FreeAddr()
	rpcAddr, err2 := tangrambin.FreeAddr()
	if err1 != nil || err2 != nil {
		return res, fmt.Errorf("ports: %v %v", err1, err2)
	}
	debugAddr, err := tangrambin.FreeAddr()
	if err != nil {
		return res, err
	}
	args := []string{"server", "--http", httpAddr, "--rpc", rpcAddr, "--broker", "off", "--data", data, "--log-level", "error", "--debug-addr", debugAddr}
	srv := exec.Command(bin, args...)
	srv.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return res, err
	}
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := rpc.Dial(ctx, rpcAddr, rpc.WithToken(token), rpc.WithLogger(quiet), rpc.WithTimeout(30*time.Second))
	if err != nil {
		return res, err
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := rpc.Call[registry.Snapshot](ctx, c, "tangram.Registry/Get", &registry.Key{Service: "warmup"}); err == nil {
			break
		} else if time.Now().After(deadline) {
			return res, fmt.Errorf("server not answering: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	live0, err := heap.Live(debugAddr)
	if err != nil {
		return res, err
	}
	anon0 := rssBytes(srv.Process.Pid, "RssAnon")
	var errs atomic.Int64
	el := parallel(n, conc, func(i int) {
		in := registry.Instance{Key: registry.Key{Service: fmt.Sprintf("svc-%d", i/100)}, Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			Port: 8080, Weight: 100, Enabled: true, Ephemeral: true, Metadata: map[string]string{"version": "1.0"}}
		if _, err := rpc.Call[registry.Instance](ctx, c, "tangram.Registry/Register", &in); err != nil {
			errs.Add(1)
		}
	})
	res.RegPerSec, res.RegisterErrors = float64(n)/el.Seconds(), errs.Load()
	live1, err := heap.Live(debugAddr)
	if err != nil {
		return res, err
	}
	res.LivePerInst, res.AnonPerInst = (live1-live0)/float64(n), (rssBytes(srv.Process.Pid, "RssAnon")-anon0)/float64(n)
	res.BytesPerInst = res.LivePerInst

	// Watchers: RPC watch streams over 10 client connections.
	var clients []*rpc.Client
	for range 10 {
		wc, err := rpc.Dial(ctx, rpcAddr, rpc.WithToken(token), rpc.WithLogger(quiet))
		if err != nil {
			return res, err
		}
		defer wc.Close()
		clients = append(clients, wc)
	}
	key := registry.Key{Service: "watched"}
	arr := newArrivals(watchers, rounds)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ready sync.WaitGroup
	var wg sync.WaitGroup
	for i := range watchers {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := rpc.NewStream[registry.WatchRequest, registry.Snapshot](wctx, clients[i%len(clients)], "tangram.Registry/Watch")
			if err == nil {
				err = st.Send(&registry.WatchRequest{Key: key})
			}
			if err != nil {
				ready.Done()
				return
			}
			first := true
			for {
				s, err := st.Recv()
				if err != nil {
					if first {
						ready.Done()
					}
					return
				}
				if first {
					first = false
					ready.Done()
					continue
				}
				if len(s.Events) > 0 {
					arr.note(i)
				}
			}
		}()
	}
	ready.Wait()
	lat, err := pushRounds(rounds, watchers, arr, nil, func(r int) error {
		in := registry.Instance{Key: key, Host: "10.200.0.1", Port: uint16(9000 + r), Weight: 100, Enabled: true, Ephemeral: true}
		_, err := rpc.Call[registry.Instance](ctx, c, "tangram.Registry/Register", &in)
		return err
	})
	if err != nil {
		return res, err
	}
	res.Notified = len(lat)
	res.P50ms, res.P99ms, res.Maxms = percentiles(lat)
	res.ServerPeakMiB = rssBytes(srv.Process.Pid, "VmHWM") / (1 << 20)
	cancel()
	wg.Wait()
	return res, nil
}

func measureEtcd(dir string, n, watchers, rounds, conc int, noFsync bool) (result, error) {
	res := result{Impl: "etcd", Instances: n, Watchers: watchers}
	debugAddr, err := tangrambin.FreeAddr()
	if err != nil {
		return res, err
	}
	peer, err := etcdpeer.Start("-serve-etcd", dir, etcdpeer.Options{NoFsync: noFsync, DebugAddr: debugAddr})
	if err != nil {
		return res, err
	}
	defer peer.Stop()
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{peer.Endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		return res, err
	}
	defer cli.Close()
	live0, err := heap.Live(debugAddr)
	if err != nil {
		return res, err
	}
	anon0 := rssBytes(peer.PID(), "RssAnon")
	var errs atomic.Int64
	put := func(svc string, host string, port int, lease clientv3.LeaseID) error {
		val, _ := json.Marshal(registry.Instance{Key: registry.Key{Service: svc}, Host: host, Port: uint16(port), Weight: 100,
			Enabled: true, Ephemeral: true, Metadata: map[string]string{"version": "1.0"}})
		_, err := cli.Put(ctx, fmt.Sprintf("/registry/public/default/%s/%s:%d", svc, host, port), string(val), clientv3.WithLease(lease))
		return err
	}
	register := func(svc string, i int, host string, port int) error {
		lease, err := cli.Grant(ctx, 30)
		if err != nil {
			return err
		}
		return put(svc, host, port, lease.ID)
	}
	el := parallel(n, conc, func(i int) {
		if err := register(fmt.Sprintf("svc-%d", i/100), i, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), 8080); err != nil {
			errs.Add(1)
		}
	})
	res.RegPerSec, res.RegisterErrors = float64(n)/el.Seconds(), errs.Load()
	live1, err := heap.Live(debugAddr)
	if err != nil {
		return res, err
	}
	res.LivePerInst, res.AnonPerInst = (live1-live0)/float64(n), (rssBytes(peer.PID(), "RssAnon")-anon0)/float64(n)
	res.BytesPerInst = res.LivePerInst

	var clients []*clientv3.Client
	for range 10 {
		wc, err := clientv3.New(clientv3.Config{Endpoints: []string{peer.Endpoint}, DialTimeout: 10 * time.Second})
		if err != nil {
			return res, err
		}
		defer wc.Close()
		clients = append(clients, wc)
	}
	arr := newArrivals(watchers, rounds)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range watchers {
		// A distinct context value per watcher gives each its own watch
		// stream, as separate processes would have.
		ch := clients[i%len(clients)].Watch(clientv3.WithRequireLeader(context.WithValue(wctx, struct{ i int }{i}, i)),
			"/registry/public/default/watched/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		<-ch // created
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wr := range ch {
				if len(wr.Events) > 0 {
					arr.note(i)
				}
			}
		}()
	}
	// The lease is granted before the clock starts: the push is timed from
	// the Put, as ours is from the Register.
	var lease clientv3.LeaseID
	lat, err := pushRounds(rounds, watchers, arr, func(r int) error {
		l, err := cli.Grant(ctx, 30)
		if err != nil {
			return err
		}
		lease = l.ID
		return nil
	}, func(r int) error { return put("watched", "10.200.0.1", 9000+r, lease) })
	if err != nil {
		return res, err
	}
	res.Notified = len(lat)
	res.P50ms, res.P99ms, res.Maxms = percentiles(lat)
	res.ServerPeakMiB = rssBytes(peer.PID(), "VmHWM") / (1 << 20)
	cancel()
	wg.Wait()
	return res, nil
}
