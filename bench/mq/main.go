// Command mq benchmarks Tangram's message queue against NATS JetStream
// (file storage, embedded in this process like our broker's server) on
// loopback: publish throughput with 1 and 4 producers under async and
// sync durability, consume throughput, and end-to-end latency at a fixed
// rate. Sync means an acknowledged message is fsynced: our broker's group
// commit vs JetStream's sync_interval: always; async is each one's default
// (our 500 ms flush interval, JetStream's 2 min sync interval).
//
//	go run ./bench/mq [-quick]
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
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
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server"
)

const token = "tgm_bench-token-0123456789abcdef0123"

type result struct {
	MsgsPerSec float64 `json:"msgs_per_sec,omitempty"`
	MBPerSec   float64 `json:"mb_per_sec,omitempty"`
	P50ms      float64 `json:"p50_ms,omitempty"`
	P99ms      float64 `json:"p99_ms,omitempty"`
	Maxms      float64 `json:"max_ms,omitempty"`
	Messages   int     `json:"messages"`
	Errors     int64   `json:"errors"`
}

type row struct {
	Case  string  `json:"case"`
	Ours  result  `json:"ours"`
	Peer  result  `json:"peer"`
	Ratio float64 `json:"ratio"`
}

// system is one side: Tangram or JetStream, at one durability.
type system interface {
	name() string
	publish(ctx context.Context, topic string, producers, n int, body []byte) (result, error)
	consume(ctx context.Context, topic string, n int) (result, error)
	e2e(ctx context.Context, topic string, rate int, d time.Duration, body []byte) (result, error)
	close()
}

func main() {
	quick := flag.Bool("quick", false, "fewer messages (under a minute)")
	size := flag.Int("size", 1024, "message body bytes")
	nAsync := flag.Int("n", 200_000, "messages per async publish run")
	nSync := flag.Int("n-sync", 40_000, "messages per sync publish run")
	rounds := flag.Int("rounds", 2, "runs of each case per side, alternating; the best counts")
	rate := flag.Int("rate", 5000, "messages per second for end-to-end latency")
	e2eDur := flag.Duration("e2e", 10*time.Second, "end-to-end latency run length")
	onlyOurs := flag.Bool("ours", false, "measure Tangram only")
	only := flag.String("case", "", "run only cases whose name contains this")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (client and broker) here")
	memprofile := flag.String("memprofile", "", "write an allocation profile of this process here at the end")
	flag.Parse()
	// As `tangram server` and `tangram broker` run (GOGC 400 unless set);
	// both systems share this process, so both get it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if *memprofile != "" {
		defer func() {
			f, err := os.Create(*memprofile)
			check(err)
			check(pprof.Lookup("allocs").WriteTo(f, 0))
			f.Close()
		}()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	if *quick {
		*nAsync, *nSync, *rounds, *e2eDur = 40_000, 8_000, 1, 4*time.Second
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
	var rows []row
	run := func(c string, f func(s system) (result, error), ours, peer system) {
		if *only != "" && !strings.Contains(c, *only) {
			return
		}
		var r row
		r.Case = c
		for i := 0; i < *rounds; i++ {
			o, err := f(ours)
			check(err)
			if o.MsgsPerSec > r.Ours.MsgsPerSec || (o.MsgsPerSec == 0 && (r.Ours.P99ms == 0 || o.P99ms < r.Ours.P99ms)) {
				r.Ours = o
			}
			fmt.Fprintf(os.Stderr, "%s tangram round %d: %+v\n", c, i+1, o)
			if *onlyOurs {
				continue
			}
			p, err := f(peer)
			check(err)
			if p.MsgsPerSec > r.Peer.MsgsPerSec || (p.MsgsPerSec == 0 && (r.Peer.P99ms == 0 || p.P99ms < r.Peer.P99ms)) {
				r.Peer = p
			}
			fmt.Fprintf(os.Stderr, "%s jetstream round %d: %+v\n", c, i+1, p)
		}
		if r.Peer.MsgsPerSec > 0 {
			r.Ratio = r.Ours.MsgsPerSec / r.Peer.MsgsPerSec
		} else if r.Ours.P99ms > 0 {
			r.Ratio = r.Peer.P99ms / r.Ours.P99ms // latency: higher is better for us too
		}
		rows = append(rows, r)
	}
	seq := 0
	topic := func() string { seq++; return fmt.Sprintf("bench%d", seq) }
	for _, mode := range []string{"async", "sync"} {
		n := *nAsync
		if mode == "sync" {
			n = *nSync
		}
		ours := startTangram(ctx, filepath.Join(base, "tangram-"+mode), mode)
		var peer system
		if !*onlyOurs {
			peer = startJetStream(filepath.Join(base, "nats-"+mode), mode)
		}
		for _, p := range []int{1, 4} {
			run(fmt.Sprintf("pub-%s-%s-p%d", sz, mode, p), func(s system) (result, error) {
				return s.publish(ctx, topic(), p, n, body)
			}, ours, peer)
		}
		if mode == "async" {
			run("consume-"+sz, func(s system) (result, error) {
				t := topic()
				pub, err := s.publish(ctx, t, 4, n, body)
				if err != nil {
					return result{}, err
				}
				// Consume what was stored (a publish error leaves fewer).
				return s.consume(ctx, t, n-int(pub.Errors))
			}, ours, peer)
			run("e2e-"+sz, func(s system) (result, error) {
				return s.e2e(ctx, topic(), *rate, *e2eDur, body)
			}, ours, peer)
		}
		ours.close()
		if peer != nil {
			peer.close()
		}
	}
	if *onlyOurs {
		for _, r := range rows {
			fmt.Printf("%s: %+v\n", r.Case, r.Ours)
		}
		return
	}
	fmt.Printf("\nbench/mq: %s messages; async %d, sync %d per publish run; e2e at %d msg/s for %v; best of %d; 2 shared cores\n\n",
		sz, *nAsync, *nSync, *rate, *e2eDur, *rounds)
	fmt.Println("| case | system | msg/s | MB/s | p50 | p99 | max | errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		for _, x := range []struct {
			n string
			r result
		}{{"tangram", r.Ours}, {"jetstream", r.Peer}} {
			fmt.Printf("| %s | %s | %.0f | %.1f | %.2f ms | %.2f ms | %.2f ms | %d |\n", r.Case, x.n, x.r.MsgsPerSec, x.r.MBPerSec, x.r.P50ms, x.r.P99ms, x.r.Maxms, x.r.Errors)
		}
	}
	fmt.Println()
	for _, r := range rows {
		fmt.Printf("%s: ratio %.2f×\n", r.Case, r.Ratio)
	}
	out := map[string]any{"bench": "mq", "peer": "nats-server 2.15 JetStream (file)", "rows": rows}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
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
	srv  *server.Server
	addr string
}

