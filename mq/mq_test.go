package mq_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/metrictest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

// env is a server (name service, auth) with one or more brokers started
// by the test, with short delay levels.
type env struct {
	t       *testing.T
	h       *servertest.Harness
	brokers []*broker.Broker
}

func fastLevels() []time.Duration {
	l := make([]time.Duration, 18)
	for i := range l {
		l[i] = time.Duration(50*(i+1)) * time.Millisecond
	}
	return l
}

func newEnv(t *testing.T) *env {
	h := servertest.Start(t, func(c *server.Config) { c.BrokerAddr = "off" })
	return &env{t: t, h: h}
}

func (e *env) addBroker(name string, mod func(*broker.Config)) *broker.Broker {
	e.t.Helper()
	return e.openBroker(name, filepath.Join(e.t.TempDir(), name), "127.0.0.1:0", mod)
}

func (e *env) openBroker(name, dir, addr string, mod func(*broker.Config)) *broker.Broker {
	e.t.Helper()
	cfg := broker.Config{Name: name, Dir: dir, Store: store.Config{SegmentSize: 4 << 20},
		AutoCreate: true, DelayLevels: fastLevels(), RegisterInterval: 200 * time.Millisecond,
		ConsumerTimeout: 3 * time.Second,
		Authenticate: func(ctx context.Context, tok string) (*auth.Principal, error) {
			return e.h.Srv.Auth().AuthenticateToken(ctx, tok)
		},
		Register: func(_ context.Context, in wire.BrokerInfo) error { return e.h.Srv.Names().Register(in) },
	}
	if mod != nil {
		mod(&cfg)
	}
	cfg.Addr = addr
	b, err := broker.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { b.Close() })
	e.brokers = append(e.brokers, b)
	// Wait until the name service knows it.
	wait.For(e.t, 5*time.Second, "broker "+name+" to register", func() bool {
		for _, bi := range e.h.Srv.Names().Brokers() {
			if bi.Name == name && bi.Addr == b.Addr() {
				return true
			}
		}
		return false
	})
	return b
}

