// Command lock benchmarks Tangram's locks against the locks Go shops use:
//
//   - the Redis backend (lock/redislock) against go-redsync/redsync v4 on
//     the same real Redis (TANGRAM_TEST_REDIS, default 127.0.0.1:6379) with
//     the same go-redis client settings: redsync with its default retry
//     delays (50–250 ms, as its docs leave them) and, its fastest, with a
//     1 ms retry delay;
//   - the server backend (lock.Dial on a tangram server child process,
//     SQLite store with fsync on every commit) against etcd's
//     concurrency.Mutex (embedded etcd in a child process, fsync on).
//
// Cases: uncontended — 16 goroutines each locking and unlocking a lock of
// its own; contended — 16 goroutines on one lock. Each contender has its
// own session (etcd: its own concurrency.Session; ours: its own
// lock.Client) or handle. Figures are lock+unlock pairs per second and the
// p99 of one pair (waiting included), and how fairly the lock went
// round: the least-served contender's pairs over the mean. Semantics differ in one way, named
// in the table: ours renew while held (watchdog) and carry a fencing token;
// redsync does neither. The systems take turns going first over -rounds
// rounds; each row is a median with its spread; the last line is JSON.
//
//	go run ./bench/lock           # 5 s per case, 3 rounds
//	go run ./bench/lock -quick    # 2 s per case, 3 rounds
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/tangram-dev/tangram/bench/internal/etcdpeer"
	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
	"github.com/tangram-dev/tangram/lock"
	"github.com/tangram-dev/tangram/lock/redislock"
	"github.com/tangram-dev/tangram/rpc"
)

const token = "tgm_benchlocktoken00000000000000000000"

// pairs is one measurement: lock+unlock pairs per second, p99 per pair.
type pairs struct {
	perSec float64
	p99ms  float64
	errs   int
	// least is the pairs of the least-served contender over the mean:
	// 1 is fair; near 0, some contenders starved.
	least float64
}

// locker is one contender's lock: lock then unlock.
type locker func(ctx context.Context) error

// drive runs conc contenders for d, each calling its own locker in a loop.
func drive(d time.Duration, lockers []locker) pairs {
	var n, errs atomic.Int64
	lat := make([][]time.Duration, len(lockers))
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i, l := range lockers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t := time.Now()
				if err := l(ctx); err != nil {
					if dl, _ := ctx.Deadline(); time.Now().Before(dl) { // not the run's end cutting a call short
						if errs.Add(1) == 1 {
							fmt.Fprintln(os.Stderr, "  first error:", err)
						}
					}
					continue
				}
				lat[i] = append(lat[i], time.Since(t))
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	p99 := math.NaN()
	if len(all) > 0 {
		p99 = float64(all[len(all)*99/100]) / 1e6
	}
	least := math.Inf(1)
	for _, l := range lat {
		least = min(least, float64(len(l)))
	}
	if n.Load() > 0 {
		least /= float64(n.Load()) / float64(len(lat))
	}
	return pairs{perSec: float64(n.Load()) / el.Seconds(), p99ms: p99, errs: int(errs.Load()), least: least}
}

type system struct {
	name    string
	measure func(contended bool) (pairs, error)
}

