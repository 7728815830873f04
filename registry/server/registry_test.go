package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/registry"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTestRegistry returns a started registry on a manual clock; expiry is
// driven by calling r.expire() after moving the clock.
func newTestRegistry(t *testing.T, cfg Config) (*Registry, *clock) {
	t.Helper()
	cfg.Logger = quiet()
	if cfg.NodeName == "" {
		cfg.NodeName = "node-a"
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	r.now = c.now
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, c
}

func inst(svc string, port int) registry.Instance {
	return registry.Instance{Key: registry.Key{Service: svc}, Host: "10.0.0.1", Port: uint16(port), Weight: 100, Enabled: true, Ephemeral: true}
}

func TestRegisterIdempotentAndValidation(t *testing.T) {
	r, _ := newTestRegistry(t, Config{})
	ctx := context.Background()
	a, err := r.Register(ctx, inst("orders", 8080))
	if err != nil || a.ID != "10.0.0.1:8080" || a.Namespace != "public" || a.Group != "default" || !a.Healthy || a.Owner != "node-a" {
		t.Fatalf("%+v %v", a, err)
	}
	b, err := r.Register(ctx, inst("orders", 8080))
	if err != nil || b.RegisteredAt != a.RegisteredAt {
		t.Fatalf("re-register: %+v %v", b, err)
	}
	if snap := r.Get(registry.Key{Service: "orders"}); len(snap.Instances) != 1 {
		t.Fatalf("idempotent register made %d instances", len(snap.Instances))
	}
	bad := []struct {
		mut  func(*registry.Instance)
		want string
	}{
		{func(i *registry.Instance) { i.Port = 0 }, "port 0"},
		{func(i *registry.Instance) { i.Host = "" }, "host"},
		{func(i *registry.Instance) { i.Host = "bad host!" }, "not an IP address or DNS name"},
		{func(i *registry.Instance) { i.Weight = 10001 }, "weight 10001"},
		{func(i *registry.Instance) { i.Service = "" }, "service"},
		{func(i *registry.Instance) { i.Service = "a/b" }, `service "a/b"`},
		{func(i *registry.Instance) { i.Metadata = map[string]string{"k": strings.Repeat("v", 9000)} }, "metadata"},
		{func(i *registry.Instance) { i.Ephemeral = false }, "persistent instances need a store"},
	}
	for _, c := range bad {
		in := inst("orders", 8081)
		c.mut(&in)
		_, err := r.Register(ctx, in)
		if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want %q, got %v", c.want, err)
		}
	}
}

func TestHeartbeatExpiry(t *testing.T) {
	r, clk := newTestRegistry(t, Config{})
	ctx := context.Background()
	r.Register(ctx, inst("pay", 1))
	r.Register(ctx, inst("pay", 2))
	k := registry.Key{Service: "pay"}
	clk.add(10 * time.Second)
	must(t, r.Heartbeat(ctx, k, "10.0.0.1:1"))
	clk.add(6 * time.Second) // :2 silent 16 s → unhealthy
	r.expire()
	health := func() map[string]bool {
		m := map[string]bool{}
		for _, in := range r.Get(k).Instances {
			m[in.ID] = in.Healthy
		}
		return m
	}
	if h := health(); !h["10.0.0.1:1"] || h["10.0.0.1:2"] {
		t.Fatalf("after 16 s: %v", h)
	}
	must(t, r.Heartbeat(ctx, k, "10.0.0.1:1"))
	clk.add(14 * time.Second) // :2 silent 30 s → removed; :1 silent 14 s
	r.expire()
	if h := health(); len(h) != 1 || !h["10.0.0.1:1"] {
		t.Fatalf("after 31 s: %v", h)
	}
	if err := r.Heartbeat(ctx, k, "10.0.0.1:2"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("heartbeat of an expired instance: %v", err)
	}
	// A heartbeat brings an unhealthy instance back.
	clk.add(15 * time.Second)
	r.expire()
	if health()["10.0.0.1:1"] {
		t.Fatal("should be unhealthy")
	}
	must(t, r.Heartbeat(ctx, k, "10.0.0.1:1"))
	if !health()["10.0.0.1:1"] {
		t.Fatal("heartbeat did not restore health")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Self-preservation: when most renewals stop at once (a partition between
// clients and this server), instances are kept — up to PreservationMax.
func TestSelfPreservation(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", enabled), func(t *testing.T) {
			r, clk := newTestRegistry(t, Config{DisableSelfPreservation: !enabled, PreservationWindow: 30 * time.Second})
			ctx := context.Background()
			for i := range 20 {
				r.Register(ctx, inst("cart", 1000+i))
			}
			// A healthy half minute: every instance renews every 5 s.
			for range 6 {
				clk.add(5 * time.Second)
				for i := range 20 {
					must(t, r.Heartbeat(ctx, registry.Key{Service: "cart"}, fmt.Sprintf("10.0.0.1:%d", 1000+i)))
				}
				r.expire()
			}
			if r.Status().SelfPreservation {
				t.Fatal("self-preservation on while every instance renews")
			}
			// The network fails: no renewals at all for 40 s.
			for range 8 {
				clk.add(5 * time.Second)
				r.expire()
			}
			st := r.Status()
			if st.SelfPreservation != enabled {
				t.Fatalf("self-preservation %v, want %v (%+v)", st.SelfPreservation, enabled, st)
			}
			if enabled && st.Instances != 20 {
				t.Fatalf("preservation kept %d of 20", st.Instances)
			}
			if !enabled && st.Instances != 0 {
				t.Fatalf("without preservation %d of 20 remain", st.Instances)
			}
			if enabled {
				// Bounded: past PreservationMax they go anyway.
				clk.add(3 * time.Minute)
				r.expire()
				if n := r.Status().Instances; n != 0 {
					t.Fatalf("%d instances held past PreservationMax", n)
				}
			}
		})
	}
}

