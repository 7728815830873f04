// Command registry benchmarks Tangram's service registry against etcd (the
// leases-and-watch registry many Go shops use), both in child processes of
// the benchmark on loopback:
//
//   - register-N: N instances (100 per service) registered with 64 callers
//     at once — ours over Tangram RPC (tangram.Registry/Register), etcd as a
//     lease grant plus a put with that lease per instance;
//   - memory-per-instance: the server's RSS growth over those N, divided by N;
//   - push-1k-watchers: 1,000 watchers on one service (ours: RPC watch
//     streams; etcd: prefix watches), then a new instance of it; the time from
//     the start of the registration to each watcher's event.
//
// It prints a markdown table and, last, one JSON line (DESIGN.md's format).
//
//	go run ./bench/registry           # 100,000 instances, 10 push rounds
//	go run ./bench/registry -quick    # 20,000 instances, 5 rounds, under a minute
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tangram-dev/tangram/bench/internal/etcdpeer"
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
	ServerPeakMiB  float64 `json:"server_peak_mib"`
	RegisterErrors int64   `json:"register_errors"`
}

func main() {
	serve := flag.Bool("serve-etcd", false, "internal: run the etcd peer (args: dir client-url peer-url)")
	quick := flag.Bool("quick", false, "20,000 instances and 5 push rounds (under a minute)")
	n := flag.Int("n", 100000, "instances to register")
	watchers := flag.Int("watchers", 1000, "watchers of the pushed service")
	rounds := flag.Int("rounds", 10, "push rounds")
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
		if err := etcdpeer.Serve(flag.Arg(0), flag.Arg(1), flag.Arg(2)); err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			os.Exit(1)
		}
		return
	}
	if *quick {
		*n, *rounds = 20000, 5
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
	if err := run(*n, *watchers, *rounds, *conc, *bin); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/registry:", err)
		os.Exit(1)
	}
}

func run(n, watchers, rounds, conc int, bin string) error {
	dir, err := os.MkdirTemp("", "bench-registry-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "tangram")
		fmt.Fprintln(os.Stderr, "building ./cmd/tangram …")
		b := exec.Command("go", "build", "-o", bin, "./cmd/tangram")
		b.Stderr = os.Stderr
		if err := b.Run(); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "tangram: registering %d instances, then %d watchers × %d rounds …\n", n, watchers, rounds)
	ours, err := measureOurs(bin, filepath.Join(dir, "tangram-data"), n, watchers, rounds, conc)
	if err != nil {
		return fmt.Errorf("tangram: %w", err)
	}
	fmt.Fprintf(os.Stderr, "etcd: the same …\n")
	peer, err := measureEtcd(filepath.Join(dir, "etcd"), n, watchers, rounds, conc)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	fmt.Printf("\nbench/registry: %d instances (100 per service), %d callers; %d watchers × %d rounds; 2 shared cores\n\n", n, conc, watchers, rounds)
	fmt.Println("| case | impl | value | notes |")
	fmt.Println("| --- | --- | ---: | --- |")
	regCase := fmt.Sprintf("register-%dk", n/1000)
	fmt.Printf("| %s | tangram | %.0f /s | %d errors |\n", regCase, ours.RegPerSec, ours.RegisterErrors)
	fmt.Printf("| %s | etcd 3.6 | %.0f /s | %d errors; one lease per instance |\n", regCase, peer.RegPerSec, peer.RegisterErrors)
	fmt.Printf("| memory-per-instance | tangram | %.0f B | server peak %.0f MiB |\n", ours.BytesPerInst, ours.ServerPeakMiB)
	fmt.Printf("| memory-per-instance | etcd 3.6 | %.0f B | server peak %.0f MiB |\n", peer.BytesPerInst, peer.ServerPeakMiB)
	pushCase := fmt.Sprintf("push-%dk-watchers", watchers/1000)
	for _, r := range []result{ours, peer} {
		fmt.Printf("| %s | %s | p99 %.2f ms | p50 %.2f ms, max %.2f ms, %d/%d notified |\n", pushCase, r.Impl, r.P99ms, r.P50ms, r.Maxms, r.Notified, r.Watchers*rounds)
	}
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return float64(int(a/b*100+0.5)) / 100
	}
	fmt.Printf("\ngoal: registrations ≥ 10× etcd (%.1f×), push p99 < 10 ms (%.2f ms), < 512 B per instance (%.0f B)\n",
		ratio(ours.RegPerSec, peer.RegPerSec), ours.P99ms, ours.BytesPerInst)
	type row struct {
		Case  string  `json:"case"`
		Ours  any     `json:"ours"`
		Peer  any     `json:"peer"`
		Ratio float64 `json:"ratio"`
	}
	out := map[string]any{"bench": "registry", "peer": "etcd 3.6 (embedded, child process)", "rows": []row{
		{Case: regCase, Ours: map[string]float64{"per_sec": ours.RegPerSec}, Peer: map[string]float64{"per_sec": peer.RegPerSec}, Ratio: ratio(ours.RegPerSec, peer.RegPerSec)},
		{Case: pushCase, Ours: map[string]float64{"p50_ms": ours.P50ms, "p99_ms": ours.P99ms, "max_ms": ours.Maxms},
			Peer: map[string]float64{"p50_ms": peer.P50ms, "p99_ms": peer.P99ms, "max_ms": peer.Maxms}, Ratio: ratio(peer.P99ms, ours.P99ms)},
		{Case: "memory-per-instance", Ours: map[string]float64{"bytes": ours.BytesPerInst}, Peer: map[string]float64{"bytes": peer.BytesPerInst},
			Ratio: ratio(peer.BytesPerInst, ours.BytesPerInst)},
	}}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	return nil
}

