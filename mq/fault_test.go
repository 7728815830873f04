package mq_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/faults"
	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/server/servertest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// tangramBin builds cmd/tangram once for the package's process tests.
func tangramBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tangram-mq-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "tangram")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/tangram-dev/tangram/cmd/tangram").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// brokerProc runs `tangram broker` as a child process.
type brokerProc struct {
	cmd     *exec.Cmd
	log     *bytes.Buffer
	metrics string // its Prometheus endpoint
}

// startBrokerProc starts a broker serving RPC on addr and metrics on maddr.
// A restarted broker gets the same two addresses: picking a fresh metrics
// port after a kill could hand out the dead broker's RPC port, which the
// broker then binds first.
func startBrokerProc(t *testing.T, e *env, name, addr, maddr, dir, flush string) *brokerProc {
	t.Helper()
	var log bytes.Buffer
	cmd := exec.Command(tangramBin(t), "broker", "--listen", addr, "--metrics", maddr, "--name", name, "--dir", dir, "--servers", e.h.Srv.RPCAddr(),
		"--flush", flush, "--segment-size", strconv.Itoa(1<<20), "--token", brokerToken(t, e, name), "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &brokerProc{cmd: cmd, log: &log, metrics: "http://" + maddr + "/metrics"}
	t.Cleanup(func() { p.kill() })
	if !wait.Until(10*time.Second, func() bool {
		for _, b := range e.h.Srv.Names().Brokers() {
			if b.Name == name && b.Addr == addr && time.Since(time.UnixMilli(b.Seen)) < time.Second {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("broker %s did not register; its log:\n%s", name, log.String())
	}
	return p
}

// brokerToken is a token of a user holding only the broker role, as
// docs/security.md tells operators to run standalone brokers: it must be
// enough to register and serve, and good for nothing else.
func brokerToken(t *testing.T, e *env, name string) string {
	t.Helper()
	ctx := context.Background()
	c := e.h.Client()
	user := "broker-" + name
	if err := c.Do(ctx, "POST", "/api/v1/auth/users", map[string]any{"name": user, "token_only": true,
		"bindings": []map[string]string{{"role": "broker"}}}, nil); err != nil && !apiclient.IsStatus(err, 409) {
		t.Fatal(err)
	}
	var out struct{ Token string }
	if err := c.Do(ctx, "POST", "/api/v1/auth/tokens", map[string]string{"user": user, "name": "t" + strconv.FormatInt(time.Now().UnixNano(), 36)}, &out); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/api/v1/config/apps", "/api/v1/jobs", "/api/v1/auth/users"} {
		if err := e.h.Client(out.Token).Do(ctx, "GET", p, nil, nil); !apiclient.IsStatus(err, 403) {
			t.Fatalf("a broker-role token read %s: %v", p, err)
		}
	}
	return out.Token
}

func (p *brokerProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

func body(i int) []byte {
	return []byte(fmt.Sprintf("msg-%06d-%s", i, strings.Repeat(strconv.Itoa(i%10), 100+i%300)))
}

// TestBrokerKill9KeepsAcknowledged kills a broker with SIGKILL while four
// producers send, restarts it on the same directory, and reads everything
// back: every acknowledged message is there once, byte for byte — under
// sync flush by design, and under async flush too, since a killed process
// leaves its writes in the page cache (async's loss window is a machine
// crash; see docs/mq.md).
func TestBrokerKill9KeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	for _, flush := range []string{"sync", "async"} {
		t.Run(flush, func(t *testing.T) {
			e := newEnv(t)
			addr, maddr, dir := port.Free(t), port.Free(t), t.TempDir()
			bp := startBrokerProc(t, e, "kb", addr, maddr, dir, flush)
			c := e.client()
			ctx := ctxT(t, 90*time.Second)
			if err := c.CreateTopic(ctx, "durable", 2, false); err != nil {
				t.Fatalf("%v\n%s", err, bp.log)
			}
			// A broker running apart audits its changes through the servers.
			var entries struct{ Items []map[string]any }
			if err := e.h.Client().Do(ctx, "GET", "/api/v1/audit?action=mq.topic.create&resource=topic/durable", nil, &entries); err != nil ||
				len(entries.Items) == 0 || !strings.Contains(fmt.Sprint(entries.Items[0]["remote"]), "via") {
				t.Fatalf("the topic's creation is not in the audit log: %v %v", entries.Items, err)
			}
			p := e.producer(c, mq.ProducerConfig{Retries: 1, Timeout: 2 * time.Second})
			var mu sync.Mutex
			acked := map[int]bool{}
			var next int
			var refused atomic.Int64 // sends that failed (into the dead broker)
			rounds := faults.Rounds(1, 6)
			for round := range rounds {
				var wg sync.WaitGroup
				stop := make(chan struct{})
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							mu.Lock()
							i := next
							next++
							mu.Unlock()
							if _, err := p.Send(ctx, &mq.Message{Topic: "durable", Body: body(i)}); err == nil {
								mu.Lock()
								acked[i] = true
								mu.Unlock()
							} else {
								refused.Add(1)
							}
						}
					}()
				}
				target := 1000 * (round + 1)
				wait.For(t, 30*time.Second, fmt.Sprintf("round %d: %d acknowledged sends", round, target), func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(acked) >= target
				})
				bp.kill()
				// Producers go on sending into the dead broker until some
				// sends have failed there.
				before := refused.Load()
				wait.For(t, 30*time.Second, "sends into the dead broker to fail", func() bool { return refused.Load() > before })
				close(stop)
				wg.Wait()
				bp = startBrokerProc(t, e, "kb", addr, maddr, dir, flush)
			}
			mu.Lock()
			nAcked, sent := len(acked), next
			mu.Unlock()
			seen := map[string]int{}
			var smu sync.Mutex
			startConsumer(t, e.client(), mq.ConsumerConfig{Group: "verify"}, "durable", nil, func(ctx context.Context, m *mq.Message) error {
				smu.Lock()
				seen[string(m.Body)]++
				smu.Unlock()
				return nil
			})
			wait.For(t, 30*time.Second, "every acknowledged message", func() bool {
				smu.Lock()
				defer smu.Unlock()
				for i := range acked {
					if seen[string(body(i))] == 0 {
						return false
					}
				}
				return true
			})
			var metrics []byte
			wait.For(t, 10*time.Second, "the group's lag in the broker's metrics", func() bool {
				resp, err := http.Get(bp.metrics)
				if err != nil {
					t.Fatal(err)
				}
				metrics, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				return strings.Contains(string(metrics), `tangram_mq_group_lag{broker="kb",group="verify"}`)
			})
			for _, m := range []string{"tangram_mq_messages_out_total", "tangram_mq_flush_seconds", `tangram_mq_group_lag{broker="kb",group="verify"}`} {
				if !strings.Contains(string(metrics), m) {
					t.Errorf("metrics lack %s", m)
				}
			}
			smu.Lock()
			defer smu.Unlock()
			for b, n := range seen {
				if n != 1 {
					t.Errorf("%.12s stored %d times", b, n)
				}
				i, err := strconv.Atoi(strings.TrimPrefix(b[:10], "msg-"))
				if err != nil || !bytes.Equal([]byte(b), body(i)) {
					t.Errorf("a stored message's bytes differ from what was sent: %.40q", b)
				}
			}
			lost := 0
			for i := range acked {
				if seen[string(body(i))] == 0 {
					lost++
				}
			}
			faults.Report(t, "broker kill -9 ("+flush+" flush)", "kills", rounds, "attempted", sent, "acknowledged", nAcked, "stored", len(seen), "acknowledged_lost", lost)
		})
	}
}