func TestWatchDeltasResumeAndSnapshot(t *testing.T) {
	r, clk := newTestRegistry(t, Config{LogSize: 4})
	ctx := context.Background()
	k := registry.Key{Service: "feed"}
	first, err := r.Watch(ctx, k, 0)
	if err != nil || !first.Full || len(first.Instances) != 0 {
		t.Fatalf("%+v %v", first, err)
	}
	got := make(chan registry.Snapshot, 1)
	go func() {
		s, _ := r.Watch(ctx, k, first.Revision)
		got <- s
	}()
	wait.For(t, 5*time.Second, "the watch to wait", func() bool { return r.watchers.Load() == 1 })
	r.Register(ctx, inst("feed", 1))
	select {
	case s := <-got:
		if s.Full || len(s.Events) != 1 || s.Events[0].Type != registry.EventPut || s.Events[0].Instance.Port != 1 {
			t.Fatalf("%+v", s)
		}
		first = s
	case <-time.After(5 * time.Second):
		t.Fatal("watch not woken by a registration")
	}
	// Two changes while nobody watches: a resuming watcher gets both.
	r.Register(ctx, inst("feed", 2))
	must(t, r.Deregister(ctx, k, "10.0.0.1:1"))
	s, _ := r.Watch(ctx, k, first.Revision)
	if s.Full || len(s.Events) != 2 || s.Events[1].Type != registry.EventDelete {
		t.Fatalf("resume: %+v", s)
	}
	// Too far behind the log: a full list.
	for i := range 6 {
		r.Register(ctx, inst("feed", 10+i))
	}
	s, _ = r.Watch(ctx, k, first.Revision)
	if !s.Full || len(s.Instances) != 7 {
		t.Fatalf("stale watcher: full=%v %d instances", s.Full, len(s.Instances))
	}
	// Everything expires: the empty list says it was emptied.
	clk.add(time.Minute)
	r.expire()
	s, _ = r.Watch(ctx, k, 0)
	if !s.Full || len(s.Instances) != 0 || !s.Emptied {
		t.Fatalf("after expiry: %+v", s)
	}
	// A service this server never saw is empty but not "emptied".
	s, _ = r.Watch(ctx, registry.Key{Service: "never"}, 0)
	if s.Emptied {
		t.Fatal("unknown service marked emptied")
	}
	// A watch with nothing new returns when its context ends, with no
	// changes and the revision it was given.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	rev := s.Revision
	s, _ = r.Watch(wctx, k, rev)
	if s.Full || len(s.Events) != 0 || s.Revision != rev {
		t.Fatalf("idle watch: %+v", s)
	}
}

func TestUpdateDrainAndWeight(t *testing.T) {
	r, _ := newTestRegistry(t, Config{})
	ctx := context.Background()
	r.Register(ctx, inst("api", 1))
	k := registry.Key{Service: "api"}
	w, off := 0, false
	in, err := r.Update(ctx, k, "10.0.0.1:1", registry.Patch{Weight: &w, Enabled: &off, Metadata: map[string]string{"v": "2"}})
	if err != nil || in.Weight != 0 || in.Enabled || in.Metadata["v"] != "2" {
		t.Fatalf("%+v %v", in, err)
	}
	bad := 20000
	if _, err := r.Update(ctx, k, "10.0.0.1:1", registry.Patch{Weight: &bad}); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("bad weight: %v", err)
	}
	if _, err := r.Update(ctx, k, "nope", registry.Patch{}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatal(err)
	}
}

