// Command mq benchmarks Tangram's message queue against NATS JetStream
// (file storage, embedded in this process like our broker's server) on
// loopback, one system at a time (each started fresh, stopped, and its
// writes synced before the next), the systems taking turns going first over
// -rounds rounds: publish throughput with 1 and 4 producers under async and
// sync durability (our 4-queue topic against 1 and 4 streams; under sync,
// also JetStream at its default durability, as its users get throughput),
// consume throughput (1 queue against 1 stream, 4 against 4; JetStream
// through its pipelined Consume API), and end-to-end latency at three
// rates. Sync means an acknowledged message is fsynced: our broker's group
// commit vs JetStream's sync_interval: always; async is each one's default
// (our 500 ms flush interval, JetStream's 2 min sync interval). Medians and
// spreads are printed, then one JSON line.
//
//	go run ./bench/mq [-quick]
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	jsapi "github.com/nats-io/nats.go/jetstream"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server"
)

const token = "tgm_bench-token-0123456789abcdef0123"

type result struct {
	MsgsPerSec float64 `json:"msgs_per_sec,omitempty"`
	MBPerSec   float64 `json:"mb_per_sec,omitempty"`
	P50ms      float64 `json:"p50_ms,omitempty"`
	P99ms      float64 `json:"p99_ms,omitempty"`
	P999ms     float64 `json:"p999_ms,omitempty"`
	Maxms      float64 `json:"max_ms,omitempty"`
	Messages   int     `json:"messages"`
	Errors     int64   `json:"errors"`
}

// system is one side: Tangram or JetStream, at one durability.
type system interface {
	name() string
	publish(ctx context.Context, topic string, producers, n int, body []byte) (result, error)
	consume(ctx context.Context, topic string, n int) (result, error)
	e2e(ctx context.Context, topic string, rate int, d time.Duration, body []byte) (result, error)
	close()
}

// sysDef starts one measured system, fresh, in dir.
type sysDef struct {
	name, note string
	start      func(dir string) system
}

// mqCase is one comparison: the first system is ours, each other a peer
// row; metric says what a round yields.
type mqCase struct {
	name    string
	systems []sysDef
	run     func(s system, topic string) (result, error)
	latency bool // compare p99 (lower is better) instead of msg/s
}

