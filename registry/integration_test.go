package registry_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server/servertest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newClient(t *testing.T, h *servertest.Harness, cfg registry.ClientConfig) *registry.Client {
	t.Helper()
	if cfg.Servers == nil {
		cfg.Servers = []string{h.Srv.RPCAddr()}
	}
	if cfg.Token == "" {
		cfg.Token = h.Token
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 50 * time.Millisecond
	}
	c, err := registry.NewClient(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoServer is an RPC server whose Echo/Who answers with its own address.
func echoServer(t *testing.T) (string, func()) {
	t.Helper()
	srv, err := rpc.NewServer(rpc.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	rpc.Handle(srv, "Echo/Who", func(ctx context.Context, _ *struct{}) (*string, error) { return &addr, nil })
	go srv.Serve(ln)
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return addr, stop
}

func register(t *testing.T, c *registry.Client, svc, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var p uint16
	for _, ch := range port {
		p = p*10 + uint16(ch-'0')
	}
	if _, err := c.Register(context.Background(), registry.Instance{Key: registry.Key{Service: svc}, Host: host, Port: p,
		Weight: 100, Enabled: true, Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
}

// A service registers through the registry; an RPC client finds it through
// the Resolver, follows a second instance joining and the first leaving.
func TestDiscoveryDrivesRPCClient(t *testing.T) {
	h := servertest.Start(t)
	provider := newClient(t, h, registry.ClientConfig{})
	consumer := newClient(t, h, registry.ClientConfig{})
	a1, stop1 := echoServer(t)
	a2, _ := echoServer(t)
	register(t, provider, "echo", a1)

	rc, err := rpc.Dial(context.Background(), "", rpc.WithResolver(consumer.Resolver(registry.Key{Service: "echo"})), rpc.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	who := func() string {
		s, err := rpc.Call[string](context.Background(), rc, "Echo/Who", &struct{}{})
		if err != nil {
			return "error: " + err.Error()
		}
		return *s
	}
	if got := who(); got != a1 {
		t.Fatalf("first call reached %s", got)
	}
	start := time.Now()
	register(t, provider, "echo", a2)
	wait.For(t, 10*time.Second, "the second instance in the client", func() bool { return len(rc.Endpoints()) == 2 })
	t.Logf("registration reached the RPC client in %v", time.Since(start))
	stop1()
	host, _, _ := net.SplitHostPort(a1)
	_ = host
	if err := provider.Deregister(context.Background(), registry.Key{Service: "echo"}, a1); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the first instance gone", func() bool { return len(rc.Endpoints()) == 1 })
	for range 5 {
		if got := who(); got != a2 {
			t.Fatalf("call reached %s", got)
		}
	}
}

// A registry server restart loses ephemeral instances: the watcher is not
// wiped by the empty list the restarted server sends (empty-push
// protection), and the provider's next heartbeat registers it again.
func TestServerRestartEmptyPushProtectionAndReregister(t *testing.T) {
	dir := t.TempDir()
	rpcAddr := port.Free(t)
	h := servertest.Start(t, servertest.WithDataDir(dir), servertest.WithRPCAddr(rpcAddr), servertest.WithNodeName("reg-1"))
	provider := newClient(t, h, registry.ClientConfig{Servers: []string{rpcAddr}, HeartbeatInterval: 200 * time.Millisecond})
	consumer := newClient(t, h, registry.ClientConfig{Servers: []string{rpcAddr}})
	a1, _ := echoServer(t)
	register(t, provider, "svc", a1)

	var mu sync.Mutex
	var lists [][]*registry.Instance
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		consumer.Watch(ctx, registry.Key{Service: "svc"}, func(l []*registry.Instance) {
			mu.Lock()
			lists = append(lists, l)
			mu.Unlock()
		})
	}()
	defer func() { cancel(); <-done }()
	last := func() []*registry.Instance {
		mu.Lock()
		defer mu.Unlock()
		if len(lists) == 0 {
			return nil
		}
		return lists[len(lists)-1]
	}
	wait.For(t, 10*time.Second, "the first list", func() bool { return len(last()) == 1 })

	h.Srv.Close()
	h2 := servertest.Start(t, servertest.WithDataDir(dir), servertest.WithRPCAddr(rpcAddr), servertest.WithNodeName("reg-1b"))
	_ = h2
	// The provider re-registers within about one heartbeat interval.
	start := time.Now()
	wait.For(t, 10*time.Second, "re-registration on the restarted server", func() bool {
		return len(h2.Srv.Registry().Get(registry.Key{Service: "svc"}).Instances) == 1
	})
	t.Logf("instance back %v after the restart", time.Since(start))
	mu.Lock()
	for i, l := range lists {
		if len(l) == 0 {
			mu.Unlock()
			t.Fatalf("list %d was empty: an empty push wiped the client", i)
		}
	}
	mu.Unlock()
	wait.For(t, 10*time.Second, "the watcher still holding the instance", func() bool { return len(last()) == 1 })
}

// With no server answering, a new client uses its disk snapshot (and says
// so); a deregistration that really empties the service does reach it.
func TestDiskSnapshotFallback(t *testing.T) {
	h := servertest.Start(t)
	cache := t.TempDir()
	provider := newClient(t, h, registry.ClientConfig{})
	a1, _ := echoServer(t)
	register(t, provider, "cached", a1)
	c1 := newClient(t, h, registry.ClientConfig{CacheDir: cache})
	got := make(chan []*registry.Instance, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c1.Watch(ctx, registry.Key{Service: "cached"}, func(l []*registry.Instance) { got <- l })
	}()
	if l := <-got; len(l) != 1 {
		t.Fatalf("%v", l)
	}
	cancel()
	<-done

	dead := port.Free(t) // nothing listens here
	c2 := newClient(t, h, registry.ClientConfig{Servers: []string{dead}, CacheDir: cache, SnapshotWait: 200 * time.Millisecond})
	got2 := make(chan []*registry.Instance, 8)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() {
		defer close(done2)
		c2.Watch(ctx2, registry.Key{Service: "cached"}, func(l []*registry.Instance) { got2 <- l })
	}()
	select {
	case l := <-got2:
		if len(l) != 1 || l[0].Addr() != a1 {
			t.Fatalf("snapshot: %v", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot fallback")
	}
	cancel2()
	<-done2

	// A real deregistration empties the list (Emptied set by the server).
	c3 := newClient(t, h, registry.ClientConfig{CacheDir: cache})
	got3 := make(chan []*registry.Instance, 8)
	ctx3, cancel3 := context.WithCancel(context.Background())
	done3 := make(chan struct{})
	go func() {
		defer close(done3)
		c3.Watch(ctx3, registry.Key{Service: "cached"}, func(l []*registry.Instance) { got3 <- l })
	}()
	<-got3
	if err := provider.Deregister(context.Background(), registry.Key{Service: "cached"}, a1); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got3:
		if len(l) != 0 {
			t.Fatalf("after deregistration: %v", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deregistration not pushed")
	}
	cancel3()
	<-done3
}

// The HTTP API: auth, register, get, long-poll watch, drain (audited).
func TestHTTPAPI(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	var in registry.Instance
	err := c.Do(ctx, "POST", "/api/v1/registry/instances", map[string]any{"service": "web", "host": "10.1.1.1", "port": 80, "weight": 50, "enabled": true, "ephemeral": true}, &in)
	if err != nil || in.ID != "10.1.1.1:80" {
		t.Fatalf("%+v %v", in, err)
	}
	err = c.Do(ctx, "POST", "/api/v1/registry/instances", map[string]any{"service": "web", "host": "10.1.1.1", "port": 0}, nil)
	if !apiclient.IsStatus(err, 400) || !strings.Contains(err.Error(), "port 0") {
		t.Fatalf("bad port: %v", err)
	}
	for _, bad := range []map[string]any{
		{"service": "web", "host": "10.1.1.1", "port": 70000},
		{"service": "web", "host": "10.1.1.1", "port": 80, "weight": -1},
		{"service": "web", "host": "10.1.1.1", "port": 80, "weight": 10001},
	} {
		err = c.Do(ctx, "POST", "/api/v1/registry/instances", bad, nil)
		if !apiclient.IsStatus(err, 400) || (!strings.Contains(err.Error(), "port") && !strings.Contains(err.Error(), "weight")) {
			t.Fatalf("%v: %v", bad, err)
		}
	}
	if err := h.Client("tgm_wrong").Do(ctx, "GET", "/api/v1/registry/services", nil, nil); !apiclient.IsStatus(err, 401) {
		t.Fatalf("bad token: %v", err)
	}
	var snap registry.Snapshot
	if err := c.Do(ctx, "GET", "/api/v1/registry/services/public/default/web", nil, &snap); err != nil || len(snap.Instances) != 1 {
		t.Fatalf("%+v %v", snap, err)
	}
	woke := make(chan registry.Snapshot, 1)
	go func() {
		var s registry.Snapshot
		c.Do(ctx, "GET", "/api/v1/registry/services/public/default/web/watch?timeout=10s&revision="+itoa(snap.Revision), nil, &s)
		woke <- s
	}()
	wait.For(t, 5*time.Second, "the watch to be held", func() bool { return h.Srv.Registry().Status().Watchers == 1 })
	var out registry.Instance
	if err := c.Do(ctx, "PATCH", "/api/v1/registry/services/public/default/web/instances/10.1.1.1:80", map[string]any{"enabled": false}, &out); err != nil || out.Enabled {
		t.Fatalf("drain: %+v %v", out, err)
	}
	select {
	case s := <-woke:
		if len(s.Events) != 1 || s.Events[0].Instance.Enabled {
			t.Fatalf("watch: %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll not woken by the drain")
	}
	var audit struct {
		Items []struct{ Action, Resource string }
	}
	if err := c.Do(ctx, "GET", "/api/v1/audit?action=registry.", nil, &audit); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.Items {
		if e.Action == "registry.update" && strings.Contains(e.Resource, "web/10.1.1.1:80") {
			found = true
		}
	}
	if !found {
		t.Fatalf("drain not audited: %+v", audit.Items)
	}
	var st registry.Status
	if err := c.Do(ctx, "GET", "/api/v1/registry/status", nil, &st); err != nil || st.Instances != 1 {
		t.Fatalf("%+v %v", st, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A watcher that stops reading must not hold up the others: the fan-out
// loop skips it once its window is full, the others keep getting every
// change at once, and when it reads again it catches up in order.
func TestSlowWatcherDoesNotStallOthers(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	dialer := func() *rpc.Client {
		c, err := rpc.Dial(ctx, h.Srv.RPCAddr(), rpc.WithToken(h.Token), rpc.WithLogger(quiet()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	open := func(c *rpc.Client) *rpc.ClientStream[registry.WatchRequest, registry.Snapshot] {
		st, err := rpc.NewStream[registry.WatchRequest, registry.Snapshot](ctx, c, "tangram.Registry/Watch")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&registry.WatchRequest{Key: registry.Key{Service: "busy"}}); err != nil {
			t.Fatal(err)
		}
		if s, err := st.Recv(); err != nil || !s.Full {
			t.Fatalf("first answer: %+v %v", s, err)
		}
		return st
	}
	slow := open(dialer())
	fast := open(dialer())
	reg := h.Srv.Registry()
	const n = 4000 // ~100 bytes each: well past a 256 KiB window
	seen := make(chan int, n)
	go func() {
		ports := map[int]bool{}
		for len(ports) < n {
			s, err := fast.Recv()
			if err != nil {
				return
			}
			note := func(port int) {
				if !ports[port] {
					ports[port] = true
					seen <- port
				}
			}
			for _, in := range s.Instances { // a full list when it fell behind the change log
				note(int(in.Port))
			}
			for _, ev := range s.Events {
				note(int(ev.Instance.Port))
			}
		}
	}()
	for i := range n {
		if _, err := reg.Register(ctx, registry.Instance{Key: registry.Key{Service: "busy"}, Host: "10.1.0.1", Port: uint16(1000 + i),
			Weight: 100, Enabled: true, Ephemeral: true}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(10 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case <-seen:
		case <-deadline:
			t.Fatalf("the reading watcher got %d of %d changes while another did not read", got, n)
		}
	}
	// The slow one now reads: every instance, in revision order.
	ports := map[int]bool{}
	var last int64
	for len(ports) < n {
		s, err := slow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if s.Revision < last {
			t.Fatalf("revision went back from %d to %d", last, s.Revision)
		}
		last = s.Revision
		for _, in := range s.Instances {
			ports[int(in.Port)] = true
		}
		for _, ev := range s.Events {
			ports[int(ev.Instance.Port)] = true
		}
	}
}

// A discovery client whose token the servers refuse fails at once with the
// server's error — rpc.Dial through its Resolver included — instead of
// waiting forever for a first list.
func TestRefusedWatchFailsFast(t *testing.T) {
	h := servertest.Start(t)
	bad := newClient(t, h, registry.ClientConfig{Token: "tgm_wrongwrongwrongwrongwrongwrongwrong00"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := rpc.Dial(ctx, "", rpc.WithResolver(bad.Resolver(registry.Key{Service: "echo"})), rpc.WithLogger(quiet()))
	if err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("dial with a refused token: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the dial waited for its deadline (%v) instead of failing fast: %v", time.Since(start), err)
	}
	t.Logf("failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
