package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tangram-dev/tangram/proxy"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func register(t *testing.T, c *registry.Client, svc, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if _, err := c.Register(context.Background(), registry.Instance{Key: registry.Key{Service: svc}, Host: host, Port: uint16(p),
		Weight: 100, Enabled: true, Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
}

func rpcBackend(t *testing.T) (string, func()) {
	srv, _ := rpc.NewServer(rpc.Config{Logger: quiet()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	rpc.Handle(srv, "Who/Am", func(ctx context.Context, _ *struct{}) (*string, error) {
		s := addr + "|" + rpc.Incoming(ctx)[rpc.MetaCaller]
		return &s, nil
	})
	go srv.Serve(ln)
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return addr, stop
}

func startProxy(t *testing.T, h *servertest.Harness, routes ...proxy.Route) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{Logger: quiet(), Routes: routes,
		Registry: registry.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token, Logger: quiet()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// RPC through the proxy: calls are balanced per call over the instances the
// registry lists, follow a drain, and continue when an instance dies.
func TestRPCRoute(t *testing.T) {
	h := servertest.Start(t)
	prov, err := registry.NewClient(context.Background(), registry.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token,
		Logger: quiet(), HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	a1, stop1 := rpcBackend(t)
	a2, _ := rpcBackend(t)
	register(t, prov, "who", a1)
	register(t, prov, "who", a2)
	p := startProxy(t, h, proxy.Route{Listen: "127.0.0.1:0", Service: registry.Key{Service: "who"}, Protocol: "rpc"})
	c, err := rpc.Dial(context.Background(), p.Addrs()[0], rpc.WithLogger(quiet()), rpc.WithInterceptors(rpc.ClientCaller("tester")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := map[string]int{}
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < 2 && time.Now().Before(deadline) {
		s, err := rpc.Call[string](context.Background(), c, "Who/Am", &struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		seen[*s]++
	}
	if seen[a1+"|tester"] == 0 || seen[a2+"|tester"] == 0 {
		t.Fatalf("calls (with their metadata) reached %v", seen)
	}
	stop1() // instance 1 dies; the registry still lists it for a while
	// A call the proxy forwarded over instance 1's connection in the
	// instant it closed fails (Unavailable: the proxy cannot know whether
	// the dying instance ran it, so it does not run it twice); the proxy
	// then takes the instance out of rotation and every later call
	// reaches instance 2.
	lost := 0
	for range 20 {
		s, err := rpc.Call[string](context.Background(), c, "Who/Am", &struct{}{})
		if err != nil {
			if lost++; lost > 1 || rpc.CodeOf(err) != rpc.Unavailable {
				t.Fatalf("call through the proxy after an instance died: %v (%d failed)", err, lost)
			}
			continue
		}
		if *s != a2+"|tester" {
			t.Fatalf("answer from %s", *s)
		}
	}
}

// HTTP through the proxy: balanced, and a GET whose instance is unreachable
// is retried on another.
func TestHTTPRoute(t *testing.T) {
	h := servertest.Start(t)
	prov, err := registry.NewClient(context.Background(), registry.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token,
		Logger: quiet(), HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	var backs []*httptest.Server
	for i := range 2 {
		name := "web-" + strconv.Itoa(i)
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name+" "+r.URL.Path)
		}))
		t.Cleanup(s.Close)
		backs = append(backs, s)
		register(t, prov, "web", s.Listener.Addr().String())
	}
	p := startProxy(t, h, proxy.Route{Listen: "127.0.0.1:0", Service: registry.Key{Service: "web"}, Protocol: "http"})
	get := func() string {
		resp, err := http.Get("http://" + p.Addrs()[0] + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		return string(b)
	}
	seen := map[string]bool{}
	for range 20 {
		seen[get()] = true
	}
	if !seen["web-0 /hello"] || !seen["web-1 /hello"] {
		t.Fatalf("answers %v", seen)
	}
	backs[0].Close() // unreachable now
	for range 10 {
		if got := get(); got != "web-1 /hello" {
			t.Fatalf("got %q", got)
		}
	}
}

func TestParseRoute(t *testing.T) {
	r, err := proxy.ParseRoute(":9001=rpc:orders")
	if err != nil || r.Protocol != "rpc" || r.Service.Service != "orders" {
		t.Fatalf("%+v %v", r, err)
	}
	r, err = proxy.ParseRoute("127.0.0.1:8080=http:prod/payments/web")
	if err != nil || r.Service.Namespace != "prod" || r.Service.Group != "payments" {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", ":9001", ":9001=ftp:x", "nohost=rpc:x", ":1=rpc:a/b"} {
		if _, err := proxy.ParseRoute(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
