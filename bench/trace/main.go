// Command trace benchmarks Tangram's trace collector against the
// OpenTelemetry Collector, in one run on this machine:
//
//   - ingest: spans per second received over OTLP/gRPC (export requests of
//     512 spans with 20 attributes each, from -senders concurrent
//     connections sending as fast as they are answered) and written —
//     Tangram's collector into its span store, the OpenTelemetry Collector
//     core (built from the module proxy in bench/trace/otelcol: OTLP
//     receiver → batch processor → file exporter, their defaults) into its
//     file. A run ends when every acknowledged span has been written: the
//     figure is end to end, not what the receiver buffered;
//   - trace by ID: p50/p99 latency of GET /api/v1/trace/traces/{id} over
//     random stored traces, after -spans spans were ingested (the
//     OpenTelemetry Collector keeps no index: it has no such row);
//   - instrumentation: ns per HTTP server span through trace.HTTPHandler
//     (header extraction, the response wrapper, the route) against the bare
//     OpenTelemetry SDK starting and ending a span with the same
//     attributes.
//
// Systems take turns going first over -rounds rounds; each row is a median
// with its spread; the last line is JSON.
//
//	go run ./bench/trace            # 10 s of ingest per round, 10M spans for trace-by-ID
//	go run ./bench/trace -quick     # 4 s per round, 1M spans
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
)

const (
	token      = "tgm_benchtracetoken00000000000000000000"
	batchSpans = 512
	attrsEach  = 20
	exportPath = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
)

func main() {
	quick := flag.Bool("quick", false, "4 s of ingest per round, 1M spans for trace-by-ID")
	dur := flag.Duration("d", 10*time.Second, "sending time per round and system")
	rounds := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	senders := flag.Int("senders", 4, "concurrent OTLP/gRPC connections")
	spans := flag.Int("spans", 10_000_000, "spans stored before the trace-by-ID queries")
	bin := flag.String("bin", "", "a built tangram binary (default: build ./cmd/tangram)")
	otelcol := flag.String("otelcol", "", "a built otelcol (default: build bench/trace/otelcol)")
	cases := flag.String("cases", "ingest,byid,overhead", "which cases to run")
	flag.Parse()
	for _, c := range strings.Split(*cases, ",") {
		want[c] = true
	}
	if *quick {
		*dur, *spans = 4*time.Second, 1_000_000
	}
	if err := run(*dur, *rounds, *senders, *spans, *bin, *otelcol); err != nil {
		fmt.Fprintln(os.Stderr, "bench/trace:", err)
		os.Exit(1)
	}
}

// want holds the cases to run.
var want = map[string]bool{}

// rawCodec sends and receives pre-encoded protobuf bytes, so that the
// senders spend nothing on encoding: both collectors get the same bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

// request is an export request of batchSpans spans, each its own trace
// (so a store indexes as many traces as spans), with the offsets of the
// trace IDs so that each send can give them fresh values.
type request struct {
	b      []byte
	idOffs []int
}

