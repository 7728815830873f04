// Command idgen benchmarks Tangram's ID generators against the ones Go
// shops use, in one run on this machine:
//
//   - snowflake: idgen.Snowflake (Twitter's layout: 41 bits of ms, 10 of
//     worker, 12 of sequence — a cap of 4,096,000 IDs/s) against
//     bwmarrin/snowflake (the same bits, a mutex) and sony/sonyflake (its
//     own layout: 256 IDs per 10 ms, a cap of 25,600/s), on 1 and on 8
//     goroutines;
//   - segments: idgen.Segments (Leaf's double buffer, one atomic add per
//     ID) against a Leaf-style allocator (Leaf's SegmentIDGenImpl: a
//     read-write lock around an atomic counter, the same double buffer and
//     prefetch at 10%), both drawing ranges over RPC from a tangram server
//     child process (SQLite store), on 1 and 8 goroutines;
//   - the server's IDs over RPC, one ID per call, paced open-loop at
//     -rate calls/s: p50 and p99 from each call's scheduled time.
//
// Systems take turns going first over -rounds rounds; each row is a
// median with its spread; the last line is JSON.
//
//	go run ./bench/idgen           # 3 s per case, 3 rounds
//	go run ./bench/idgen -quick    # 1 s per case, 3 rounds
package main

import (
	"context"
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

	"github.com/bwmarrin/snowflake"
	"github.com/sony/sonyflake"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
	"github.com/tangram-dev/tangram/idgen"
)

const token = "tgm_benchidgentoken0000000000000000000"

func main() {
	quick := flag.Bool("quick", false, "1 s per case")
	dur := flag.Duration("d", 3*time.Second, "time per case and system")
	reps := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	rate := flag.Int("rate", 50_000, "RPC calls per second in the paced case")
	bin := flag.String("bin", "", "a built tangram binary (default: build ./cmd/tangram)")
	flag.Parse()
	if *quick {
		*dur = time.Second
	}
	if err := run(*dur, *reps, *rate, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench/idgen:", err)
		os.Exit(1)
	}
}

type system struct {
	name string
	// next returns a function issuing one ID (one per goroutine).
	next func() func() (int64, error)
}

// drive calls next on g goroutines for d: IDs per second and errors.
func drive(d time.Duration, g int, mk func() func() (int64, error)) (float64, int) {
	var n, errs atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for range g {
		next := mk()
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := int64(0)
			for !stop.Load() {
				for range 256 {
					if _, err := next(); err != nil {
						errs.Add(1)
					}
				}
				local += 256
			}
			n.Add(local)
		}()
	}
	time.Sleep(d) // sleep-ok: the measured interval
	stop.Store(true)
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), int(errs.Load())
}