func main() {
	quick := flag.Bool("quick", false, "fewer messages per round (3 rounds still)")
	size := flag.Int("size", 1024, "message body bytes")
	nAsync := flag.Int("n", 200_000, "messages per async publish run")
	nSync := flag.Int("n-sync", 40_000, "messages per sync publish run")
	rounds := flag.Int("rounds", 3, "rounds of each case; the systems take turns going first; medians are reported")
	rates := flag.String("rates", "1000,5000,20000", "messages per second for end-to-end latency")
	e2eDur := flag.Duration("e2e", 10*time.Second, "end-to-end latency run length")
	only := flag.String("case", "", "run only cases whose name contains this")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (client and broker) here")
	flag.Parse()
	// As `tangram server` and `tangram broker` run (GOGC 400 unless set);
	// both systems run in this process (one at a time), so both get it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	if *quick {
		*nAsync, *nSync, *e2eDur = 100_000, 20_000, 4*time.Second
	}
	body := make([]byte, *size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	base, err := os.MkdirTemp("", "bench-mq-")
	check(err)
	defer os.RemoveAll(base)
	ctx := context.Background()
	sz := fmt.Sprintf("%dKB", *size/1024)
	if *size < 1024 {
		sz = fmt.Sprintf("%dB", *size)
	}
	ours := func(mode string, queues int) sysDef {
		return sysDef{fmt.Sprintf("tangram %d queue(s) %s", queues, mode), map[string]string{"async": "flush every 500 ms", "sync": "group commit: fsync before ack, batches of up to 256 per RPC"}[mode],
			func(dir string) system { return startTangram(ctx, dir, mode, queues) }}
	}
	js := func(mode string, streams int) sysDef {
		return sysDef{fmt.Sprintf("jetstream %d stream(s) %s", streams, mode), map[string]string{"async": "default: fsync every 2 min", "sync": "sync_interval always: fsync per message"}[mode],
			func(dir string) system { return startJetStream(dir, mode, streams) }}
	}
	var cases []mqCase
	for _, mode := range []string{"async", "sync"} {
		n := *nAsync
		if mode == "sync" {
			n = *nSync
		}
		for _, p := range []int{1, 4} {
			peers := []sysDef{ours(mode, 4), js(mode, 1), js(mode, 4)}
			if mode == "sync" {
				peers = append(peers, js("async", 4)) // best of each: JetStream as its users run it for throughput
			}
			cases = append(cases, mqCase{name: fmt.Sprintf("pub-%s-%s-p%d", sz, mode, p), systems: peers,
				run: func(s system, t string) (result, error) { return s.publish(ctx, t, p, n, body) }})
		}
	}
	for _, q := range []int{1, 4} {
		cases = append(cases, mqCase{name: fmt.Sprintf("consume-%s-%dq", sz, q), systems: []sysDef{ours("async", q), js("async", q)},
			run: func(s system, t string) (result, error) {
				pub, err := s.publish(ctx, t, 4, *nAsync, body)
				if err != nil {
					return result{}, err
				}
				return s.consume(ctx, t, *nAsync-int(pub.Errors)) // what was stored
			}})
	}
	for _, f := range strings.Split(*rates, ",") {
		var rate int
		if _, err := fmt.Sscan(f, &rate); err != nil || rate <= 0 {
			check(fmt.Errorf("-rates %q: want messages per second", *rates))
		}
		cases = append(cases, mqCase{name: fmt.Sprintf("e2e-%s-%dk", sz, rate/1000), systems: []sysDef{ours("async", 4), js("async", 4)}, latency: true,
			run: func(s system, t string) (result, error) { return s.e2e(ctx, t, rate, *e2eDur, body) }})
	}

	fmt.Printf("bench/mq: %s messages; async %d, sync %d per publish run; e2e %v at %s msg/s; %d rounds, systems alternating, one at a time (each started fresh, stopped and its writes synced before the next); nats-server %s, nats.go %s; GOGC 400 for both (one process)\n\n",
		sz, *nAsync, *nSync, *e2eDur, *rates, *rounds, spread.Version("github.com/nats-io/nats-server/v2"), spread.Version("github.com/nats-io/nats.go"))
	fmt.Println("| case | system | durability | msg/s | MB/s | p50 ms | p99 ms | p999 ms | errors |")
	fmt.Println("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	var rows []spread.Row
	seq := 0
	for _, c := range cases {
		if *only != "" && !strings.Contains(c.name, *only) {
			continue
		}
		res := map[string][]result{}
		for r := range *rounds {
			for _, sd := range spread.Order(c.systems, r) {
				seq++
				s := sd.start(filepath.Join(base, fmt.Sprintf("s%d", seq)))
				o, err := c.run(s, fmt.Sprintf("bench%d", seq))
				s.close()
				syscall.Sync() // its writeback done before the next system runs
				check(err)
				fmt.Fprintf(os.Stderr, "%s round %d %s: %.0f msg/s p50 %.2f p99 %.2f p999 %.2f ms errors %d\n", c.name, r+1, sd.name, o.MsgsPerSec, o.P50ms, o.P99ms, o.P999ms, o.Errors)
				res[sd.name] = append(res[sd.name], o)
			}
		}
		fig := func(name string, f func(result) float64) []float64 {
			var xs []float64
			for _, r := range res[name] {
				xs = append(xs, f(r))
			}
			return xs
		}
		rate := func(r result) float64 { return r.MsgsPerSec }
		p99 := func(r result) float64 { return r.P99ms }
		errs := func(name string) int {
			t := 0
			for _, r := range res[name] {
				t += int(r.Errors)
			}
			return t
		}
		for _, sd := range c.systems {
			of := func(f func(result) float64) string { return spread.Summarise(fig(sd.name, f)).Format("%.0f") }
			ofms := func(f func(result) float64) string { return spread.Summarise(fig(sd.name, f)).Format("%.2f") }
			if c.latency {
				fmt.Printf("| %s | %s | %s | | | %s | %s | %s | %d |\n", c.name, sd.name, sd.note, ofms(func(r result) float64 { return r.P50ms }), ofms(p99), ofms(func(r result) float64 { return r.P999ms }), errs(sd.name))
			} else {
				fmt.Printf("| %s | %s | %s | %s | %s | | | | %d |\n", c.name, sd.name, sd.note, of(rate), ofms(func(r result) float64 { return r.MBPerSec }), errs(sd.name))
			}
		}
		us := c.systems[0].name
		for _, peer := range c.systems[1:] {
			var ratios []float64
			if c.latency {
				ratios = spread.Ratios(fig(peer.name, p99), fig(us, p99))
			} else {
				ratios = spread.Ratios(fig(us, rate), fig(peer.name, rate))
			}
			summary := func(name string) any {
				if c.latency {
					return map[string]any{"p50_ms": spread.Summarise(fig(name, func(r result) float64 { return r.P50ms })), "p99_ms": spread.Summarise(fig(name, p99)),
						"p999_ms": spread.Summarise(fig(name, func(r result) float64 { return r.P999ms }))}
				}
				return map[string]any{"msgs_per_sec": spread.Summarise(fig(name, rate))}
			}
			row := spread.NewRow(c.name+" vs "+peer.name, summary(us), summary(peer.name), ratios, errs(us)+errs(peer.name))
			row.Note = us + " (" + c.systems[0].note + ") vs " + peer.name + " (" + peer.note + ")"
			rows = append(rows, row)
			fmt.Fprintf(os.Stderr, "%s: ratio %.2f× (%.2f–%.2f)\n", row.Case, row.Ratio, row.RatioMin, row.RatioMax)
		}
	}
	fmt.Println("\n(median of the rounds, min–max in brackets; latency rows compare p99: the peer's over ours)")
	for _, r := range rows {
		fmt.Printf("%s: **%.2f×** (%.2f–%.2f)\n", r.Case, r.Ratio, r.RatioMin, r.RatioMax)
	}
	spread.Print("mq", "nats-server "+spread.Version("github.com/nats-io/nats-server/v2")+" JetStream (file store, embedded)", rows, nil)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/mq:", err)
		os.Exit(1)
	}
}

