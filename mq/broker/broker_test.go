package broker

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

func admin(context.Context, string) (*auth.Principal, error) {
	return &auth.Principal{Name: "t", Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}}, nil
}

func open(t *testing.T, dir string, mod func(*Config)) *Broker {
	t.Helper()
	cfg := Config{Name: "b", Dir: dir, Authenticate: admin, Store: store.Config{SegmentSize: 1 << 20},
		DelayLevels: []time.Duration{100 * time.Millisecond, 300 * time.Millisecond}}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.open(); err != nil {
		t.Fatal(err)
	}
	return b
}

func pullAll(t *testing.T, b *Broker, topic string, queues int) []wire.StoredMsg {
	t.Helper()
	var out []wire.StoredMsg
	for q := range queues {
		rep, err := b.Pull(context.Background(), &wire.PullRequest{Group: "g", Topic: topic, Queue: uint32(q), Max: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rep.Msgs...)
	}
	return out
}

// Delayed messages survive a restart and are delivered once, at their time.
func TestDelaysSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, nil)
	if _, err := b.CreateTopic(wire.TopicConfig{Name: "later", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	b.start(b.delay.run)
	send := func(props map[string]string, body string) {
		t.Helper()
		if _, err := b.Send(&wire.SendRequest{Topic: "later", Queue: 0, Msgs: []wire.Msg{{Props: props, Body: []byte(body)}}}); err != nil {
			t.Fatal(err)
		}
	}
	send(map[string]string{wire.PropDelay: "1"}, "early") // 100 ms: delivered before the restart
	send(map[string]string{wire.PropDelay: "2"}, "level2")
	send(map[string]string{wire.PropDeliverAt: strconv.FormatInt(time.Now().Add(700*time.Millisecond).UnixMilli(), 10)}, "timed")
	bodies := func() map[string]int {
		b.st.WaitIndexed()
		seen := map[string]int{}
		for _, m := range pullAll(t, b, "later", 1) {
			seen[string(m.Body)]++
		}
		return seen
	}
	wait.For(t, 5*time.Second, "the 100 ms message before the restart", func() bool { return bodies()["early"] == 1 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t, dir, nil)
	defer b.Close()
	b.start(b.delay.run)
	wait.For(t, 5*time.Second, "the three messages", func() bool { return len(bodies()) == 3 })
	// Witnesses sent now on the same level and timer queues come after any
	// repeat of the earlier ones: once they are here, none is coming.
	send(map[string]string{wire.PropDelay: "2"}, "witness-level2")
	send(map[string]string{wire.PropDeliverAt: strconv.FormatInt(time.Now().Add(50*time.Millisecond).UnixMilli(), 10)}, "witness-timed")
	wait.For(t, 5*time.Second, "the witnesses", func() bool {
		s := bodies()
		return s["witness-level2"] == 1 && s["witness-timed"] == 1
	})
	b.st.WaitIndexed()
	got := pullAll(t, b, "later", 1)
	seen := map[string]int{}
	for _, m := range got {
		seen[string(m.Body)]++
		if m.Props[wire.PropRealTopic] != "" || m.Props[wire.PropDelay] != "" {
			t.Errorf("%s kept delay properties: %v", m.Body, m.Props)
		}
	}
	if len(got) != 5 || seen["early"] != 1 || seen["level2"] != 1 || seen["timed"] != 1 {
		t.Fatalf("delivered %v", seen)
	}
}

// Offsets: a newer epoch replaces, the same epoch keeps the larger.
func TestOffsetMergeAndEpoch(t *testing.T) {
	tb, err := openOffsets(t.TempDir() + "/offsets.json")
	if err != nil {
		t.Fatal(err)
	}
	q := func(o int64) []wire.QueueOffset { return []wire.QueueOffset{{Topic: "t", Queue: 0, Offset: o}} }
	tb.commit("g", 0, q(10))
	tb.merge([]wire.GroupOffsets{{Group: "g", Epoch: 0, Offsets: q(7)}})
	if o := tb.get("g", "t", 0); o != 10 {
		t.Fatalf("merge went back to %d", o)
	}
	tb.merge([]wire.GroupOffsets{{Group: "g", Epoch: 0, Offsets: q(12)}})
	if o := tb.get("g", "t", 0); o != 12 {
		t.Fatalf("merge kept %d", o)
	}
	e := tb.reset("g", q(0))
	if tb.commit("g", 0, q(50)) {
		t.Fatal("a commit from before the reset was taken")
	}
	if o := tb.get("g", "t", 0); o != 0 {
		t.Fatalf("after reset: %d", o)
	}
	tb.merge([]wire.GroupOffsets{{Group: "g", Epoch: 0, Offsets: q(40)}})
	if o := tb.get("g", "t", 0); o != 0 {
		t.Fatalf("an old epoch's offsets merged: %d", o)
	}
	if !tb.commit("g", e, q(3)) || tb.get("g", "t", 0) != 3 {
		t.Fatal("a commit in the new epoch was refused")
	}
	if err := tb.flush(false); err != nil {
		t.Fatal(err)
	}
	re, err := openOffsets(tb.path)
	if err != nil || re.get("g", "t", 0) != 3 || re.groupEpoch("g") != e {
		t.Fatalf("reloaded: %v %d %d", err, re.get("g", "t", 0), re.groupEpoch("g"))
	}
}

// Offsets are saved each second without fsync and durably (path.sync)
// every offsetSyncEvery and on Close; loading takes the newer valid copy:
// the per-second file when it is newer, the durable one when the
// per-second file is torn or older (a power loss), and the file written
// before sequence numbers (a bare array) still loads.
func TestOffsetsSavedFastAndDurably(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/offsets.json"
	q := func(o int64) []wire.QueueOffset { return []wire.QueueOffset{{Topic: "t", Queue: 0, Offset: o}} }
	tb, err := openOffsets(path)
	if err != nil {
		t.Fatal(err)
	}
	tb.commit("g", 0, q(5))
	if err := tb.flush(true); err != nil { // as Close does
		t.Fatal(err)
	}
	tb.commit("g", 0, q(9))
	if err := tb.flush(false); err != nil { // the per-second save
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
	load := func(want int64) {
		t.Helper()
		re, err := openOffsets(path)
		if err != nil || re.get("g", "t", 0) != want {
			t.Fatalf("loaded %v %d, want %d", err, re.get("g", "t", 0), want)
		}
	}
	load(9) // the per-second file is newer
	synced, err := os.ReadFile(path + ".sync")
	if err != nil || !strings.Contains(string(synced), `"Offset":5`) {
		t.Fatalf("durable copy: %s %v", synced, err)
	}
	// A power loss: the per-second file torn, or an older version of it.
	if err := os.WriteFile(path, []byte(`{"seq":`), 0o644); err != nil {
		t.Fatal(err)
	}
	load(5)
	if err := os.WriteFile(path, []byte(`{"seq":0,"groups":[{"group":"g","offsets":[{"topic":"t","queue":0,"offset":2}]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	load(5)
	// Both unreadable: an error naming the files, not offsets silently lost.
	if err := errors.Join(os.WriteFile(path+".sync", []byte(`garbage`), 0o644), os.WriteFile(path, []byte(`{"seq":`), 0o644)); err != nil {
		t.Fatal(err)
	}
	if _, err := openOffsets(path); err == nil || !strings.Contains(err.Error(), "offsets.json") {
		t.Fatalf("both files bad: %v", err)
	}
	// The format before sequence numbers.
	os.Remove(path + ".sync")
	if err := os.WriteFile(path, []byte(`[{"group":"g","offsets":[{"topic":"t","queue":0,"offset":7}]}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	load(7)
}

// Back-pressure refuses sends with a retriable error, never drops them.
func TestBusyRefusesSends(t *testing.T) {
	b := open(t, t.TempDir(), func(c *Config) { c.MaxInFlightBytes = 1 })
	defer b.Close()
	if _, err := b.CreateTopic(wire.TopicConfig{Name: "t", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	b.inflight.Add(10) // another send is being stored
	_, err := b.Send(&wire.SendRequest{Topic: "t", Queue: 0, Msgs: []wire.Msg{{Body: []byte("x")}}})
	if err == nil || rpcError(err) == nil || !strings.Contains(rpcError(err).Error(), "ResourceExhausted") {
		t.Fatalf("busy send: %v", rpcError(err))
	}
	b.inflight.Add(-10)
	if _, err := b.Send(&wire.SendRequest{Topic: "t", Queue: 0, Msgs: []wire.Msg{{Body: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
}

// A served broker answers sends and pulls over RPC, and everything it
// started ends on Close (TestMain checks for leaked goroutines).
func TestServeAndClose(t *testing.T) {
	registered := make(chan wire.BrokerInfo, 10)
	b := open(t, t.TempDir(), func(c *Config) {
		c.AutoCreate = true
		c.RegisterInterval = 50 * time.Millisecond
		c.Addr = "127.0.0.1:0"
		c.Register = func(_ context.Context, in wire.BrokerInfo) error {
			select {
			case registered <- in:
			default:
			}
			return nil
		}
	})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rpc.Dial(ctx, b.Addr(), rpc.WithToken("any"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := rpc.Call[wire.SendReply](ctx, c, wire.MethodSend, &wire.SendRequest{Topic: "auto", Queue: -1, AutoCreate: true,
		Msgs: []wire.Msg{{Body: []byte("a")}, {Body: []byte("b")}}})
	if err != nil || len(rep.IDs) != 2 {
		t.Fatalf("send: %+v %v", rep, err)
	}
	pr, err := rpc.Call[wire.PullReply](ctx, c, wire.MethodPull, &wire.PullRequest{Group: "g", Topic: "auto", Queue: rep.Queue, Max: 10, WaitMs: 1000})
	if err != nil || len(pr.Msgs) != 2 || string(pr.Msgs[1].Body) != "b" || pr.Msgs[0].ID != rep.IDs[0] {
		t.Fatalf("pull: %+v %v", pr, err)
	}
	// A long poll on an empty queue ends when a message arrives.
	go func() {
		time.Sleep(100 * time.Millisecond) // sleep-ok: the message comes while the poll waits
		_, _ = rpc.Call[wire.SendReply](ctx, c, wire.MethodSend, &wire.SendRequest{Topic: "auto", Queue: int32(rep.Queue), Msgs: []wire.Msg{{Body: []byte("c")}}})
	}()
	start := time.Now()
	pr, err = rpc.Call[wire.PullReply](ctx, c, wire.MethodPull, &wire.PullRequest{Group: "g", Topic: "auto", Queue: rep.Queue, Offset: pr.Next, Max: 10, WaitMs: 5000})
	if err != nil || len(pr.Msgs) != 1 || time.Since(start) > 2*time.Second {
		t.Fatalf("long poll: %+v %v after %v", pr, err, time.Since(start))
	}
	select {
	case in := <-registered:
		if in.Name != "b" || in.Addr != b.Addr() {
			t.Fatalf("registered %+v", in)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never registered")
	}
	c.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// A consumer whose connections all closed is gone grace later — out of its
// group, its queue locks free — unless it comes back on a new connection;
// a silent one keeps its locks until their TTL.
func TestConsumerSessionLoss(t *testing.T) {
	const grace = 50 * time.Millisecond
	ct := newConsumerTable(time.Hour, time.Hour, grace)
	conn1, cut1 := context.WithCancel(context.Background())
	ct.attach("a", conn1)
	ct.beat("g", "a", []string{"t"}, time.Now())
	ct.beat("g", "b", []string{"t"}, time.Now())
	if got := ct.lock("g", "a", "t", []uint32{0, 1}, time.Now()); len(got) != 2 {
		t.Fatalf("a locked %v", got)
	}
	cut1()
	wait.For(t, 5*time.Second, "a's session to be seen closed", func() bool {
		ct.mu.Lock()
		defer ct.mu.Unlock()
		return !ct.sessions["a"].lost.IsZero()
	})
	if got := ct.lock("g", "b", "t", []uint32{0}, time.Now()); len(got) != 0 {
		t.Fatal("a's lock taken within the grace")
	}
	later := time.Now().Add(2 * grace)
	if cl := ct.clientsLocked("g", later); len(cl) != 1 || cl[0] != "b" {
		t.Fatalf("members after the grace: %v", cl)
	}
	if got := ct.lock("g", "b", "t", []uint32{0, 1}, later); len(got) != 2 {
		t.Fatalf("b locked %v after a's session was lost", got)
	}
	// Back on a new connection within the grace: nothing lost.
	conn2, cut2 := context.WithCancel(context.Background())
	defer cut2()
	ct.attach("c", conn2)
	conn3, cut3 := context.WithCancel(context.Background())
	ct.attach("c", conn3)
	cut2()
	ct.beat("g", "c", []string{"t"}, time.Now())
	ct.expire(time.Now().Add(time.Minute))
	if cl := ct.clients("g"); len(cl) != 2 { // b and c (one of c's connections is open)
		t.Fatalf("members: %v", cl)
	}
	cut3()
}

// A broker listening on every interface advertises an address another host
// can dial, never "[::]:port".
func TestAdvertisedAddress(t *testing.T) {
	if got := advertised(&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 7072}); got != "10.1.2.3:7072" {
		t.Fatalf("a bound listener: %s", got)
	}
	got := advertised(&net.TCPAddr{IP: net.IPv6unspecified, Port: 7072})
	host, port, err := net.SplitHostPort(got)
	if err != nil || port != "7072" || net.ParseIP(host) == nil || net.ParseIP(host).IsUnspecified() {
		t.Fatalf("an unspecified listener advertises %q", got)
	}
}