func main() {
	serve := flag.Bool("serve-etcd", false, "internal: run the etcd peer (args: dir client-url peer-url)")
	quick := flag.Bool("quick", false, "2 s per case")
	dur := flag.Duration("d", 5*time.Second, "time per case and system")
	conc := flag.Int("c", 16, "contenders")
	reps := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	bin := flag.String("bin", "", "a built tangram binary (default: build ./cmd/tangram)")
	only := flag.String("only", "", "run only the redis or the server comparisons")
	flag.Parse()
	if *serve {
		if err := etcdpeer.Serve(flag.Arg(0), flag.Arg(1), flag.Arg(2), flag.Args()[3:]...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if *quick {
		*dur = 2 * time.Second
	}
	if err := run(*dur, *conc, *reps, *bin, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench/lock:", err)
		os.Exit(1)
	}
}

func redisAddr() string {
	if a := os.Getenv("TANGRAM_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func run(d time.Duration, conc, reps int, bin, only string) error {
	dir, err := os.MkdirTemp("", "bench-lock-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin, err = tangrambin.Build(dir, bin); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr(), PoolSize: 2 * conc})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		return fmt.Errorf("Redis at %s (set TANGRAM_TEST_REDIS; scripts/services.sh starts one): %w", redisAddr(), err)
	}
	var seq atomic.Int64
	name := func(contended bool, i int) string {
		if contended {
			return fmt.Sprintf("bench:%d:shared", seq.Load())
		}
		return fmt.Sprintf("bench:%d:own-%d", seq.Load(), i)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ours := func(contended bool) (pairs, error) {
		seq.Add(1)
		c := redislock.New(rdb, redislock.Options{Logger: quiet})
		defer c.Close()
		ls := make([]locker, conc)
		for i := range ls {
			m := c.Mutex(name(contended, i))
			ls[i] = func(ctx context.Context) error {
				if _, err := m.Lock(ctx); err != nil {
					return err
				}
				return m.Unlock(context.WithoutCancel(ctx))
			}
		}
		return drive(d, ls), nil
	}
	rs := redsync.New(goredis.NewPool(rdb))
	peer := func(delay time.Duration) func(contended bool) (pairs, error) {
		return func(contended bool) (pairs, error) {
			seq.Add(1)
			ls := make([]locker, conc)
			for i := range ls {
				opts := []redsync.Option{redsync.WithTries(math.MaxInt32)}
				if delay > 0 {
					opts = append(opts, redsync.WithRetryDelay(delay))
				}
				m := rs.NewMutex(name(contended, i), opts...)
				ls[i] = func(ctx context.Context) error {
					if err := m.LockContext(ctx); err != nil {
						return err
					}
					_, err := m.UnlockContext(context.WithoutCancel(ctx))
					return err
				}
			}
			return drive(d, ls), nil
		}
	}
	rsVer := spread.Version("github.com/go-redsync/redsync/v4")
	redisSystems := []system{
		{"tangram redislock", ours},
		{"redsync " + rsVer + " (default retry delays)", peer(0)},
		{"redsync " + rsVer + " (1 ms retry delay)", peer(time.Millisecond)},
	}
	etcdVer := spread.Version("go.etcd.io/etcd/server/v3")
	serverSystems := []system{
		{"tangram server lock (SQLite, fsync)", func(contended bool) (pairs, error) { return measureServer(bin, dir, d, conc, contended) }},
		{"etcd " + etcdVer + " concurrency.Mutex (fsync)", func(contended bool) (pairs, error) { return measureEtcd(dir, d, conc, contended) }},
	}
	var rows []spread.Row
	fmt.Printf("| case | system | pairs/s | p99 per pair (ms) | least-served contender / mean | errors |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, group := range []struct {
		label   string
		systems []system
	}{{"redis", redisSystems}, {"server", serverSystems}} {
		if only != "" && only != group.label {
			continue
		}
		for _, contended := range []bool{false, true} {
			cas := fmt.Sprintf("%s %s %d", group.label, map[bool]string{false: "uncontended", true: "contended"}[contended], conc)
			res := map[string][]pairs{}
			for r := range reps {
				for _, sys := range spread.Order(group.systems, r) {
					fmt.Fprintf(os.Stderr, "round %d/%d %s: %s …\n", r+1, reps, cas, sys.name)
					p, err := sys.measure(contended)
					if err != nil {
						return fmt.Errorf("%s: %w", sys.name, err)
					}
					fmt.Fprintf(os.Stderr, "  %.0f pairs/s, p99 %.2f ms, least-served %.2f, %d errors\n", p.perSec, p.p99ms, p.least, p.errs)
					res[sys.name] = append(res[sys.name], p)
				}
			}
			base := group.systems[0].name
			for _, sys := range group.systems {
				ps := res[sys.name]
				rate, p99, least := make([]float64, len(ps)), make([]float64, len(ps)), make([]float64, len(ps))
				errs := 0
				for i, p := range ps {
					rate[i], p99[i], least[i], errs = p.perSec, p.p99ms, p.least, errs+p.errs
				}
				fmt.Printf("| %s | %s | %s | %s | %s | %d |\n", cas, sys.name, spread.Summarise(rate).Format("%.0f"), spread.Summarise(p99).Format("%.2f"), spread.Summarise(least).Format("%.2f"), errs)
				if sys.name == base {
					continue
				}
				var our, their []float64
				for i := range ps {
					our = append(our, res[base][i].perSec)
					their = append(their, ps[i].perSec)
				}
				oe := 0
				for _, p := range res[base] {
					oe += p.errs
				}
				row := spread.NewRow(cas+" vs "+sys.name, spread.Summarise(our), spread.Summarise(their), spread.Ratios(our, their), oe+errs)
				row.Note = "pairs/s; ours renew while held and carry a fencing token"
				rows = append(rows, row)
			}
		}
	}
	spread.Print("lock", "redsync "+rsVer+" on Redis; etcd "+etcdVer+" concurrency.Mutex (embedded, child process, fsync)", rows, nil)
	return nil
}

var runs atomic.Int64

func measureServer(bin, dir string, d time.Duration, conc int, contended bool) (pairs, error) {
	httpAddr, err1 := tangrambin.FreeAddr()
	rpcAddr, err2 := tangrambin.FreeAddr()
	if err1 != nil || err2 != nil {
		return pairs{}, fmt.Errorf("ports: %v %v", err1, err2)
	}
	data := filepath.Join(dir, fmt.Sprintf("ours-%d", runs.Add(1)))
	srv := exec.Command(bin, "server", "--http", httpAddr, "--rpc", rpcAddr, "--broker", "off", "--kv", "off", "--otlp-http", "off", "--otlp-grpc", "off",
		"--components", "lock", "--data", data, "--log-level", "error")
	srv.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return pairs{}, err
	}
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	// One connection for the sixteen sessions, as etcd's sixteen sessions
	// share one clientv3 below.
	var conn *rpc.Client
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if conn, err = rpc.Dial(ctx, rpcAddr, rpc.WithToken(token), rpc.WithLogger(quiet)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return pairs{}, fmt.Errorf("dial: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // the server is starting
	}
	var clients []*lock.Client
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
		_ = conn.Close()
	}()
	for i := range conc {
		for {
			c, err := lock.Dial(ctx, lock.Config{RPC: conn, Logger: quiet})
			if err == nil {
				clients = append(clients, c)
				break
			}
			if time.Now().After(deadline) {
				return pairs{}, fmt.Errorf("contender %d: %w", i, err)
			}
			time.Sleep(100 * time.Millisecond) // the server is starting
		}
	}
	ls := make([]locker, conc)
	for i, c := range clients {
		n := fmt.Sprintf("bench/own-%d", i)
		if contended {
			n = "bench/shared"
		}
		m := c.Mutex(n)
		ls[i] = func(ctx context.Context) error {
			if _, err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(context.WithoutCancel(ctx))
		}
	}
	return drive(d, ls), nil
}

func measureEtcd(dir string, d time.Duration, conc int, contended bool) (pairs, error) {
	peer, err := etcdpeer.Start("-serve-etcd", filepath.Join(dir, fmt.Sprintf("etcd-%d", runs.Add(1))))
	if err != nil {
		return pairs{}, err
	}
	defer peer.Stop()
	// A quiet logger: the client's only warnings here are its retry
	// notices for the calls each round's deadline cuts short, which drive
	// leaves out of the errors as it does for ours; a real error still
	// shows as the round's first error.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{peer.Endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return pairs{}, err
	}
	defer cli.Close()
	ls := make([]locker, conc)
	var sessions []*concurrency.Session
	defer func() {
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	for i := range ls {
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
		if err != nil {
			return pairs{}, err
		}
		sessions = append(sessions, s)
		n := fmt.Sprintf("/bench/own-%d", i)
		if contended {
			n = "/bench/shared"
		}
		m := concurrency.NewMutex(s, n)
		ls[i] = func(ctx context.Context) error {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(context.WithoutCancel(ctx))
		}
	}
	return drive(d, ls), errors.Join()
}