func newRequest(svc string) request {
	var spans []byte
	var idOffs []int
	now := uint64(time.Now().UnixNano())
	for i := range batchSpans {
		var sp []byte
		sp = protowire.AppendTag(sp, 1, protowire.BytesType)
		sp = protowire.AppendVarint(sp, 16)
		tidAt := len(sp)
		sp = append(sp, make([]byte, 16)...)
		sp = protowire.AppendTag(sp, 2, protowire.BytesType)
		sp = protowire.AppendBytes(sp, []byte{1, 2, 3, 4, 5, 6, 7, byte(i)})
		sp = protowire.AppendTag(sp, 5, protowire.BytesType)
		sp = protowire.AppendString(sp, fmt.Sprintf("GET /api/orders/%d", i%16))
		sp = protowire.AppendTag(sp, 6, protowire.VarintType)
		sp = protowire.AppendVarint(sp, 2)
		sp = protowire.AppendTag(sp, 7, protowire.Fixed64Type)
		sp = protowire.AppendFixed64(sp, now)
		sp = protowire.AppendTag(sp, 8, protowire.Fixed64Type)
		sp = protowire.AppendFixed64(sp, now+uint64(1+i%50)*uint64(time.Millisecond))
		for a := range attrsEach {
			var kv []byte
			kv = protowire.AppendTag(kv, 1, protowire.BytesType)
			kv = protowire.AppendString(kv, fmt.Sprintf("attr.key.%02d", a))
			var av []byte
			if a%4 == 0 {
				av = protowire.AppendTag(av, 3, protowire.VarintType)
				av = protowire.AppendVarint(av, uint64(i*a))
			} else {
				av = protowire.AppendTag(av, 1, protowire.BytesType)
				av = protowire.AppendString(av, fmt.Sprintf("value-%d-%d", a, i%97))
			}
			kv = protowire.AppendTag(kv, 2, protowire.BytesType)
			kv = protowire.AppendBytes(kv, av)
			sp = protowire.AppendTag(sp, 9, protowire.BytesType)
			sp = protowire.AppendBytes(sp, kv)
		}
		spans = protowire.AppendTag(spans, 2, protowire.BytesType)
		spans = protowire.AppendVarint(spans, uint64(len(sp)))
		idOffs = append(idOffs, len(spans)+tidAt) // within spans
		spans = append(spans, sp...)
	}
	var svcKV []byte
	svcKV = protowire.AppendTag(svcKV, 1, protowire.BytesType)
	svcKV = protowire.AppendString(svcKV, "service.name")
	svcKV = protowire.AppendTag(svcKV, 2, protowire.BytesType)
	svcKV = protowire.AppendBytes(svcKV, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), svc))
	var res []byte
	res = protowire.AppendTag(res, 1, protowire.BytesType)
	res = protowire.AppendBytes(res, svcKV)
	var rs []byte
	rs = protowire.AppendTag(rs, 1, protowire.BytesType)
	rs = protowire.AppendBytes(rs, res)
	rs = protowire.AppendTag(rs, 2, protowire.BytesType) // scope_spans: the spans are its field 2
	rs = protowire.AppendVarint(rs, uint64(len(spans)))
	spansAt := len(rs)
	rs = append(rs, spans...)
	var out []byte
	out = protowire.AppendTag(out, 1, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(len(rs)))
	rsAt := len(out)
	out = append(out, rs...)
	for i := range idOffs {
		idOffs[i] += rsAt + spansAt
	}
	return request{b: out, idOffs: idOffs}
}

// stamp gives the request's spans fresh trace IDs: sender, sequence, span.
func (r *request) stamp(sender int, seq uint64) {
	for i, off := range r.idOffs {
		id := r.b[off : off+16]
		binary.BigEndian.PutUint64(id[0:8], uint64(sender+1)<<56|seq)
		binary.BigEndian.PutUint64(id[8:16], uint64(i)<<32|0xbe7c)
	}
}

// traceID is the ID stamp gives span i of request seq of sender.
func traceID(sender int, seq uint64, i int) string {
	var id [16]byte
	binary.BigEndian.PutUint64(id[0:8], uint64(sender+1)<<56|seq)
	binary.BigEndian.PutUint64(id[8:16], uint64(i)<<32|0xbe7c)
	return fmt.Sprintf("%x", id)
}

// rejectedOf reads ExportTraceServiceResponse.partial_success.rejected_spans.
func rejectedOf(b []byte) int64 {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			for len(v) > 0 {
				f, t, m := protowire.ConsumeTag(v)
				if m < 0 {
					return 0
				}
				v = v[m:]
				if f == 1 && t == protowire.VarintType {
					x, _ := protowire.ConsumeVarint(v)
					return int64(x)
				}
				if m = protowire.ConsumeFieldValue(f, t, v); m < 0 {
					return 0
				}
				v = v[m:]
			}
			return 0
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return 0
		}
		b = b[n:]
	}
	return 0
}

// sendResult is one ingest run.
type sendResult struct {
	accepted, rejected int64
	errors             int
	rate               float64 // spans written per second, end to end
	// whole lists, per sender, the requests accepted whole (their traces
	// are all stored; a refused request's are not).
	whole [][]uint64
}

// send exports from senders connections for d, or until limit spans were
// accepted (limit 0: no limit), then waits until written() reaches what
// was accepted.
func send(addr string, senders int, d time.Duration, limit int64, written func() (int64, error)) (sendResult, error) {
	var res sendResult
	var accepted, rejected atomic.Int64
	var errs atomic.Int64
	res.whole = make([][]uint64, senders)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	var firstErr atomic.Value
	for s := range senders {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			return res, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			req := newRequest("bench-svc")
			var reply []byte
			for seq := uint64(0); time.Now().Before(deadline); seq++ {
				if limit > 0 && accepted.Load() >= limit {
					return
				}
				req.stamp(s, seq)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := conn.Invoke(ctx, exportPath, &req.b, &reply)
				cancel()
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				r := rejectedOf(reply)
				rejected.Add(r)
				accepted.Add(batchSpans - r)
				if r == 0 {
					res.whole[s] = append(res.whole[s], seq)
				}
			}
		}()
	}
	wg.Wait()
	res.accepted, res.rejected, res.errors = accepted.Load(), rejected.Load(), int(errs.Load())
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "  first send error: %v\n", e)
	}
	// Wait for the writes to catch up (at most a minute).
	for until := time.Now().Add(time.Minute); ; {
		n, err := written()
		if err == nil && n >= res.accepted {
			break
		}
		if time.Now().After(until) {
			return res, fmt.Errorf("after a minute %d of %d accepted spans written (%v)", n, res.accepted, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.rate = float64(res.accepted) / time.Since(start).Seconds()
	return res, nil
}

// proc is a collector process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	grpc    string
	written func() (int64, error)
}

func (p *proc) stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
}