func run(d time.Duration, reps, rate int, bin string) error {
	dir, err := os.MkdirTemp("", "bench-idgen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin, err = tangrambin.Build(dir, bin); err != nil {
		return err
	}
	httpAddr, err1 := tangrambin.FreeAddr()
	rpcAddr, err2 := tangrambin.FreeAddr()
	if err1 != nil || err2 != nil {
		return fmt.Errorf("ports: %v %v", err1, err2)
	}
	srv := exec.Command(bin, "server", "--http", httpAddr, "--rpc", rpcAddr, "--broker", "off", "--kv", "off", "--otlp-http", "off", "--otlp-grpc", "off",
		"--components", "id", "--data", filepath.Join(dir, "data"), "--log-level", "error")
	srv.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	var c *idgen.Client
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err = idgen.Dial(ctx, idgen.ClientConfig{Servers: []string{rpcAddr}, Token: token, Logger: quiet})
		if err == nil {
			if _, err = c.Next(ctx, "warmup", 1); err == nil {
				break
			}
			_ = c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // sleep-ok: the server is starting
	}
	defer c.Close()

	ours, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Twitter(), Fixed: map[string]int64{"datacenter": 1, "worker": 1}})
	if err != nil {
		return err
	}
	bw, err := snowflake.NewNode(33)
	if err != nil {
		return err
	}
	sf, err := sonyflake.New(sonyflake.Settings{MachineID: func() (uint16, error) { return 1, nil }})
	if err != nil {
		return err
	}
	snowSystems := []system{
		{"tangram idgen.Snowflake (twitter layout)", func() func() (int64, error) { return ours.Next }},
		{"bwmarrin/snowflake " + spread.Version("github.com/bwmarrin/snowflake"), func() func() (int64, error) {
			return func() (int64, error) { return bw.Generate().Int64(), nil }
		}},
		{"sony/sonyflake " + spread.Version("github.com/sony/sonyflake") + " (cap 25,600/s)", func() func() (int64, error) {
			return func() (int64, error) { id, err := sf.NextID(); return int64(id), err }
		}},
	}
	var tag atomic.Int64
	segSystems := []system{
		{"tangram idgen.Segments (atomic add, double buffer)", nil},
		{"Leaf-style allocator (RW lock + atomic, double buffer)", nil},
	}
	// Each measurement gets a fresh allocator and tag, so every run
	// starts from the same cold state (first range of step 1,000).
	segMake := []func() (func() func() (int64, error), func()){
		func() (func() func() (int64, error), func()) {
			segs := c.Segments()
			a := segs.Alloc(fmt.Sprintf("bench-%d", tag.Add(1)))
			return func() func() (int64, error) { return func() (int64, error) { return a.Next(ctx) } }, func() { _ = segs.Close() }
		},
		func() (func() func() (int64, error), func()) {
			l := newLeaf(c.Segment, fmt.Sprintf("bench-%d", tag.Add(1)))
			return func() func() (int64, error) { return l.next }, l.close
		},
	}

	fmt.Printf("| case | system | IDs/s | errors |\n| --- | --- | --- | --- |\n")
	var rows []spread.Row
	for _, g := range []int{1, 8} {
		cas := fmt.Sprintf("snowflake %d goroutine(s)", g)
		res := map[string][]float64{}
		errs := map[string]int{}
		for r := range reps {
			for _, sys := range spread.Order(snowSystems, r) {
				fmt.Fprintf(os.Stderr, "round %d/%d %s: %s …\n", r+1, reps, cas, sys.name)
				rate, e := drive(d, g, sys.next)
				res[sys.name] = append(res[sys.name], rate)
				errs[sys.name] += e
			}
		}
		rows = append(rows, table(cas, snowSystems, res, errs)...)
	}
	for _, g := range []int{1, 8} {
		cas := fmt.Sprintf("segments %d goroutine(s)", g)
		res := map[string][]float64{}
		errs := map[string]int{}
		for r := range reps {
			idx := []int{0, 1}
			for _, i := range spread.Order(idx, r) {
				sys := segSystems[i]
				fmt.Fprintf(os.Stderr, "round %d/%d %s: %s …\n", r+1, reps, cas, sys.name)
				mk, closeFn := segMake[i]()
				rate, e := drive(d, g, mk)
				closeFn()
				res[sys.name] = append(res[sys.name], rate)
				errs[sys.name] += e
			}
		}
		rows = append(rows, table(cas, segSystems, res, errs)...)
	}
	// Paced RPC: one ID per call at `rate` calls/s.
	var p50s, p99s, callP99s, achieved []float64
	rpcErrs := 0
	for r := range reps {
		fmt.Fprintf(os.Stderr, "round %d/%d RPC Next at %d/s …\n", r+1, reps, rate)
		p50, p99, cp99, got, e := paced(ctx, c, d, rate)
		p50s, p99s, callP99s, achieved = append(p50s, p50), append(p99s, p99), append(callP99s, cp99), append(achieved, got)
		rpcErrs += e
	}
	fmt.Printf("\n| case | calls/s achieved | p50 from schedule (ms) | p99 from schedule (ms) | p99 of the call alone (ms) | errors |\n| --- | --- | --- | --- | --- | --- |\n")
	fmt.Printf("| server Next over RPC, 1 ID per call, paced at %d/s | %s | %s | %s | %s | %d |\n", rate,
		spread.Summarise(achieved).Format("%.0f"), spread.Summarise(p50s).Format("%.3f"), spread.Summarise(p99s).Format("%.3f"),
		spread.Summarise(callP99s).Format("%.3f"), rpcErrs)
	p99 := spread.Summarise(p99s)
	rows = append(rows, spread.Row{Case: fmt.Sprintf("rpc next p99 ms at %d/s", rate), Ours: p99.Median, Peer: 1.0,
		Ratio: math.Round(100*1.0/p99.Median) / 100, Rounds: p99.N, Errors: rpcErrs, Note: "peer column is the 1 ms goal; ratio = goal / ours"})
	spread.Print("idgen", "bwmarrin/snowflake, sony/sonyflake, Leaf-style segment allocator", rows, nil)
	return nil
}

// table prints a case's rows and returns its JSON rows (ours against each
// other system).
func table(cas string, systems []system, res map[string][]float64, errs map[string]int) []spread.Row {
	var rows []spread.Row
	base := systems[0].name
	for _, sys := range systems {
		fmt.Printf("| %s | %s | %s | %d |\n", cas, sys.name, spread.Summarise(res[sys.name]).Format("%.0f"), errs[sys.name])
		if sys.name == base {
			continue
		}
		rows = append(rows, spread.NewRow(cas+" vs "+sys.name, spread.Summarise(res[base]).Median, spread.Summarise(res[sys.name]).Median,
			spread.Ratios(res[base], res[sys.name]), errs[base]+errs[sys.name]))
	}
	return rows
}

