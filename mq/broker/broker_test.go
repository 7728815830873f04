package broker

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
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
	b, err := Open(cfg)
	if err != nil {
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
	time.Sleep(200 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t, dir, nil)
	defer b.Close()
	b.start(b.delay.run)
	deadline := time.Now().Add(5 * time.Second)
	var got []wire.StoredMsg
	for time.Now().Before(deadline) {
		b.st.WaitIndexed()
		if got = pullAll(t, b, "later", 1); len(got) >= 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	b.st.WaitIndexed()
	got = pullAll(t, b, "later", 1)
	seen := map[string]int{}
	for _, m := range got {
		seen[string(m.Body)]++
		if m.Props[wire.PropRealTopic] != "" || m.Props[wire.PropDelay] != "" {
			t.Errorf("%s kept delay properties: %v", m.Body, m.Props)
		}
	}
	if len(got) != 3 || seen["early"] != 1 || seen["level2"] != 1 || seen["timed"] != 1 {
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
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	re, err := openOffsets(tb.path)
	if err != nil || re.get("g", "t", 0) != 3 || re.groupEpoch("g") != e {
		t.Fatalf("reloaded: %v %d %d", err, re.get("g", "t", 0), re.groupEpoch("g"))
	}
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