func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds)-1) * p)
	return float64(ds[i].Microseconds()) / 1000
}

// --- Tangram ---

type tangram struct {
	srv    *server.Server
	addr   string
	queues int
}

func startTangram(ctx context.Context, dir, mode string, queues int) *tangram {
	srv, err := server.New(server.Config{HTTPAddr: "127.0.0.1:0", RPCAddr: "127.0.0.1:0", BrokerAddr: "127.0.0.1:0", BrokerFlush: mode,
		BrokerSegmentSize: 256 << 20, DataDir: dir, BootstrapToken: token, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	check(err)
	check(srv.Start(ctx))
	return &tangram{srv: srv, addr: srv.RPCAddr(), queues: queues}
}

func (t *tangram) name() string { return "tangram" }
func (t *tangram) close()       { t.srv.Close() }

func (t *tangram) client(ctx context.Context) (*mq.Client, error) {
	return mq.NewClient(ctx, mq.Config{Servers: []string{t.addr}, Token: token, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func (t *tangram) publish(ctx context.Context, topic string, producers, n int, body []byte) (result, error) {
	c, err := t.client(ctx)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	if err := c.CreateTopic(ctx, topic, t.queues, false); err != nil {
		return result{}, err
	}
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pc, err := t.client(ctx)
			if err != nil {
				errs.Add(int64(n / producers))
				return
			}
			defer pc.Close()
			pr, _ := pc.NewProducer(mq.ProducerConfig{})
			window := make(chan struct{}, 2048)
			for i := 0; i < n/producers; i++ {
				window <- struct{}{}
				pr.SendAsync(ctx, &mq.Message{Topic: topic, Body: body}, func(_ *mq.SendResult, err error) {
					if err != nil {
						errs.Add(1)
					}
					<-window
				})
			}
			pr.Close()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	ok := int64(n) - errs.Load() // failed sends do not count
	return result{MsgsPerSec: float64(ok) / el.Seconds(), MBPerSec: float64(ok*int64(len(body))) / el.Seconds() / 1e6, Messages: n, Errors: errs.Load()}, nil
}

func (t *tangram) consume(ctx context.Context, topic string, n int) (result, error) {
	c, err := t.client(ctx)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "bench-" + topic, PullBatch: 256, Concurrency: t.queues, LongPoll: time.Second})
	if err != nil {
		return result{}, err
	}
	var got atomic.Int64
	done := make(chan struct{})
	var bytes atomic.Int64
	check(cs.Subscribe(topic, nil, func(ctx context.Context, m *mq.Message) error {
		bytes.Add(int64(len(m.Body)))
		if got.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}))
	start := time.Now()
	if err := cs.Start(ctx); err != nil {
		return result{}, err
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return result{}, fmt.Errorf("tangram consume: %d of %d after 5 min", got.Load(), n)
	}
	el := time.Since(start)
	cs.Close()
	return result{MsgsPerSec: float64(n) / el.Seconds(), MBPerSec: float64(bytes.Load()) / el.Seconds() / 1e6, Messages: n}, nil
}

func (t *tangram) e2e(ctx context.Context, topic string, rate int, d time.Duration, body []byte) (result, error) {
	c, err := t.client(ctx)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	if err := c.CreateTopic(ctx, topic, t.queues, false); err != nil {
		return result{}, err
	}
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "e2e-" + topic, FromLatest: false, Concurrency: 4, LongPoll: time.Second})
	if err != nil {
		return result{}, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	debug := os.Getenv("E2E_DEBUG") != ""
	var received atomic.Int64
	measureFrom := time.Now().Add(time.Hour) // set when sending starts
	check(cs.Subscribe(topic, nil, func(ctx context.Context, m *mq.Message) error {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Body)))
		d := time.Since(sent)
		received.Add(1)
		mu.Lock()
		if !sent.Before(measureFrom) {
			lat = append(lat, d)
		}
		mu.Unlock()
		if debug && d > 2*time.Millisecond {
			fmt.Fprintf(os.Stderr, "slow %v sent %s stored +%dms q%d\n", d, sent.Format("05.000000"), m.StoredAt.Sub(sent).Milliseconds(), m.Queue)
		}
		return nil
	}))
	if err := cs.Start(ctx); err != nil {
		return result{}, err
	}
	defer cs.Close()
	time.Sleep(500 * time.Millisecond) // the consumer holds its queues
	pc, err := t.client(ctx)
	if err != nil {
		return result{}, err
	}
	defer pc.Close()
	pr, _ := pc.NewProducer(mq.ProducerConfig{})
	var errs atomic.Int64
	mu.Lock()
	measureFrom = time.Now().Add(e2eWarmup)
	mu.Unlock()
	n := paced(rate, e2eWarmup+d, func() {
		b := append([]byte(nil), body...)
		binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
		if os.Getenv("E2E_SYNC") != "" {
			if _, err := pr.Send(ctx, &mq.Message{Topic: topic, Body: b}); err != nil {
				errs.Add(1)
			}
			return
		}
		pr.SendAsync(ctx, &mq.Message{Topic: topic, Body: b}, func(_ *mq.SendResult, err error) {
			if err != nil {
				errs.Add(1)
			}
		})
	})
	pr.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && received.Load() < int64(n)-errs.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return result{P50ms: percentile(lat, 0.5), P99ms: percentile(lat, 0.99), P999ms: percentile(lat, 0.999), Maxms: percentile(lat, 1), Messages: len(lat), Errors: errs.Load() + int64(n) - received.Load()}, nil
}