// TestConsumerKilledMidBatchIsRedelivered kills a `tangram mq consume`
// process (a member of the group) after it consumed part of a topic; its
// queues go to the other member, which gets everything the killed one had
// not committed — nothing is lost.
func TestConsumerKilledMidBatchIsRedelivered(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	e := newEnv(t)
	e.addBroker("b1", nil) // ConsumerTimeout 3 s
	c := e.client()
	ctx := ctxT(t, 60*time.Second)
	if err := c.CreateTopic(ctx, "work", 4, false); err != nil {
		t.Fatal(err)
	}
	p := e.producer(c, mq.ProducerConfig{})
	const n = 2000
	for i := 0; i < n; i += 50 {
		var batch []*mq.Message
		for j := i; j < i+50; j++ {
			batch = append(batch, &mq.Message{Topic: "work", Body: []byte(strconv.Itoa(j))})
		}
		if _, err := p.SendBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	// The child consumes alone at first, slowly enough to be caught mid-way.
	cmd := exec.Command(tangramBin(t), "mq", "consume", "work", "--group", "workers", "--rpc-server", e.h.Srv.RPCAddr(),
		"--token", servertest.AdminToken)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var cmu sync.Mutex
	child := map[string]bool{}
	lines := make(chan struct{}, n)
	drained := make(chan struct{}, 1) // the child's output read to its end
	go func() {
		defer func() { drained <- struct{}{} }()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			cmu.Lock()
			child[f[len(f)-1]] = true
			cmu.Unlock()
			lines <- struct{}{}
		}
	}()
	for i := 0; i < 300; i++ {
		select {
		case <-lines:
		case <-time.After(20 * time.Second):
			t.Fatalf("child consumed %d; stderr:\n%s", i, stderr.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	// Read what the child printed to the end before Wait closes the pipe.
	wait.Receive(t, 10*time.Second, "the end of the child's output", drained)
	_ = cmd.Wait()
	got := newCollector()
	startConsumer(t, c, mq.ConsumerConfig{Group: "workers"}, "work", nil, func(ctx context.Context, m *mq.Message) error {
		got.add("", m)
		return nil
	})
	// What the child had not committed comes to the survivor once the
	// broker drops the dead member (3 s without heartbeats). The group's
	// lag cannot say when: a queue the child never committed on has no
	// offset to measure from. So wait for the messages themselves (what the
	// child printed before it died was read to its end above), and fail
	// with the ones that never came.
	missing := func() []int {
		got.mu.Lock()
		defer got.mu.Unlock()
		cmu.Lock()
		defer cmu.Unlock()
		var l []int
		for i := range n {
			if !child[strconv.Itoa(i)] && got.seen[strconv.Itoa(i)] == 0 {
				l = append(l, i)
			}
		}
		return l
	}
	wait.Until(30*time.Second, func() bool { return len(missing()) == 0 })
	wait.For(t, 30*time.Second, "the group to have one member and no lag", func() bool {
		gs, err := c.Groups(ctx, "workers")
		return err == nil && len(gs) == 1 && gs[0].Lag == 0 && len(gs[0].Clients) == 1
	})
	lost := missing()
	got.mu.Lock()
	defer got.mu.Unlock()
	cmu.Lock()
	defer cmu.Unlock()
	if len(lost) > 0 {
		t.Fatalf("%d messages lost (child printed %d, survivor consumed %d): %v", len(lost), len(child), len(got.seen), lost[:min(10, len(lost))])
	}
	childSeen := len(child)
	t.Logf("child consumed %d before kill -9; survivor consumed %d (redelivered %d)", childSeen, len(got.seen), len(got.seen)+childSeen-n)
}

// TestOrderedConsumerKilledHandsOverFast kills -9 a `tangram mq consume
// --orderly` process holding every queue of an ordered topic. The broker
// sees its connection close; once the grace passes without it coming back,
// its queue locks are released and the survivor (default heartbeat) takes
// the queues — in seconds, not after the 60 s lock TTL. Per key, order
// holds: the survivor starts at or before the child's last message (only
// uncommitted work is delivered again) and goes on without a gap.
func TestOrderedConsumerKilledHandsOverFast(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	e := newEnv(t)
	e.addBroker("b1", func(c *broker.Config) { c.ConsumerTimeout = 30 * time.Second }) // defaults: no help from timeouts
	c := e.client()
	ctx := ctxT(t, 120*time.Second)
	if err := c.CreateTopic(ctx, "ledger", 4, true); err != nil {
		t.Fatal(err)
	}
	p := e.producer(c, mq.ProducerConfig{})
	const keys, per = 8, 1500
	for seq := range per {
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			if _, err := p.Send(ctx, &mq.Message{Topic: "ledger", ShardingKey: key, Body: []byte(fmt.Sprintf("%s:%d", key, seq))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(tangramBin(t), "mq", "consume", "ledger", "--group", "ledgers", "--orderly", "--rpc-server", e.h.Srv.RPCAddr(),
		"--token", servertest.AdminToken)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	parse := func(body string) (string, int) {
		k, s, _ := strings.Cut(body, ":")
		n, _ := strconv.Atoi(s)
		return k, n
	}
	var cmu sync.Mutex
	childLast := map[string]int{}
	childBad := []string{}
	lines := make(chan struct{}, keys*per)
	drained := make(chan struct{}, 1)
	go func() {
		defer func() { drained <- struct{}{} }()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			k, n := parse(f[len(f)-1])
			cmu.Lock()
			if prev, ok := childLast[k]; ok && n != prev+1 {
				childBad = append(childBad, fmt.Sprintf("child: %s %d after %d", k, n, prev))
			}
			childLast[k] = n
			cmu.Unlock()
			lines <- struct{}{}
		}
	}()
	for i := range 1000 {
		select {
		case <-lines:
		case <-time.After(20 * time.Second):
			t.Fatalf("child consumed %d; stderr:\n%s", i, stderr.String())
		}
	}
	killed := time.Now()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	wait.Receive(t, 10*time.Second, "the end of the child's output", drained)
	_ = cmd.Wait()
	// The survivor joins, with the default heartbeat; the child's locks
	// are still held.
	var smu sync.Mutex
	first := map[string]int{}
	last := map[string]int{}
	var bad []string
	var firstAt time.Time
	startConsumer(t, c, mq.ConsumerConfig{Group: "ledgers", Orderly: true, Heartbeat: 3 * time.Second}, "ledger", nil, func(ctx context.Context, m *mq.Message) error {
		k, n := parse(string(m.Body))
		smu.Lock()
		defer smu.Unlock()
		if firstAt.IsZero() {
			firstAt = time.Now()
		}
		if prev, ok := last[k]; ok && n != prev+1 {
			bad = append(bad, fmt.Sprintf("survivor: %s %d after %d", k, n, prev))
		} else if !ok {
			first[k] = n
		}
		last[k] = n
		return nil
	})
	wait.For(t, 60*time.Second, "the survivor to finish every key", func() bool {
		smu.Lock()
		defer smu.Unlock()
		if len(last) < keys {
			return false
		}
		for _, n := range last {
			if n != per-1 {
				return false
			}
		}
		return true
	})
	smu.Lock()
	defer smu.Unlock()
	cmu.Lock()
	defer cmu.Unlock()
	handover := firstAt.Sub(killed)
	faults.Report(t, "ordered consumer kill -9", "handover", handover.Round(time.Millisecond), "redelivered_keys", len(first))
	if len(childBad) > 0 || len(bad) > 0 {
		t.Fatalf("order violated: %v %v", childBad, bad)
	}
	for k, n := range first {
		if cl, ok := childLast[k]; ok && n > cl+1 {
			t.Errorf("%s: the survivor started at %d, after the child's last %d: %d messages lost", k, n, cl, n-cl-1)
		}
		if _, ok := childLast[k]; !ok && n != 0 {
			t.Errorf("%s: the survivor started at %d, the child never had it", k, n)
		}
	}
	if handover >= 10*time.Second {
		t.Fatalf("hand-over took %v after the kill: want under 10 s", handover)
	}
}