func rssBytes(pid int, field string) float64 { return procstat.MiB(pid, field) * (1 << 20) }

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

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

// pushRounds changes the watched service once per round (change) and
// collects, for every watcher, the time from the start of the change to its
// event, waiting at most 10 s per round.
func pushRounds(rounds, watchers int, a *arrivals, change func(round int) error) ([]time.Duration, error) {
	a.round.Store(-1)
	starts := make([]time.Time, rounds)
	for r := range rounds {
		time.Sleep(300 * time.Millisecond)
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
	for _, w := range a.at {
		for r, t := range w {
			if !t.IsZero() {
				lat = append(lat, t.Sub(starts[r]))
			}
		}
	}
	return lat, nil
}

func measureOurs(bin, data string, n, watchers, rounds, conc int) (result, error) {
	res := result{Impl: "tangram", Instances: n, Watchers: watchers}
	httpAddr, err1 := freeAddr()
	rpcAddr, err2 := freeAddr()
	if err1 != nil || err2 != nil {
		return res, fmt.Errorf("ports: %v %v", err1, err2)
	}
	args := []string{"server", "--http", httpAddr, "--rpc", rpcAddr, "--broker", "off", "--data", data, "--log-level", "error"}
	if d := os.Getenv("BENCH_DEBUG_ADDR"); d != "" {
		args = append(args, "--debug-addr", d) // pprof of the server
	}
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
	time.Sleep(500 * time.Millisecond)
	rss0 := rssBytes(srv.Process.Pid, "VmRSS")
	var errs atomic.Int64
	el := parallel(n, conc, func(i int) {
		in := registry.Instance{Key: registry.Key{Service: fmt.Sprintf("svc-%d", i/100)}, Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			Port: 8080, Weight: 100, Enabled: true, Ephemeral: true, Metadata: map[string]string{"version": "1.0"}}
		if _, err := rpc.Call[registry.Instance](ctx, c, "tangram.Registry/Register", &in); err != nil {
			errs.Add(1)
		}
	})
	res.RegPerSec, res.RegisterErrors = float64(n)/el.Seconds(), errs.Load()
	time.Sleep(500 * time.Millisecond)
	res.BytesPerInst = (rssBytes(srv.Process.Pid, "VmRSS") - rss0) / float64(n)

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
	lat, err := pushRounds(rounds, watchers, arr, func(r int) error {
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

func measureEtcd(dir string, n, watchers, rounds, conc int) (result, error) {
	res := result{Impl: "etcd 3.6", Instances: n, Watchers: watchers}
	peer, err := etcdpeer.Start("-serve-etcd", dir)
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
	time.Sleep(500 * time.Millisecond)
	rss0 := rssBytes(peer.PID(), "VmRSS")
	var errs atomic.Int64
	register := func(svc string, i int, host string, port int) error {
		lease, err := cli.Grant(ctx, 30)
		if err != nil {
			return err
		}
		val, _ := json.Marshal(registry.Instance{Key: registry.Key{Service: svc}, Host: host, Port: uint16(port), Weight: 100,
			Enabled: true, Ephemeral: true, Metadata: map[string]string{"version": "1.0"}})
		_, err = cli.Put(ctx, fmt.Sprintf("/registry/public/default/%s/%s:%d", svc, host, port), string(val), clientv3.WithLease(lease.ID))
		return err
	}
	el := parallel(n, conc, func(i int) {
		if err := register(fmt.Sprintf("svc-%d", i/100), i, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), 8080); err != nil {
			errs.Add(1)
		}
	})
	res.RegPerSec, res.RegisterErrors = float64(n)/el.Seconds(), errs.Load()
	time.Sleep(500 * time.Millisecond)
	res.BytesPerInst = (rssBytes(peer.PID(), "VmRSS") - rss0) / float64(n)

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
	lat, err := pushRounds(rounds, watchers, arr, func(r int) error { return register("watched", 0, "10.200.0.1", 9000+r) })
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