// e2eWarmup is sent before end-to-end latency is measured (both systems):
// connections, first segments and page faults, goroutine stacks.
const e2eWarmup = time.Second

// paced calls f rate times a second for d, in 1 ms ticks; it returns the calls.
func paced(rate int, d time.Duration, f func()) int {
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		want := int(time.Since(start).Seconds() * float64(rate))
		for ; n < want; n++ {
			f()
		}
		time.Sleep(time.Millisecond)
	}
	return n
}

// --- JetStream ---

// jetstream is an embedded nats-server with JetStream; streams is how many
// streams a topic gets (our topics have queues; a stream is JetStream's
// unit of ordering and parallelism, so 4 queues compare with 4 streams).
type jetstream struct {
	ns      *natsserver.Server
	url     string
	sync    bool
	streams int
}

func startJetStream(dir, mode string, streams int) *jetstream {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		SyncAlways: mode == "sync", JetStreamMaxMemory: 1 << 30, JetStreamMaxStore: 64 << 30, MaxPayload: 8 << 20}
	ns, err := natsserver.NewServer(opts)
	check(err)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		check(fmt.Errorf("nats-server did not start"))
	}
	return &jetstream{ns: ns, url: ns.ClientURL(), sync: mode == "sync", streams: streams}
}

func (j *jetstream) name() string { return "jetstream" }
func (j *jetstream) close()       { j.ns.Shutdown(); j.ns.WaitForShutdown() }