// paced calls Next(tag, 1) at rate/s from 64 goroutines (calls share the
// client's one multiplexed connection), each call at its scheduled time;
// latency counts from that time (open loop), so a call that could not
// start on time counts its wait.
func paced(ctx context.Context, c *idgen.Client, d time.Duration, rate int) (p50, p99, callP99, achieved float64, errs int) {
	const workers = 64
	per := time.Duration(float64(time.Second) * workers / float64(rate))
	var mu sync.Mutex
	var lat, callLat []time.Duration
	var nerr atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, int(d/per)+1)
			calls := make([]time.Duration, 0, int(d/per)+1)
			at := start.Add(per * time.Duration(w) / workers)
			for at.Before(end) {
				if wait := time.Until(at); wait > 0 {
					time.Sleep(wait) // sleep-ok: pacing to the schedule
				}
				sent := time.Now()
				if _, err := c.Next(ctx, "paced", 1); err != nil {
					nerr.Add(1)
				}
				mine = append(mine, time.Since(at))
				calls = append(calls, time.Since(sent))
				at = at.Add(per)
			}
			mu.Lock()
			lat = append(lat, mine...)
			callLat = append(callLat, calls...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	slices.Sort(callLat)
	if len(lat) == 0 {
		return math.NaN(), math.NaN(), math.NaN(), 0, int(nerr.Load())
	}
	q := func(xs []time.Duration, p float64) float64 { return float64(xs[int(p*float64(len(xs)-1))]) / 1e6 }
	return q(lat, 0.5), q(lat, 0.99), q(callLat, 0.99), float64(len(lat)) / el.Seconds(), int(nerr.Load())
}

// leaf is Leaf's segment allocator (SegmentIDGenImpl) in Go: a buffer of
// two segments under a read-write lock; an ID is an atomic increment
// under the read lock; at 10% use of the current segment the next is
// loaded by a background thread; the switch takes the write lock.
type leaf struct {
	src   idgen.SegmentSource
	tag   string
	mu    sync.RWMutex
	segs  [2]*leafSeg
	cur   int
	ready bool // segs[1-cur] is loaded
	load  atomic.Bool
	wg    sync.WaitGroup
	step  int64
}

type leafSeg struct {
	value      atomic.Int64
	max, start int64
}

func newLeaf(src idgen.SegmentSource, tag string) *leaf {
	l := &leaf{src: src, tag: tag}
	sg, err := src(context.Background(), tag, 0)
	if err != nil {
		panic(err)
	}
	l.segs[0] = &leafSeg{max: sg.End, start: sg.Start}
	l.segs[0].value.Store(sg.Start)
	l.step = sg.End - sg.Start
	return l
}

func (l *leaf) next() (int64, error) {
	for {
		l.mu.RLock()
		s := l.segs[l.cur]
		if !l.ready && s.max-s.value.Load() < 9*(s.max-s.start)/10 && l.load.CompareAndSwap(false, true) {
			l.wg.Add(1)
			go l.fetch()
		}
		v := s.value.Add(1) - 1
		if v < s.max {
			l.mu.RUnlock()
			return v, nil
		}
		l.mu.RUnlock()
		// Leaf: wait for the loading thread, then switch under the write lock.
		for l.load.Load() {
			time.Sleep(10 * time.Microsecond) // sleep-ok: Leaf's waitAndSleep
		}
		l.mu.Lock()
		if s == l.segs[l.cur] {
			switch {
			case l.ready:
				l.cur, l.ready = 1-l.cur, false
			case l.load.CompareAndSwap(false, true): // the last fetch failed: again
				l.wg.Add(1)
				go l.fetch()
			}
		}
		l.mu.Unlock()
	}
}

func (l *leaf) fetch() {
	defer l.wg.Done()
	defer l.load.Store(false)
	l.step = min(2*l.step, 1_000_000) // Leaf's dynamic step when a segment lasts < 15 min
	sg, err := l.src(context.Background(), l.tag, l.step)
	if err != nil {
		return
	}
	s := &leafSeg{max: sg.End, start: sg.Start}
	s.value.Store(sg.Start)
	l.mu.Lock()
	l.segs[1-l.cur], l.ready = s, true
	l.mu.Unlock()
}

func (l *leaf) close() { l.wg.Wait() }
