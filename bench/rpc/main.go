// Command rpc benchmarks Tangram RPC against grpc-go (and net/rpc as a
// floor): a 1 KB protobuf echo, server and client in separate processes on
// loopback, concurrency 1, 100 and 1000, the implementations alternating
// within each round. It prints a markdown table and, as its last line, one
// JSON object (see DESIGN.md).
//
//	go run ./bench/rpc            # 3 rounds of 10 s per case
//	go run ./bench/rpc -quick     # 3 rounds of 2 s per case
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/internal/procstat"
	trpc "github.com/tangram-dev/tangram/rpc"
)

var kinds = []string{"tangram", "grpc", "netrpc"}

func main() {
	role := flag.String("role", "", "internal: server or client")
	kind := flag.String("kind", "tangram", "internal: tangram, grpc or netrpc")
	addr := flag.String("addr", "127.0.0.1:0", "internal: address")
	conc := flag.Int("c", 100, "internal: client concurrency")
	dur := flag.Duration("d", 10*time.Second, "measured duration per run")
	size := flag.Int("size", 1024, "payload bytes")
	quick := flag.Bool("quick", false, "3 rounds of 2 s per case")
	rounds := flag.Int("rounds", 3, "rounds")
	cases := flag.String("cases", "1,100,1000", "concurrency levels")
	only := flag.String("kinds", strings.Join(kinds, ","), "implementations to run")
	procs := flag.Int("procs", 0, "GOMAXPROCS of each process (0: all cores)")
	cpuprofile := flag.String("cpuprofile", "", "internal: write a CPU profile of this process")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	var err error
	switch *role {
	case "server":
		err = serve(*kind, *addr)
	case "client":
		err = client(*kind, *addr, *conc, *dur, *size)
	default:
		if *quick {
			*rounds, *dur = 3, 2*time.Second
		}
		err = orchestrate(*rounds, *dur, *size, *cases, strings.Split(*only, ","), *procs)
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/rpc:", err)
		os.Exit(1)
	}
}

// ---- servers ----

func serve(kind, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	switch kind {
	case "tangram":
		s, err := trpc.NewServer(trpc.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxInFlight: -1})
		if err != nil {
			return err
		}
		if err := trpc.Handle(s, "bench.Echo/Echo", func(ctx context.Context, r *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
			return r, nil
		}); err != nil {
			return err
		}
		go s.Serve(ln)
		defer s.Close()
	case "grpc":
		s := grpc.NewServer()
		s.RegisterService(&grpc.ServiceDesc{
			ServiceName: "bench.Echo",
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{MethodName: "Echo", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return in, nil
			}}},
		}, struct{}{})
		go s.Serve(ln)
		defer s.Stop()
	case "netrpc":
		log.SetOutput(io.Discard) // net/rpc logs the listener's close
		s := rpc.NewServer()
		if err := s.RegisterName("Echo", new(NetEcho)); err != nil {
			return err
		}
		go s.Accept(ln)
		defer ln.Close()
	default:
		return fmt.Errorf("unknown kind %q", kind)
	}
	fmt.Println("LISTEN", ln.Addr().String())
	// Commands on stdin: "stats" prints the allocation count; EOF stops.
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "stats" {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Println("MALLOCS", ms.Mallocs)
		}
	}
	return nil
}

// NetEcho is the net/rpc service.
type NetEcho struct{}

// Echo returns its argument.
func (NetEcho) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// ---- clients ----