func (e *env) client() *mq.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := mq.NewClient(ctx, mq.Config{Servers: []string{e.h.Srv.RPCAddr()}, Token: servertest.AdminToken, RouteRefresh: 500 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) producer(c *mq.Client, cfg mq.ProducerConfig) *mq.Producer {
	e.t.Helper()
	p, err := c.NewProducer(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { p.Close() })
	return p
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// collector records what a consumer saw.
type collector struct {
	mu   sync.Mutex
	seen map[string]int // body -> times
	by   map[string][]string
	n    int
}

func newCollector() *collector { return &collector{seen: map[string]int{}, by: map[string][]string{}} }

func (c *collector) add(who string, m *mq.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[string(m.Body)]++
	c.by[who] = append(c.by[who], string(m.Body))
	c.n++
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func startConsumer(t *testing.T, c *mq.Client, cfg mq.ConsumerConfig, topic string, tags []string, h mq.Handler) *mq.Consumer {
	t.Helper()
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 200 * time.Millisecond
	}
	if cfg.LongPoll == 0 {
		cfg.LongPoll = time.Second
	}
	cs, err := c.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Subscribe(topic, tags, h); err != nil {
		t.Fatal(err)
	}
	if err := cs.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func TestSendAndConsumeAcrossBrokers(t *testing.T) {
	e := newEnv(t)
	b1 := e.addBroker("b1", nil)
	b2 := e.addBroker("b2", nil)
	c := e.client()
	ctx := ctxT(t, 60*time.Second)
	if err := c.CreateTopic(ctx, "orders", 4, false); err != nil {
		t.Fatal(err)
	}
	p := e.producer(c, mq.ProducerConfig{})
	const n = 2000
	brokers := map[string]int{}
	for i := 0; i < n; i += 10 {
		var batch []*mq.Message
		for j := i; j < i+10; j++ {
			batch = append(batch, &mq.Message{Topic: "orders", Body: []byte(strconv.Itoa(j)), Keys: []string{"k" + strconv.Itoa(j)}})
		}
		rs, err := p.SendBatch(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			brokers[r.Broker]++
			if r.ID == "" || r.MsgID == "" || r.QueueOffset < 0 {
				t.Fatalf("bad result %+v", r)
			}
		}
	}
	if brokers["b1"] == 0 || brokers["b2"] == 0 {
		t.Fatalf("round robin used one broker: %v", brokers)
	}
	got := newCollector()
	startConsumer(t, c, mq.ConsumerConfig{Group: "g1"}, "orders", nil, func(ctx context.Context, m *mq.Message) error {
		got.add("a", m)
		return nil
	})
	wait.For(t, 30*time.Second, "all messages", func() bool { return got.distinct() == n })
	if got.count() != n {
		t.Fatalf("delivered %d times for %d messages", got.count(), n)
	}
	// Offsets are committed: the group's lag drops to zero.
	wait.For(t, 10*time.Second, "lag 0", func() bool {
		gs, err := c.Groups(ctx, "g1")
		if err != nil || len(gs) != 1 || gs[0].Lag != 0 {
			return false
		}
		n := 0
		for _, q := range gs[0].Queues {
			if q.Topic == "orders" {
				n++
			}
		}
		return n == 8 // every queue of the topic, on both brokers
	})
	// The brokers' metrics count the topic's messages and the group's
	// consumption, broker by broker.
	var stored, consumed float64
	for _, b := range []*broker.Broker{b1, b2} {
		stored += metrictest.Value(t, b.Collector(), "tangram_mq_topic_messages_total", "topic", "orders")
		consumed += metrictest.Value(t, b.Collector(), "tangram_mq_group_consumed_total", "group", "g1")
	}
	if stored != n || consumed != n {
		t.Errorf("metrics: %v stored in orders, %v consumed by g1; want %d each", stored, consumed, n)
	}
	// Look-up by key and by ID.
	ms, err := c.Lookup(ctx, "orders", "", "k42")
	if err != nil || len(ms) != 1 || string(ms[0].Body) != "42" {
		t.Fatalf("lookup by key: %v %v", ms, err)
	}
	byID, err := c.Lookup(ctx, "", ms[0].ID, "")
	if err != nil || len(byID) != 1 || string(byID[0].Body) != "42" {
		t.Fatalf("lookup by id: %v %v", byID, err)
	}
	ts, err := c.Topics(ctx, false)
	if err != nil || len(ts) != 1 || ts[0].Queues != 8 || ts[0].Messages != n {
		t.Fatalf("topics: %+v %v", ts, err)
	}
}

func TestGroupRebalanceAndHandOver(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c1, c2 := e.client(), e.client()
	ctx := ctxT(t, 60*time.Second)
	if err := c1.CreateTopic(ctx, "events", 8, false); err != nil {
		t.Fatal(err)
	}
	got := newCollector()
	h := func(who string) mq.Handler {
		return func(ctx context.Context, m *mq.Message) error {
			got.add(who, m)
			return nil
		}
	}
	a := startConsumer(t, c1, mq.ConsumerConfig{Group: "g"}, "events", nil, h("a"))
	b := startConsumer(t, c2, mq.ConsumerConfig{Group: "g"}, "events", nil, h("b"))
	wait.For(t, 10*time.Second, "8 queues split", func() bool {
		return countUser(a.Owned())+countUser(b.Owned()) == 8 && countUser(a.Owned()) == 4
	})
	p := e.producer(c1, mq.ProducerConfig{})
	for i := range 400 {
		if _, err := p.Send(ctx, &mq.Message{Topic: "events", Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 20*time.Second, "400 consumed", func() bool { return got.distinct() == 400 })
	got.mu.Lock()
	na, nb := len(got.by["a"]), len(got.by["b"])
	got.mu.Unlock()
	if na == 0 || nb == 0 {
		t.Fatalf("one member did all the work: a=%d b=%d", na, nb)
	}
	// b leaves: a takes every queue and consumes what follows.
	b.Close()
	wait.For(t, 10*time.Second, "a owns all queues", func() bool { return countUser(a.Owned()) == 8 })
	for i := 400; i < 600; i++ {
		if _, err := p.Send(ctx, &mq.Message{Topic: "events", Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 20*time.Second, "600 consumed", func() bool { return got.distinct() == 600 })
}

func countUser(owned []string) int {
	n := 0
	for _, o := range owned {
		if !strings.HasPrefix(o, "%") {
			n++
		}
	}
	return n
}

func TestRetryThenDeadLetterThenResend(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c := e.client()
	ctx := ctxT(t, 60*time.Second)
	if err := c.CreateTopic(ctx, "pay", 2, false); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	attempts := map[string][]int{}
	fail := true
	startConsumer(t, c, mq.ConsumerConfig{Group: "billing", MaxRetry: 3}, "pay", nil, func(ctx context.Context, m *mq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.Topic != "pay" {
			t.Errorf("a retried message shows topic %q", m.Topic)
		}
		attempts[string(m.Body)] = append(attempts[string(m.Body)], m.Reconsumed)
		if fail {
			return fmt.Errorf("downstream unavailable")
		}
		return nil
	})
	p := e.producer(c, mq.ProducerConfig{})
	for i := range 5 {
		if _, err := p.Send(ctx, &mq.Message{Topic: "pay", Body: []byte("m" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	var dead []*mq.Message
	wait.For(t, 30*time.Second, "5 dead letters", func() bool {
		var err error
		dead, err = c.DeadLetters(ctx, "billing", 0, 100)
		return err == nil && len(dead) == 5
	})
	mu.Lock()
	for body, a := range attempts {
		if fmt.Sprint(a) != "[0 1 2 3]" {
			t.Errorf("%s: attempts with reconsume counts %v, want [0 1 2 3]", body, a)
		}
	}
	fail = false
	mu.Unlock()
	if dead[0].Topic != "pay" || dead[0].Reconsumed != 4 {
		t.Fatalf("dead letter: topic %q reconsumed %d", dead[0].Topic, dead[0].Reconsumed)
	}
	// Resend them: the group consumes them once more, successfully.
	for _, m := range dead {
		if err := c.Resend(ctx, "billing", m.ID); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 20*time.Second, "resent messages consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range attempts {
			if len(a) != 5 {
				return false
			}
		}
		return true
	})
	// The listing marks them resent, and a second resend — which would
	// deliver them twice — is refused unless asked for again.
	listed, err := c.DeadLetters(ctx, "billing", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range listed {
		if m.ResentAt().IsZero() {
			t.Errorf("dead letter %s not marked resent", m.ID)
		}
	}
	if err := c.Resend(ctx, "billing", dead[0].ID); rpc.CodeOf(err) != rpc.AlreadyExists {
		t.Fatalf("a second resend: %v, want AlreadyExists", err)
	}
	if err := c.ResendAgain(ctx, "billing", dead[0].ID); err != nil {
		t.Fatalf("resend again: %v", err)
	}
}

func TestDelayedAndTimedMessages(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	if err := c.CreateTopic(ctx, "later", 1, false); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	startConsumer(t, c, mq.ConsumerConfig{Group: "g"}, "later", nil, func(ctx context.Context, m *mq.Message) error {
		mu.Lock()
		arrived[string(m.Body)] = time.Now()
		mu.Unlock()
		return nil
	})
	p := e.producer(c, mq.ProducerConfig{})
	sent := time.Now()
	if _, err := p.Send(ctx, &mq.Message{Topic: "later", Body: []byte("level4"), DelayLevel: 4}); err != nil { // 200 ms
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, &mq.Message{Topic: "later", Body: []byte("at600"), DeliverAt: sent.Add(600 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, &mq.Message{Topic: "later", Body: []byte("at300"), DeliverAt: sent.Add(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, &mq.Message{Topic: "later", Body: []byte("now")}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "4 messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(arrived) == 4
	})
	mu.Lock()
	defer mu.Unlock()
	for body, want := range map[string]time.Duration{"level4": 200 * time.Millisecond, "at300": 300 * time.Millisecond, "at600": 600 * time.Millisecond} {
		if got := arrived[body].Sub(sent); got < want {
			t.Errorf("%s arrived after %v, before its %v", body, got, want)
		}
	}
	if !arrived["at300"].Before(arrived["at600"]) {
		t.Error("timed messages out of due order")
	}
	if arrived["now"].Sub(sent) > 150*time.Millisecond && arrived["now"].After(arrived["level4"]) {
		t.Error("an undelayed message waited for delayed ones")
	}
}

// Over 100,000 delayed and timed messages (sub-millisecond deliver-at
// times, delay levels counted from before each send): none arrives before
// its time. Lateness is reported from the exact time.
func TestNothingDeliveredEarly(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	e := newEnv(t)
	e.addBroker("b1", nil)
	c := e.client()
	ctx := ctxT(t, 120*time.Second)
	if err := c.CreateTopic(ctx, "punctual", 4, false); err != nil {
		t.Fatal(err)
	}
	due := make([]time.Time, n) // the earliest each may arrive
	arrived := make([]time.Time, n)
	var mu sync.Mutex
	got, dups := 0, 0
	// Times here are wall-clock readings (Round(0) drops the monotonic one):
	// the broker schedules by the wall clock, and time.Now reads the two
	// clocks one after the other, so a thread descheduled between the reads
	// (a loaded 2-core VM) gets a monotonic reading up to milliseconds
	// later than its wall reading — comparing a due time's monotonic reading
	// with an arrival's would call a punctual delivery early.
	startConsumer(t, c, mq.ConsumerConfig{Group: "g"}, "punctual", nil, func(ctx context.Context, m *mq.Message) error {
		now := time.Now().Round(0)
		i, err := strconv.Atoi(string(m.Body))
		if err != nil || i < 0 || i >= n {
			return fmt.Errorf("body %q", m.Body)
		}
		mu.Lock()
		defer mu.Unlock()
		if !arrived[i].IsZero() {
			dups++
			return nil
		}
		arrived[i] = now
		got++
		return nil
	})
	p := e.producer(c, mq.ProducerConfig{})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		m := &mq.Message{Topic: "punctual", Body: []byte(strconv.Itoa(i))}
		now := time.Now().Round(0)
		if i%2 == 0 {
			m.DeliverAt = now.Add(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
			due[i] = m.DeliverAt
		} else {
			m.DelayLevel = 1 + i%4 // 50–200 ms
			due[i] = now.Add(time.Duration(50*m.DelayLevel) * time.Millisecond)
		}
		wg.Add(1)
		p.SendAsync(ctx, m, func(_ *mq.SendResult, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d sends failed", f)
	}
	wait.For(t, 90*time.Second, "every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got == n
	})
	mu.Lock()
	defer mu.Unlock()
	early, minLate, maxLate := 0, time.Duration(1<<62), time.Duration(0)
	for i := range n {
		late := arrived[i].Sub(due[i])
		if late < 0 {
			early++
			if early <= 5 {
				t.Errorf("message %d arrived %v before its time", i, -late)
			}
		}
		minLate, maxLate = min(minLate, late), max(maxLate, late)
	}
	t.Logf("%d delayed/timed messages: early %d, lateness min %v max %v, redelivered %d", n, early, minLate, maxLate, dups)
	if early > 0 {
		t.Fatalf("%d of %d messages arrived before their time", early, n)
	}
}

func TestOrderedConsumptionByKey(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c1, c2 := e.client(), e.client()
	ctx := ctxT(t, 60*time.Second)
	if err := c1.CreateTopic(ctx, "ledger", 4, true); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	last := map[string]int{}
	var bad []string
	running := map[string]bool{}
	h := func(ctx context.Context, m *mq.Message) error {
		key := m.Keys[0]
		seq, _ := strconv.Atoi(string(m.Body))
		mu.Lock()
		if running[key] {
			bad = append(bad, "two consumers ran key "+key+" at once")
		}
		running[key] = true
		if prev, ok := last[key]; ok && seq != prev+1 {
			bad = append(bad, fmt.Sprintf("%s: %d after %d", key, seq, prev))
		}
		last[key] = seq
		mu.Unlock()
		time.Sleep(100 * time.Microsecond) // sleep-ok: a handler that takes a while, so overlaps would show
		mu.Lock()
		running[key] = false
		mu.Unlock()
		return nil
	}
	startConsumer(t, c1, mq.ConsumerConfig{Group: "og", Orderly: true}, "ledger", nil, h)
	startConsumer(t, c2, mq.ConsumerConfig{Group: "og", Orderly: true}, "ledger", nil, h)
	p := e.producer(c1, mq.ProducerConfig{})
	const keys, per = 8, 60
	for i := range per {
		for k := range keys {
			key := "acct" + strconv.Itoa(k)
			if _, err := p.Send(ctx, &mq.Message{Topic: "ledger", Body: []byte(strconv.Itoa(i)), Keys: []string{key}, ShardingKey: key}); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait.For(t, 30*time.Second, "all keys complete", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(last) < keys {
			return false
		}
		for _, v := range last {
			if v != per-1 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("order violated: %v", bad[:min(5, len(bad))])
	}
}

func TestTransactionalMessages(t *testing.T) {
	e := newEnv(t)
	b1 := e.addBroker("b1", func(c *broker.Config) {
		c.TxCheckAfter = 300 * time.Millisecond
		c.TxCheckInterval = 300 * time.Millisecond
		c.TxMaxChecks = 3
	})
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	if err := c.CreateTopic(ctx, "tx", 1, false); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var checked []string
	p := e.producer(c, mq.ProducerConfig{Group: "orders-svc", TxChecker: func(ctx context.Context, m *mq.Message) mq.TxState {
		mu.Lock()
		defer mu.Unlock()
		checked = append(checked, string(m.Body))
		switch string(m.Body) {
		case "unknown-then-commit":
			return mq.TxCommit
		case "never-known":
			return mq.TxUnknown
		}
		return mq.TxRollback
	}})
	got := newCollector()
	startConsumer(t, c, mq.ConsumerConfig{Group: "g"}, "tx", nil, func(ctx context.Context, m *mq.Message) error {
		got.add("", m)
		return nil
	})
	wait.For(t, 10*time.Second, "the producer's check stream", func() bool { return b1.TxCheckers("orders-svc") == 1 })
	// The producer group's connection is listed (address, broker).
	if ps, err := c.Producers(ctx, "orders-svc"); err != nil || len(ps) != 1 || !strings.HasPrefix(ps[0].Addr, "127.0.0.1:") || ps[0].Broker != "b1" || ps[0].Since == 0 {
		t.Fatalf("producers: %+v %v", ps, err)
	}
	for body, st := range map[string]mq.TxState{"commit": mq.TxCommit, "rollback": mq.TxRollback, "unknown-then-commit": mq.TxUnknown, "never-known": mq.TxUnknown} {
		_, _, err := p.SendTransaction(ctx, &mq.Message{Topic: "tx", Body: []byte(body)}, func(ctx context.Context, half *mq.SendResult) (mq.TxState, error) {
			time.Sleep(50 * time.Millisecond) // sleep-ok: a local transaction that takes a while
			got.mu.Lock()
			defer got.mu.Unlock()
			if got.seen[body] != 0 {
				t.Error("a half message was visible before its transaction ended")
			}
			return st, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "commit and checked commit delivered", func() bool { return got.distinct() == 2 })
	checksOf := func(body string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, b := range checked {
			if b == body {
				n++
			}
		}
		return n
	}
	wait.For(t, 10*time.Second, "three checks of never-known", func() bool { return checksOf("never-known") >= 3 })
	// After its last check it is rolled back at the next round (300 ms): a
	// transaction sent now, answered unknown, is first checked no sooner,
	// so once that check has come the rollback round has passed.
	_, _, err := p.SendTransaction(ctx, &mq.Message{Topic: "tx", Body: []byte("witness")}, func(context.Context, *mq.SendResult) (mq.TxState, error) {
		return mq.TxUnknown, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the witness's first check", func() bool { return checksOf("witness") > 0 })
	got.mu.Lock()
	defer got.mu.Unlock()
	if got.seen["commit"] != 1 || got.seen["unknown-then-commit"] != 1 || got.seen["rollback"] != 0 || got.seen["never-known"] != 0 {
		t.Fatalf("delivered: %v", got.seen)
	}
	if n := checksOf("never-known"); n != 3 {
		t.Fatalf("never-known was checked %d times, want 3 (then rolled back)", n)
	}
}

func TestTagFilterAndResetOffset(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	if err := c.CreateTopic(ctx, "shop", 2, false); err != nil {
		t.Fatal(err)
	}
	p := e.producer(c, mq.ProducerConfig{})
	for i := range 100 {
		tag := []string{"paid", "refund", "created"}[i%3]
		if _, err := p.Send(ctx, &mq.Message{Topic: "shop", Tag: tag, Body: []byte(tag + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	got := newCollector()
	cs := startConsumer(t, c, mq.ConsumerConfig{Group: "refunds"}, "shop", []string{"refund"}, func(ctx context.Context, m *mq.Message) error {
		if m.Tag != "refund" {
			t.Errorf("got tag %q", m.Tag)
		}
		got.add("", m)
		return nil
	})
	wait.For(t, 10*time.Second, "33 refunds", func() bool { return got.distinct() == 33 })
	wait.For(t, 10*time.Second, "lag 0", func() bool {
		gs, err := c.Groups(ctx, "refunds")
		return err == nil && len(gs) == 1 && gs[0].Lag == 0
	})
	// Reset to the start: the group consumes them all again.
	if err := c.ResetOffset(ctx, "refunds", "shop", 0); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "33 refunds again", func() bool { return got.count() == 66 })
	_ = cs
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", func(c *broker.Config) { c.AutoCreate = false; c.MaxBody = 1024 })
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	p := e.producer(c, mq.ProducerConfig{AutoCreate: true})
	_, err := p.Send(ctx, &mq.Message{Topic: "nope", Body: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("unknown topic: %v", err)
	}
	if err := c.CreateTopic(ctx, "small", 1, false); err != nil {
		t.Fatal(err)
	}
	_, err = p.Send(ctx, &mq.Message{Topic: "small", Body: make([]byte, 2048)})
	if err == nil || !strings.Contains(err.Error(), "exceeds the limit") || rpc.CodeOf(err) != rpc.InvalidArgument {
		t.Fatalf("oversize: %v", err)
	}
	if err := c.CreateTopic(ctx, "bad/name", 1, false); err == nil {
		t.Fatal("bad topic name accepted")
	}
	_, err = p.Send(ctx, &mq.Message{Topic: "small", Body: []byte("x"), DelayLevel: 99})
	if err == nil || !strings.Contains(err.Error(), "DELAY") {
		t.Fatalf("bad delay level: %v", err)
	}
	// A token without permission on the topic is refused.
	bad, err := mq.NewClient(ctx, mq.Config{Servers: []string{e.h.Srv.RPCAddr()}, Token: "tgm_not-a-token"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bp, _ := bad.NewProducer(mq.ProducerConfig{})
	if _, err := bp.Send(ctx, &mq.Message{Topic: "small", Body: []byte("x")}); rpc.CodeOf(err) != rpc.Unauthenticated {
		t.Fatalf("bad token: %v", err)
	}
	// Messages survive: the valid send above still reads back.
	ok, err := p.Send(ctx, &mq.Message{Topic: "small", Body: []byte("fine")})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := c.Lookup(ctx, "", ok.ID, "")
	if err != nil || len(ms) != 1 || string(ms[0].Body) != "fine" {
		t.Fatalf("%v %v", ms, err)
	}
}

func TestSendAsyncBatchesAndCloseFlushes(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	if err := c.CreateTopic(ctx, "bulk", 4, false); err != nil {
		t.Fatal(err)
	}
	p, err := c.NewProducer(mq.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	var mu sync.Mutex
	ids := map[string]bool{}
	var failed []error
	for i := range n {
		p.SendAsync(ctx, &mq.Message{Topic: "bulk", Body: []byte(strconv.Itoa(i))}, func(r *mq.SendResult, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
				return
			}
			ids[r.ID] = true
		})
	}
	p.Close() // sends what is still queued
	mu.Lock()
	if len(failed) > 0 || len(ids) != n {
		t.Fatalf("%d acknowledged, %d failed (%v)", len(ids), len(failed), failed[:min(1, len(failed))])
	}
	mu.Unlock()
	got := newCollector()
	startConsumer(t, c, mq.ConsumerConfig{Group: "g"}, "bulk", nil, func(ctx context.Context, m *mq.Message) error {
		got.add("", m)
		return nil
	})
	wait.For(t, 20*time.Second, "all async messages", func() bool { return got.distinct() == n })
}

func TestBroadcastAndTraceContext(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c1, c2 := e.client(), e.client()
	ctx := ctxT(t, 30*time.Second)
	if err := c1.CreateTopic(ctx, "config-changed", 2, false); err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	var mu sync.Mutex
	got := map[string]int{}
	warmed := map[string]bool{} // member/queue
	var badCtx []string
	h := func(who string) mq.Handler {
		return func(ctx context.Context, m *mq.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if string(m.Body) == "warm" {
				warmed[who+"/"+strconv.Itoa(int(m.Queue))] = true
				return nil
			}
			got[who]++
			if trace.SpanContextFromContext(ctx).TraceID() != tid || rpc.Outgoing(ctx)[rpc.MetaXID] != "gx-42" {
				badCtx = append(badCtx, who)
			}
			return nil
		}
	}
	startConsumer(t, c1, mq.ConsumerConfig{Group: "all", Broadcast: true}, "config-changed", nil, h("a"))
	startConsumer(t, c2, mq.ConsumerConfig{Group: "all", Broadcast: true}, "config-changed", nil, h("b"))
	// Broadcast members start at the end of the queue: once each has had a
	// warm-up message, what is sent next is after both positions.
	warm := e.producer(c1, mq.ProducerConfig{})
	wait.For(t, 10*time.Second, "both members to receive a warm-up message", func() bool {
		if _, err := warm.Send(ctx, &mq.Message{Topic: "config-changed", Body: []byte("warm")}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return warmed["a/0"] && warmed["a/1"] && warmed["b/0"] && warmed["b/1"]
	})
	sctx := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	sctx = rpc.WithOutgoing(sctx, rpc.MetaXID, "gx-42")
	p := e.producer(c1, mq.ProducerConfig{})
	for i := range 20 {
		if _, err := p.Send(sctx, &mq.Message{Topic: "config-changed", Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "both members get every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got["a"] == 20 && got["b"] == 20
	})
	mu.Lock()
	defer mu.Unlock()
	if len(badCtx) > 0 {
		t.Fatalf("handlers without the producer's trace context or xid: %d", len(badCtx))
	}
}

// Browsing reads a queue from an offset or from a time without consuming.
func TestBrowse(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	if err := c.CreateTopic(ctx, "log", 1, false); err != nil {
		t.Fatal(err)
	}
	p := e.producer(c, mq.ProducerConfig{})
	send := func(body string) {
		if _, err := p.Send(ctx, &mq.Message{Topic: "log", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	send("early")
	sent := time.Now().UnixMilli()
	// The two messages must be stored in different milliseconds.
	wait.For(t, time.Second, "the clock to pass the first message's millisecond", func() bool { return time.Now().UnixMilli() > sent+1 })
	mid := time.Now()
	send("late")
	ms, next, err := c.Browse(ctx, "log", "b1", 0, 0, 10)
	if err != nil || len(ms) != 2 || string(ms[0].Body) != "early" || next != 2 {
		t.Fatalf("browse from 0: %v next %d %v", ms, next, err)
	}
	ms, _, err = c.BrowseAt(ctx, "log", "b1", 0, mid, 10)
	if err != nil || len(ms) != 1 || string(ms[0].Body) != "late" {
		t.Fatalf("browse from a time: %d messages %v", len(ms), err)
	}
}

// A group's listing shows each member's connection: the address its
// heartbeats come from, when the last came, what it subscribes to.
func TestGroupConnections(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	if err := c.CreateTopic(ctx, "feed", 2, false); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c, mq.ConsumerConfig{Group: "readers"}, "feed", nil, func(ctx context.Context, m *mq.Message) error { return nil })
	wait.For(t, 10*time.Second, "the member's connection listed", func() bool {
		gs, err := c.Groups(ctx, "readers")
		if err != nil || len(gs) != 1 || len(gs[0].Conns) != 1 {
			return false
		}
		cn := gs[0].Conns[0]
		return cn.Client == c.ID() && strings.HasPrefix(cn.Addr, "127.0.0.1:") && cn.LastBeat > 0 && slices.Contains(cn.Topics, "feed") && cn.Broker == "b1"
	})
}