func startTangram(bin, dir string) (*proc, string, error) {
	httpAddr, _ := tangrambin.FreeAddr()
	rpcAddr, _ := tangrambin.FreeAddr()
	grpcAddr, _ := tangrambin.FreeAddr()
	cmd := exec.Command(bin, "server", "--http", httpAddr, "--rpc", rpcAddr, "--broker", "off", "--kv", "off", "--otlp-http", "off",
		"--otlp-grpc", grpcAddr, "--components", "trace", "--trace-endpoint", "off", "--data", dir, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	base := "http://" + httpAddr
	p := &proc{name: "tangram", cmd: cmd, grpc: grpcAddr}
	p.written = func() (int64, error) {
		req, _ := http.NewRequest("GET", base+"/api/v1/trace/stats", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var st struct {
			Stored int64 `json:"stored"`
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		return st.Stored, err
	}
	if err := waitUp(func() error { _, err := p.written(); return err }); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, base, nil
}

// otelcolConfig is the pipeline the collector's documentation recommends
// for receiving and keeping spans: the OTLP receiver, the batch processor
// (its defaults: 8192 spans or 200 ms), the file exporter (its default
// JSON lines); its own metrics on a pull endpoint, to see what it wrote.
func otelcolConfig(grpcAddr, metricsPort, file string) string {
	return fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
        max_recv_msg_size_mib: 64
processors:
  batch: {}
exporters:
  file:
    path: %s
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: %s
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [file]
`, grpcAddr, file, metricsPort)
}

func startOtelcol(bin, dir string) (*proc, error) {
	grpcAddr, _ := tangrambin.FreeAddr()
	maddr, _ := tangrambin.FreeAddr()
	_, port, _ := strings.Cut(maddr, ":")
	cfg := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(cfg, []byte(otelcolConfig(grpcAddr, port, filepath.Join(dir, "spans.json"))), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: "otelcol", cmd: cmd, grpc: grpcAddr}
	p.written = func() (int64, error) {
		resp, err := http.Get("http://" + maddr + "/metrics")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var n float64
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "otelcol_exporter_sent_spans") {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				n += v
			}
		}
		return int64(n), sc.Err()
	}
	if err := waitUp(func() error { _, err := p.written(); return err }); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func waitUp(check func() error) error {
	var err error
	for until := time.Now().Add(30 * time.Second); time.Now().Before(until); time.Sleep(50 * time.Millisecond) {
		if err = check(); err == nil {
			return nil
		}
	}
	return fmt.Errorf("not up after 30 s: %w", err)
}

func buildOtelcol(dir, bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	bin = filepath.Join(dir, "otelcol")
	fmt.Fprintln(os.Stderr, "building bench/trace/otelcol (the OpenTelemetry Collector; the first build takes minutes) …")
	b := exec.Command("go", "build", "-o", bin, ".")
	b.Dir = "bench/trace/otelcol"
	b.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	b.Stderr = os.Stderr
	if err := b.Run(); err != nil {
		return "", fmt.Errorf("build otelcol: %w", err)
	}
	return bin, nil
}

func run(d time.Duration, rounds, senders, nspans int, bin, otelBin string) error {
	tmp, err := os.MkdirTemp("", "bench-trace-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin, err = tangrambin.Build(tmp, bin); err != nil {
		return err
	}
	if otelBin, err = buildOtelcol(tmp, otelBin); err != nil {
		return err
	}
	var rows []spread.Row
	if want["ingest"] {
		r, err := ingest(tmp, d, rounds, senders, bin, otelBin)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if want["byid"] {
		r, err := byID(tmp, senders, nspans, bin)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if want["overhead"] {
		oursNS, bareNS := overhead(rounds)
		o, b := spread.Summarise(oursNS), spread.Summarise(bareNS)
		fmt.Printf("%-40s %22s %22s\n", "ns per HTTP server span (ours vs bare SDK)", o.Format("%.0f"), b.Format("%.0f"))
		rows = append(rows, spread.NewRow("ns per span, trace.HTTPHandler vs bare SDK", o.Median, b.Median, spread.Ratios(bareNS, oursNS), 0))
	}
	spread.Print("trace", "otelcol "+otelcolVersion(), rows, map[string]any{"senders": senders, "batch": batchSpans, "attributes": attrsEach})
	return nil
}

func ingest(tmp string, d time.Duration, rounds, senders int, bin, otelBin string) (spread.Row, error) {
	fmt.Printf("ingest: OTLP/gRPC, %d spans × %d attributes per export, %d senders, %v per round, %d rounds\n", batchSpans, attrsEach, senders, d, rounds)
	fmt.Printf("  otelcol %s: otlp receiver → batch processor (defaults) → file exporter (defaults)\n", otelcolVersion())
	type sys struct {
		name  string
		start func(dir string) (*proc, error)
	}
	systems := []sys{
		{"tangram", func(dir string) (*proc, error) { p, _, err := startTangram(bin, dir); return p, err }},
		{"otelcol", func(dir string) (*proc, error) { return startOtelcol(otelBin, dir) }},
	}
	rates := map[string][]float64{}
	errs := map[string]int{}
	for r := range rounds {
		for _, s := range spread.Order(systems, r) {
			dir := filepath.Join(tmp, fmt.Sprintf("%s-%d", s.name, r))
			os.MkdirAll(dir, 0o755)
			p, err := s.start(dir)
			if err != nil {
				return spread.Row{}, fmt.Errorf("%s: %w", s.name, err)
			}
			res, err := send(p.grpc, senders, d, 0, p.written)
			p.stop()
			os.RemoveAll(dir)
			if err != nil {
				return spread.Row{}, fmt.Errorf("%s: %w", s.name, err)
			}
			rates[s.name] = append(rates[s.name], res.rate)
			errs[s.name] += res.errors + int(res.rejected)
			fmt.Printf("  round %d %-8s %10.0f spans/s written (%d accepted, %d refused by a full queue, %d errors)\n", r+1, s.name, res.rate, res.accepted, res.rejected, res.errors)
		}
	}
	ours, peer := spread.Summarise(rates["tangram"]), spread.Summarise(rates["otelcol"])
	fmt.Printf("\n%-40s %22s %22s\n", "case", "tangram", "otelcol")
	fmt.Printf("%-40s %22s %22s\n", "ingest spans/s", ours.Format("%.0f"), peer.Format("%.0f"))
	return spread.NewRow("ingest spans/s (OTLP/gRPC, written)", ours.Median, peer.Median,
		spread.Ratios(rates["tangram"], rates["otelcol"]), errs["tangram"]+errs["otelcol"]), nil
}

// byID stores nspans spans, then times lookups of random stored traces.
func byID(tmp string, senders, nspans int, bin string) (spread.Row, error) {
	dir := filepath.Join(tmp, "byid")
	os.MkdirAll(dir, 0o755)
	p, base, err := startTangram(bin, dir)
	if err != nil {
		return spread.Row{}, err
	}
	fmt.Printf("\ntrace by ID: storing %d spans …\n", nspans)
	res, err := send(p.grpc, senders, time.Hour, int64(nspans), p.written)
	if err != nil {
		p.stop()
		return spread.Row{}, err
	}
	fmt.Printf("  stored %d spans at %.0f spans/s\n", res.accepted, res.rate)
	var lat []float64
	rng := rand.New(rand.NewPCG(1, 2))
	var qerrs int
	for range 2000 {
		s := rng.IntN(senders)
		if len(res.whole[s]) == 0 {
			continue
		}
		id := traceID(s, res.whole[s][rng.IntN(len(res.whole[s]))], rng.IntN(batchSpans))
		req, _ := http.NewRequest("GET", base+"/api/v1/trace/traces/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errors.New(resp.Status)
			}
		}
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
		if err != nil {
			qerrs++
		}
	}
	p.stop()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	fmt.Printf("%-40s %22s %22s\n", fmt.Sprintf("trace by ID over %dM spans p50/p99 ms", res.accepted/1_000_000), fmt.Sprintf("%.2f / %.2f", p50, p99), "(no index)")
	return spread.Row{Case: "trace by ID p99 ms", Ours: p99, Note: fmt.Sprintf("%d spans stored, %d queries, p50 %.2f ms", res.accepted, len(lat), p50), Errors: qerrs}, nil
}

func otelcolVersion() string {
	b, err := os.ReadFile("bench/trace/otelcol/go.mod")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "go.opentelemetry.io/collector/otelcol" {
			return f[1]
		}
	}
	return "unknown"
}
