package names

import (
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
)

func TestRouteMastersSlavesAndExpiry(t *testing.T) {
	tb, _ := New(Config{TTL: 200 * time.Millisecond})
	clock := time.Now()
	tb.now = func() time.Time { return clock }
	topics := []wire.TopicConfig{{Name: "orders", Queues: 4}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tb.Register(wire.BrokerInfo{Name: "b1", Addr: "m:1", Role: "master", Topics: topics, AutoCreate: true}))
	must(tb.Register(wire.BrokerInfo{Name: "b1", Addr: "s:1", Role: "slave", Topics: topics}))
	must(tb.Register(wire.BrokerInfo{Name: "b2", Addr: "m:2", Role: "master"}))
	r := tb.Route("orders")
	if len(r.Queues) != 1 || r.Queues[0].Addr != "m:1" || r.Creator != nil {
		t.Fatalf("route with the master up: %+v", r)
	}
	if r := tb.Route("new"); len(r.Queues) != 0 || len(r.Creator) != 1 || r.Creator[0].Broker != "b1" {
		t.Fatalf("unknown topic: %+v", r)
	}
	// The master goes silent; its slave keeps renewing: reads move to it.
	clock = clock.Add(200 * time.Millisecond)
	if r := tb.Route("orders"); r.Queues[0].Addr != "m:1" {
		t.Fatalf("master dropped at its TTL, not after it: %+v", r)
	}
	clock = clock.Add(50 * time.Millisecond)
	must(tb.Register(wire.BrokerInfo{Name: "b1", Addr: "s:1", Role: "slave", Topics: topics}))
	r = tb.Route("orders")
	if len(r.Queues) != 1 || r.Queues[0].Addr != "s:1" || r.Queues[0].Role != "slave" {
		t.Fatalf("route with the master gone: %+v", r)
	}
	if bs := tb.Brokers(); len(bs) != 1 {
		t.Fatalf("live brokers: %+v", bs)
	}
}

func TestRegisterRejectsBadInput(t *testing.T) {
	tb, _ := New(Config{})
	for _, c := range []struct {
		in   wire.BrokerInfo
		want string
	}{
		{wire.BrokerInfo{Name: "", Addr: "a", Role: "master"}, "name"},
		{wire.BrokerInfo{Name: "b/x", Addr: "a", Role: "master"}, "name"},
		{wire.BrokerInfo{Name: "b", Addr: "", Role: "master"}, "address"},
		{wire.BrokerInfo{Name: "b", Addr: "a", Role: "leader"}, "role"},
		{wire.BrokerInfo{Name: "b", Addr: "a", Role: "master", Topics: []wire.TopicConfig{{Name: "t", Queues: 0}}}, "queues"},
	} {
		if err := tb.Register(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.in, err, c.want)
		}
	}
}