type result struct {
	Calls     int     `json:"calls"`
	Errors    int     `json:"errors"`
	QPS       float64 `json:"qps"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	P999      float64 `json:"p999_ms"`
	Allocs    float64 `json:"client_allocs_per_call"`
	SrvAllocs float64 `json:"server_allocs_per_call"`
	ClientMiB float64 `json:"client_peak_mib"`
	ServerMiB float64 `json:"server_peak_mib"`
}

func client(kind, addr string, conc int, dur time.Duration, size int) error {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	var call func(ctx context.Context) error
	switch kind {
	case "tangram":
		c, err := trpc.Dial(context.Background(), addr, trpc.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			return err
		}
		defer c.Close()
		req := wrapperspb.Bytes(payload)
		call = func(ctx context.Context) error {
			var resp wrapperspb.BytesValue
			if err := c.Invoke(ctx, "bench.Echo/Echo", req, &resp); err != nil {
				return err
			}
			if len(resp.Value) != size {
				return fmt.Errorf("short reply")
			}
			return nil
		}
	case "grpc":
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		req := wrapperspb.Bytes(payload)
		call = func(ctx context.Context) error {
			var resp wrapperspb.BytesValue
			if err := cc.Invoke(ctx, "/bench.Echo/Echo", req, &resp); err != nil {
				return err
			}
			if len(resp.Value) != size {
				return fmt.Errorf("short reply")
			}
			return nil
		}
	case "netrpc":
		c, err := rpc.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		call = func(ctx context.Context) error {
			var resp []byte
			if err := c.Call("Echo.Echo", payload, &resp); err != nil {
				return err
			}
			if len(resp) != size {
				return fmt.Errorf("short reply")
			}
			return nil
		}
	}
	ctx := context.Background()
	// Warm up: connections, pools, JIT-free but caches and goroutine stacks.
	warm := time.Now().Add(min(dur/4, time.Second))
	run := func(until time.Time, record bool) ([][]time.Duration, int) {
		lats := make([][]time.Duration, conc)
		errs := make([]int, conc)
		var wg sync.WaitGroup
		for g := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if record {
					lats[g] = make([]time.Duration, 0, 1<<14)
				}
				for time.Now().Before(until) {
					t0 := time.Now()
					if err := call(ctx); err != nil {
						errs[g]++
						continue
					}
					if record {
						lats[g] = append(lats[g], time.Since(t0))
					}
				}
			}()
		}
		wg.Wait()
		n := 0
		for _, e := range errs {
			n += e
		}
		return lats, n
	}
	run(warm, false)
	fmt.Println("READY")
	// Wait for the orchestrator's go (it samples the server's allocations first).
	bufio.NewReader(os.Stdin).ReadString('\n')
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	lats, nerr := run(start.Add(dur), true)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&ms1)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{Calls: len(all), Errors: nerr, QPS: float64(len(all)) / elapsed.Seconds()}
	if len(all) > 0 {
		q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))]) / 1e6 }
		r.P50, r.P99, r.P999 = q(0.50), q(0.99), q(0.999)
		r.Allocs = float64(ms1.Mallocs-ms0.Mallocs) / float64(len(all))
	}
	r.ClientMiB = peakMiB(os.Getpid())
	b, _ := json.Marshal(r)
	fmt.Println("RESULT", string(b))
	return nil
}

func peakMiB(pid int) float64 { return procstat.MiB(pid, "VmHWM") }

// ---- orchestration ----

type proc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func start(args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd, in: in, out: bufio.NewScanner(out)}, nil
}

func (p *proc) expect(prefix string) (string, error) {
	for p.out.Scan() {
		if v, ok := strings.CutPrefix(p.out.Text(), prefix+" "); ok {
			return v, nil
		}
		if p.out.Text() == prefix {
			return "", nil
		}
	}
	return "", fmt.Errorf("child exited before printing %s", prefix)
}

func (p *proc) stop() {
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func runOne(kind string, conc int, dur time.Duration, size, procs int) (result, error) {
	var r result
	pa := []string{"-role", "server", "-kind", kind, "-procs", strconv.Itoa(procs)}
	srv, err := start(pa...)
	if err != nil {
		return r, err
	}
	defer srv.stop()
	addr, err := srv.expect("LISTEN")
	if err != nil {
		return r, err
	}
	cl, err := start("-role", "client", "-kind", kind, "-addr", addr, "-c", strconv.Itoa(conc),
		"-d", dur.String(), "-size", strconv.Itoa(size), "-procs", strconv.Itoa(procs))
	if err != nil {
		return r, err
	}
	defer cl.stop()
	if _, err := cl.expect("READY"); err != nil {
		return r, err
	}
	fmt.Fprintln(srv.in, "stats")
	m0, err := srv.expect("MALLOCS")
	if err != nil {
		return r, err
	}
	fmt.Fprintln(cl.in, "go")
	line, err := cl.expect("RESULT")
	if err != nil {
		return r, err
	}
	fmt.Fprintln(srv.in, "stats")
	m1, err := srv.expect("MALLOCS")
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return r, err
	}
	a0, _ := strconv.ParseFloat(m0, 64)
	a1, _ := strconv.ParseFloat(m1, 64)
	if r.Calls > 0 {
		r.SrvAllocs = (a1 - a0) / float64(r.Calls)
	}
	r.ServerMiB = peakMiB(srv.cmd.Process.Pid)
	return r, nil
}

type row struct {
	Case     string  `json:"case"`
	Ours     result  `json:"ours"`
	Peer     result  `json:"peer"`
	Floor    result  `json:"floor"`
	Ratio    float64 `json:"ratio"` // median of the rounds' ratios
	RatioMin float64 `json:"ratio_min"`
	RatioMax float64 `json:"ratio_max"`
	P99R     float64 `json:"p99_ratio"`
	Errors   int     `json:"errors,omitempty"`
}

func orchestrate(rounds int, dur time.Duration, size int, cases string, only []string, procs int) error {
	fmt.Printf("bench/rpc: %d-byte protobuf echo, %d round(s) of %v per case, GOMAXPROCS %d, %d CPUs\n",
		size, rounds, dur, max(procs, runtime.NumCPU()), runtime.NumCPU())
	var rows []row
	for _, cs := range strings.Split(cases, ",") {
		conc, err := strconv.Atoi(cs)
		if err != nil {
			return fmt.Errorf("-cases: %w", err)
		}
		res := map[string][]result{}
		for round := range rounds {
			for _, k := range spread.Order(only, round) {
				r, err := runOne(k, conc, dur, size, procs)
				if err != nil {
					return fmt.Errorf("%s c%d: %w", k, conc, err)
				}
				fmt.Fprintf(os.Stderr, "  round %d %-8s c%-5d %9.0f qps  p50 %.3f ms  p99 %.3f ms  errors %d\n",
					round+1, k, conc, r.QPS, r.P50, r.P99, r.Errors)
				res[k] = append(res[k], r)
			}
		}
		rw := row{Case: fmt.Sprintf("unary-%dKB-c%d", size/1024, conc)}
		rw.Ours, rw.Peer, rw.Floor = median(res["tangram"]), median(res["grpc"]), median(res["netrpc"])
		qps := func(k string) []float64 {
			var xs []float64
			for _, r := range res[k] {
				xs = append(xs, r.QPS)
			}
			return xs
		}
		p99 := func(k string) []float64 {
			var xs []float64
			for _, r := range res[k] {
				xs = append(xs, r.P99)
			}
			return xs
		}
		q, l := spread.Summarise(spread.Ratios(qps("tangram"), qps("grpc"))), spread.Summarise(spread.Ratios(p99("grpc"), p99("tangram")))
		rw.Ratio, rw.RatioMin, rw.RatioMax = round2(q.Median), round2(q.Min), round2(q.Max)
		rw.P99R = round2(l.Median)
		for _, k := range only {
			for _, r := range res[k] {
				rw.Errors += r.Errors
			}
		}
		rows = append(rows, rw)
	}
	fmt.Println()
	fmt.Println("| case | impl | QPS | p50 ms | p99 ms | p999 ms | allocs/call client | allocs/call server | client MiB | server MiB |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, rw := range rows {
		for _, x := range []struct {
			name string
			r    result
		}{{"tangram", rw.Ours}, {"grpc-go", rw.Peer}, {"net/rpc", rw.Floor}} {
			if x.r.Calls == 0 {
				continue
			}
			fmt.Printf("| %s | %s | %.0f | %.3f | %.3f | %.3f | %.1f | %.1f | %.0f | %.0f |\n", rw.Case, x.name,
				x.r.QPS, x.r.P50, x.r.P99, x.r.P999, x.r.Allocs, x.r.SrvAllocs, x.r.ClientMiB, x.r.ServerMiB)
		}
		fmt.Printf("| %s | **ratio** | **%.2f×** (%.2f–%.2f) | | p99 grpc/ours **%.2f×** | | | | errors %d | |\n", rw.Case, rw.Ratio, rw.RatioMin, rw.RatioMax, rw.P99R, rw.Errors)
	}
	fmt.Printf("\n(each implementation's median round by QPS; ratios are the median of the rounds' ratios, min–max in brackets; grpc-go %s)\n", spread.Version("google.golang.org/grpc"))
	b, _ := json.Marshal(map[string]any{"bench": "rpc", "peer": "grpc-go " + spread.Version("google.golang.org/grpc"), "floor": "net/rpc", "rows": rows})
	fmt.Println(string(b))
	return nil
}

// median returns the run with the median throughput.
func median(rs []result) result {
	if len(rs) == 0 {
		return result{}
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.QPS < b.QPS:
			return -1
		case a.QPS > b.QPS:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

func round2(x float64) float64 { return float64(int(x*100+0.5)) / 100 }