func streamName(topic string, i int) string { return fmt.Sprintf("%s_%d", topic, i) }
func subject(topic string, i int) string    { return fmt.Sprintf("%s.%d.m", topic, i) }

// setup creates the topic's streams.
func (j *jetstream) setup(ctx context.Context, topic string) error {
	nc, err := nats.Connect(j.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jsapi.New(nc)
	if err != nil {
		return err
	}
	for i := range j.streams {
		if _, err := js.CreateStream(ctx, jsapi.StreamConfig{Name: streamName(topic, i), Subjects: []string{fmt.Sprintf("%s.%d.>", topic, i)}, Storage: jsapi.FileStorage}); err != nil {
			return err
		}
	}
	return nil
}

// publish sends n messages from producers connections with PublishAsync
// (up to 2,048 in flight each, as ours), spread over the streams.
func (j *jetstream) publish(ctx context.Context, topic string, producers, n int, body []byte) (result, error) {
	if err := j.setup(ctx, topic); err != nil {
		return result{}, err
	}
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := nats.Connect(j.url)
			if err != nil {
				errs.Add(int64(n / producers))
				return
			}
			defer nc.Close()
			js, err := jsapi.New(nc, jsapi.WithPublishAsyncMaxPending(2048))
			if err != nil {
				errs.Add(int64(n / producers))
				return
			}
			futs := make([]jsapi.PubAckFuture, 0, n/producers)
			for i := 0; i < n/producers; i++ {
				f, err := js.PublishAsync(subject(topic, (p+i)%j.streams), body)
				if err != nil {
					errs.Add(1)
					continue
				}
				futs = append(futs, f)
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(5 * time.Minute):
			}
			for _, f := range futs {
				select {
				case <-f.Ok():
				case <-f.Err():
					errs.Add(1)
				default:
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	ok := int64(n) - errs.Load()
	return result{MsgsPerSec: float64(ok) / el.Seconds(), MBPerSec: float64(ok*int64(len(body))) / el.Seconds() / 1e6, Messages: n, Errors: errs.Load()}, nil
}

// consume reads n stored messages with one pipelined consumer per stream
// (Consume, its default prefetch of 500 messages), acknowledging every
// 256th and the last (AckAll), on one connection as our client uses one.
func (j *jetstream) consume(ctx context.Context, topic string, n int) (result, error) {
	nc, err := nats.Connect(j.url)
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := jsapi.New(nc)
	if err != nil {
		return result{}, err
	}
	var got, bytes atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	var ccs []jsapi.ConsumeContext
	for i := range j.streams {
		cons, err := js.CreateOrUpdateConsumer(ctx, streamName(topic, i), jsapi.ConsumerConfig{Durable: "bench", AckPolicy: jsapi.AckAllPolicy})
		if err != nil {
			return result{}, err
		}
		var mine atomic.Int64
		cc, err := cons.Consume(func(m jsapi.Msg) {
			bytes.Add(int64(len(m.Data())))
			k := mine.Add(1)
			total := got.Add(1)
			if k%256 == 0 || total >= int64(n) {
				_ = m.Ack()
			}
			if total == int64(n) {
				close(done)
			}
		})
		if err != nil {
			return result{}, err
		}
		ccs = append(ccs, cc)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return result{}, fmt.Errorf("jetstream consume: %d of %d after 5 min", got.Load(), n)
	}
	el := time.Since(start)
	for _, cc := range ccs {
		cc.Stop()
	}
	return result{MsgsPerSec: float64(n) / el.Seconds(), MBPerSec: float64(bytes.Load()) / el.Seconds() / 1e6, Messages: n}, nil
}

// e2e sends rate messages a second (PublishAsync, spread over the streams)
// to running consumers (Consume, one per stream, each message acknowledged)
// and times send → handler.
func (j *jetstream) e2e(ctx context.Context, topic string, rate int, d time.Duration, body []byte) (result, error) {
	if err := j.setup(ctx, topic); err != nil {
		return result{}, err
	}
	cn, err := nats.Connect(j.url)
	if err != nil {
		return result{}, err
	}
	defer cn.Close()
	cjs, err := jsapi.New(cn)
	if err != nil {
		return result{}, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	var received atomic.Int64
	measureFrom := time.Now().Add(time.Hour)
	for i := range j.streams {
		cons, err := cjs.CreateOrUpdateConsumer(ctx, streamName(topic, i), jsapi.ConsumerConfig{Durable: "e2e", AckPolicy: jsapi.AckExplicitPolicy})
		if err != nil {
			return result{}, err
		}
		cc, err := cons.Consume(func(m jsapi.Msg) {
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data())))
			d := time.Since(sent)
			received.Add(1)
			mu.Lock()
			if !sent.Before(measureFrom) {
				lat = append(lat, d)
			}
			mu.Unlock()
			_ = m.Ack()
		})
		if err != nil {
			return result{}, err
		}
		defer cc.Stop()
	}
	pn, err := nats.Connect(j.url)
	if err != nil {
		return result{}, err
	}
	defer pn.Close()
	pjs, err := jsapi.New(pn, jsapi.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return result{}, err
	}
	var errs atomic.Int64
	mu.Lock()
	measureFrom = time.Now().Add(e2eWarmup)
	mu.Unlock()
	k := 0
	n := paced(rate, e2eWarmup+d, func() {
		b := append([]byte(nil), body...)
		binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
		k++
		if _, err := pjs.PublishAsync(subject(topic, k%j.streams), b); err != nil {
			errs.Add(1)
		}
	})
	<-pjs.PublishAsyncComplete()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && received.Load() < int64(n)-errs.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return result{P50ms: percentile(lat, 0.5), P99ms: percentile(lat, 0.99), P999ms: percentile(lat, 0.999), Maxms: percentile(lat, 1), Messages: len(lat), Errors: errs.Load() + int64(n) - received.Load()}, nil
}