func startTangram(ctx context.Context, dir, mode string) *tangram {
	srv, err := server.New(server.Config{HTTPAddr: "127.0.0.1:0", RPCAddr: "127.0.0.1:0", BrokerAddr: "127.0.0.1:0", BrokerFlush: mode,
		BrokerSegmentSize: 256 << 20, DataDir: dir, BootstrapToken: token, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	check(err)
	check(srv.Start(ctx))
	return &tangram{srv: srv, addr: srv.RPCAddr()}
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
	if err := c.CreateTopic(ctx, topic, 4, false); err != nil {
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
	return result{MsgsPerSec: float64(n) / el.Seconds(), MBPerSec: float64(n*len(body)) / el.Seconds() / 1e6, Messages: n, Errors: errs.Load()}, nil
}

func (t *tangram) consume(ctx context.Context, topic string, n int) (result, error) {
	c, err := t.client(ctx)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "bench-" + topic, PullBatch: 256, Concurrency: 4, LongPoll: time.Second})
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
	if err := c.CreateTopic(ctx, topic, 4, false); err != nil {
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
	return result{P50ms: percentile(lat, 0.5), P99ms: percentile(lat, 0.99), Maxms: percentile(lat, 1), Messages: len(lat), Errors: errs.Load() + int64(n) - received.Load()}, nil
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

type jetstream struct {
	ns   *natsserver.Server
	url  string
	sync bool
}

func startJetStream(dir, mode string) *jetstream {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		SyncAlways: mode == "sync", JetStreamMaxMemory: 1 << 30, JetStreamMaxStore: 64 << 30, MaxPayload: 8 << 20}
	ns, err := natsserver.NewServer(opts)
	check(err)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		check(fmt.Errorf("nats-server did not start"))
	}
	return &jetstream{ns: ns, url: ns.ClientURL(), sync: mode == "sync"}
}

func (j *jetstream) name() string { return "jetstream" }
func (j *jetstream) close()       { j.ns.Shutdown(); j.ns.WaitForShutdown() }

func (j *jetstream) stream(topic string) error {
	nc, err := nats.Connect(j.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	_, err = js.AddStream(&nats.StreamConfig{Name: topic, Subjects: []string{topic + ".>"}, Storage: nats.FileStorage})
	return err
}

func (j *jetstream) publish(ctx context.Context, topic string, producers, n int, body []byte) (result, error) {
	if err := j.stream(topic); err != nil {
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
			js, err := nc.JetStream(nats.PublishAsyncMaxPending(2048))
			if err != nil {
				errs.Add(int64(n / producers))
				return
			}
			subj := fmt.Sprintf("%s.%d", topic, p)
			futs := make([]nats.PubAckFuture, 0, n/producers)
			for i := 0; i < n/producers; i++ {
				f, err := js.PublishAsync(subj, body)
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
	return result{MsgsPerSec: float64(n) / el.Seconds(), MBPerSec: float64(n*len(body)) / el.Seconds() / 1e6, Messages: n, Errors: errs.Load()}, nil
}

func (j *jetstream) consume(ctx context.Context, topic string, n int) (result, error) {
	nc, err := nats.Connect(j.url)
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return result{}, err
	}
	sub, err := js.PullSubscribe(topic+".>", "bench", nats.AckAll(), nats.BindStream(topic))
	if err != nil {
		return result{}, err
	}
	got, bytes := 0, 0
	start := time.Now()
	for got < n {
		msgs, err := sub.Fetch(256, nats.MaxWait(2*time.Second))
		if err != nil && len(msgs) == 0 {
			return result{}, fmt.Errorf("jetstream fetch after %d: %w", got, err)
		}
		for _, m := range msgs {
			bytes += len(m.Data)
		}
		got += len(msgs)
		if len(msgs) > 0 {
			_ = msgs[len(msgs)-1].Ack()
		}
	}
	el := time.Since(start)
	return result{MsgsPerSec: float64(got) / el.Seconds(), MBPerSec: float64(bytes) / el.Seconds() / 1e6, Messages: got}, nil
}

func (j *jetstream) e2e(ctx context.Context, topic string, rate int, d time.Duration, body []byte) (result, error) {
	if err := j.stream(topic); err != nil {
		return result{}, err
	}
	cn, err := nats.Connect(j.url)
	if err != nil {
		return result{}, err
	}
	defer cn.Close()
	cjs, _ := cn.JetStream()
	var mu sync.Mutex
	var lat []time.Duration
	var received atomic.Int64
	measureFrom := time.Now().Add(time.Hour)
	sub, err := cjs.Subscribe(topic+".>", func(m *nats.Msg) {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))
		d := time.Since(sent)
		received.Add(1)
		mu.Lock()
		if !sent.Before(measureFrom) {
			lat = append(lat, d)
		}
		mu.Unlock()
		if os.Getenv("E2E_DEBUG") != "" && d > 2*time.Millisecond {
			fmt.Fprintf(os.Stderr, "slow-js %v sent %s\n", d, sent.Format("05.000000"))
		}
		_ = m.Ack()
	}, nats.Durable("e2e"), nats.ManualAck(), nats.AckExplicit(), nats.BindStream(topic))
	if err != nil {
		return result{}, err
	}
	defer sub.Unsubscribe()
	pn, err := nats.Connect(j.url)
	if err != nil {
		return result{}, err
	}
	defer pn.Close()
	pjs, _ := pn.JetStream(nats.PublishAsyncMaxPending(4096))
	var errs atomic.Int64
	mu.Lock()
	measureFrom = time.Now().Add(e2eWarmup)
	mu.Unlock()
	n := paced(rate, e2eWarmup+d, func() {
		b := append([]byte(nil), body...)
		binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
		if _, err := pjs.PublishAsync(topic+".e2e", b); err != nil {
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
	return result{P50ms: percentile(lat, 0.5), P99ms: percentile(lat, 0.99), Maxms: percentile(lat, 1), Messages: len(lat), Errors: errs.Load() + int64(n) - received.Load()}, nil
}