// Persistent instances survive a restart (they are rows in the store) and
// are probed: an instance whose port stops answering turns unhealthy.
func TestPersistentInstancesAndProbes(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := Config{Store: st, Logger: quiet(), NodeName: "a", ProbeInterval: 20 * time.Millisecond, ReloadInterval: 20 * time.Millisecond}
	r1, err := New(cfg)
	must(t, err)
	must(t, r1.Start(context.Background()))
	in := registry.Instance{Key: registry.Key{Service: "db"}, Host: "127.0.0.1", Port: uint16(port), Enabled: true, Weight: 100}
	_, err = r1.Register(context.Background(), in)
	must(t, err)
	r1.Close()

	cfg.NodeName = "b"
	r2, err := New(cfg)
	must(t, err)
	must(t, r2.Start(context.Background()))
	defer r2.Close()
	snap := r2.Get(registry.Key{Service: "db"})
	if len(snap.Instances) != 1 || snap.Instances[0].Ephemeral {
		t.Fatalf("after restart: %+v", snap)
	}
	ln.Close()
	wait.For(t, 5*time.Second, "the probe to notice the closed port", func() bool { return !(r2.Get(registry.Key{Service: "db"}).Instances[0].Healthy) })
	// Another server deregisters it: the reload removes it here.
	r3, err := New(Config{Store: st, Logger: quiet(), NodeName: "c"})
	must(t, err)
	must(t, r3.Start(context.Background()))
	must(t, r3.Deregister(context.Background(), registry.Key{Service: "db"}, in.Addr()))
	r3.Close()
	wait.For(t, 5*time.Second, "the deregistration on another server to be picked up", func() bool { return !(len(r2.Get(registry.Key{Service: "db"}).Instances) != 0) })
}

// Flapping is damped: probes need two results in a row to change a
// persistent instance's health; an ephemeral instance that keeps going
// silent needs two renewals in a row to be healthy again.
func TestFlapDamping(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	r, clk := newTestRegistry(t, Config{Store: st, ProbeInterval: time.Hour, ReloadInterval: time.Hour})
	ctx := context.Background()
	p, err := r.Register(ctx, registry.Instance{Key: registry.Key{Service: "db"}, Host: "10.9.9.9", Port: 5432, Enabled: true, Weight: 100})
	must(t, err)
	healthy := func(svc, id string) bool {
		for _, in := range r.Get(registry.Key{Service: svc}).Instances {
			if in.ID == id {
				return in.Healthy
			}
		}
		t.Fatalf("%s gone", id)
		return false
	}
	r.applyProbes([]*registry.Instance{p}, []bool{false})
	if !healthy("db", p.ID) {
		t.Fatal("one failed probe marked it unhealthy")
	}
	r.applyProbes([]*registry.Instance{p}, []bool{false})
	if healthy("db", p.ID) {
		t.Fatal("two failed probes did not")
	}
	r.applyProbes([]*registry.Instance{p}, []bool{true})
	r.applyProbes([]*registry.Instance{p}, []bool{false}) // the streak breaks
	r.applyProbes([]*registry.Instance{p}, []bool{true})
	if healthy("db", p.ID) {
		t.Fatal("alternating probes brought it back")
	}
	r.applyProbes([]*registry.Instance{p}, []bool{true})
	if !healthy("db", p.ID) {
		t.Fatal("two good probes in a row did not bring it back")
	}

	// Ephemeral: three silences in two minutes make it a flapper.
	_, err = r.Register(ctx, inst("api", 1))
	must(t, err)
	k := registry.Key{Service: "api"}
	for range 3 {
		clk.add(16 * time.Second)
		r.expire()
		if healthy("api", "10.0.0.1:1") {
			t.Fatal("silent instance still healthy")
		}
		must(t, r.Heartbeat(ctx, k, "10.0.0.1:1"))
		must(t, r.Heartbeat(ctx, k, "10.0.0.1:1"))
	}
	clk.add(16 * time.Second)
	r.expire()
	must(t, r.Heartbeat(ctx, k, "10.0.0.1:1")) // first renewal after the silence
	if healthy("api", "10.0.0.1:1") {
		t.Fatal("a flapping instance came back on one renewal")
	}
	clk.add(time.Second)
	must(t, r.Heartbeat(ctx, k, "10.0.0.1:1"))
	if !healthy("api", "10.0.0.1:1") {
		t.Fatal("two renewals in a row did not bring it back")
	}
}
