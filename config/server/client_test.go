package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	configserver "github.com/tangram-dev/tangram/config/server"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

type appConf struct {
	Greeting string        `config:"greeting"`
	Limit    int           `config:"limit"`
	Timeout  time.Duration `config:"timeout"`
	Hosts    []string      `config:"hosts"`
	Debug    bool          `config:"debug"`
}

// syncBuf is a log sink safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// deadAddr returns an address on which nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestClientWatchBindFailover(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	for k, v := range map[string]string{"greeting": "hello", "limit": "5", "timeout": "2s", "hosts": "a, b", "debug": "true"} {
		setItem(t, c, "application", k, v)
	}
	publish(t, c, "application", "first")

	ctx := context.Background()
	// The first address is dead: the client fails over to the live one.
	cl, err := config.NewClient(ctx, config.ClientConfig{Servers: []string{deadAddr(t), h.URL}, Token: h.Token, Env: "dev", App: "demo",
		CacheDir: servertest.CacheDir(t), Instance: "test-1", WatchTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.String("greeting", "") != "hello" || cl.Int("limit", 0) != 5 || cl.Duration("timeout", 0) != 2*time.Second || !cl.Bool("debug", false) {
		t.Fatalf("getters: %v", cl.Snapshot("application"))
	}
	if cl.Int("missing", 7) != 7 || cl.Int("greeting", 9) != 9 {
		t.Fatal("defaults not applied")
	}
	bound, err := config.Bind[appConf](cl, "application")
	if err != nil {
		t.Fatal(err)
	}
	if v := bound.Load(); v.Greeting != "hello" || v.Limit != 5 || len(v.Hosts) != 2 || v.Hosts[1] != "b" || v.Timeout != 2*time.Second {
		t.Fatalf("bound: %+v", v)
	}
	events := make(chan config.ChangeEvent, 10)
	cl.OnChange(func(ev config.ChangeEvent) { events <- ev })
	type oldNew struct{ old, new string }
	greetings := make(chan oldNew, 10)
	cl.Watch("application", "greeting", func(old, new string) { greetings <- oldNew{old, new} })

	setItem(t, c, "application", "greeting", "hi")
	mustDo(t, c, "DELETE", ns("application")+"/items/debug", nil, nil)
	publish(t, c, "application", "second")
	select {
	case ev := <-events:
		byKey := map[string]config.ValueChange{}
		for _, ch := range ev.Changes {
			byKey[ch.Key] = ch
		}
		if g := byKey["greeting"]; g.Old != "hello" || g.New != "hi" || g.Op != "modified" {
			t.Fatalf("greeting change %+v", g)
		}
		if d := byKey["debug"]; d.Op != "deleted" || d.Old != "true" {
			t.Fatalf("debug change %+v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change event within 5s")
	}
	if v := bound.Load(); v.Greeting != "hi" || v.Debug {
		t.Fatalf("hot reload: %+v", v)
	}
	if g := <-greetings; g.old != "hello" || g.new != "hi" {
		t.Fatalf("Watch(greeting): %+v", g)
	}
	// A change that does not decode keeps the previous value.
	setItem(t, c, "application", "limit", "many")
	publish(t, c, "application", "bad limit")
	<-events
	if bound.Err() == nil || bound.Load().Limit != 5 {
		t.Fatalf("bad change: err=%v value=%+v", bound.Err(), bound.Load())
	}
	// The console/API shows which release this instance holds.
	var ins struct{ Items []config.Instance }
	mustDo(t, c, "GET", ns("application")+"/instances", nil, &ins)
	if len(ins.Items) != 1 || ins.Items[0].Instance != "test-1" || ins.Items[0].ReleaseID == 0 {
		t.Fatalf("instances: %+v", ins.Items)
	}
	// Errors the client cannot fix are reported, not retried forever.
	_, err = config.NewClient(ctx, config.ClientConfig{Servers: []string{h.URL}, Token: h.Token, Env: "dev", App: "nope", CacheDir: servertest.CacheDir(t)})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown app: %v", err)
	}
}

// TestClientDiskFallback stops the server: a new client starts from the
// disk copy and says so; when a server returns, it catches up on what
// changed meanwhile.
func TestClientDiskFallback(t *testing.T) {
	dsn := storetest.DSN(t, "sqlite")
	key := bytes.Repeat([]byte{7}, 32)
	h := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	c := h.Client()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, c, "application", "greeting", "hello")
	publish(t, c, "application", "first")
	cache := servertest.CacheDir(t)
	opts := config.ClientConfig{Servers: []string{h.URL}, Token: h.Token, Env: "dev", App: "demo", CacheDir: cache, WatchTimeout: 2 * time.Second}
	cl, err := config.NewClient(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	cl.Close()
	addr := strings.TrimPrefix(h.URL, "http://")
	if err := h.Srv.Close(); err != nil {
		t.Fatal(err)
	}

	var logs syncBuf
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cl, err = config.NewClient(context.Background(), opts)
	if err != nil {
		t.Fatalf("start with server down: %v", err)
	}
	defer cl.Close()
	if !cl.FromCache("application") || cl.String("greeting", "") != "hello" {
		t.Fatalf("disk copy not used: %v", cl.Snapshot("application"))
	}
	if !strings.Contains(logs.String(), "local disk copy") {
		t.Fatalf("no log line about the disk copy: %s", logs.String())
	}
	// No disk copy and no server: a clear error.
	_, err = config.NewClient(context.Background(), config.ClientConfig{Servers: opts.Servers, Token: h.Token, Env: "dev", App: "demo", CacheDir: servertest.CacheDir(t)})
	if !errors.Is(err, config.ErrNoConfig) {
		t.Fatalf("no server, no copy: %v", err)
	}

	// The server comes back on the same address with a change made while
	// the client was cut off (written straight to the store by a second server).
	h2 := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key), servertest.WithAddr(addr))
	setItem(t, h2.Client(), "application", "greeting", "back")
	publish(t, h2.Client(), "application", "while away")
	wait.For(t, 20*time.Second, "client to catch up", func() bool { return cl.String("greeting", "") == "back" })
	if cl.FromCache("application") {
		t.Fatal("still flagged as disk copy")
	}
}

// TestClusterPush runs two servers on one PostgreSQL (LISTEN/NOTIFY: a few
// milliseconds) and on one MariaDB (release-message scan: about a second):
// a release published on one reaches a client watching the other.
func TestClusterPush(t *testing.T) {
	for _, d := range []store.Dialect{store.Postgres, store.MySQL} {
		t.Run(string(d), func(t *testing.T) { clusterPush(t, d) })
	}
}

func clusterPush(t *testing.T, d store.Dialect) {
	dsn := storetest.DSN(t, d)
	key := bytes.Repeat([]byte{9}, 32)
	a := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	b := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	ca := a.Client()
	mustDo(t, ca, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, ca, "application", "k", "v1")
	publish(t, ca, "application", "one")

	cl, err := config.NewClient(context.Background(), config.ClientConfig{Servers: []string{b.URL}, Token: b.Token, Env: "dev", App: "demo", CacheDir: servertest.CacheDir(t), WatchTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.String("k", "") != "v1" {
		t.Fatalf("server b serves %v", cl.Snapshot("application"))
	}
	wait.For(t, 5*time.Second, "watch held on b", func() bool { return b.Srv.Config().Watchers() > 0 })
	// The client fetched from b; every server's client list shows it once
	// b has flushed its fetch records.
	wait.For(t, 3*configserver.InstanceFlushInterval, "client instance visible on a", func() bool {
		var ins struct{ Items []config.Instance }
		mustDo(t, ca, "GET", ns("application")+"/instances", nil, &ins)
		return len(ins.Items) == 1 && ins.Items[0].ReleaseID > 0
	})
	setItem(t, ca, "application", "k", "v2")
	start := time.Now()
	publish(t, ca, "application", "two")
	wait.For(t, 5*time.Second, "client on b to see the release made on a", func() bool { return cl.String("k", "") == "v2" })
	lag := time.Since(start)
	t.Logf("cross-server push took %v", lag)
	if lag > 3*time.Second {
		t.Fatalf("cross-server push took %v; want about the 1s scan interval", lag)
	}
	if d != store.Postgres {
		return
	}
	// Kill the LISTEN connections: pushes keep arriving (scan), and the
	// servers LISTEN again.
	ctx := context.Background()
	listeners := func() int { // the config center's (other components listen on channels of their own)
		var n int
		if err := b.Srv.Store().QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN tangram_config_release%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := listeners(); n != 2 {
		t.Fatalf("%d LISTEN connections, want 2", n)
	}
	if _, err := b.Srv.Store().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`); err != nil {
		t.Fatal(err)
	}
	setItem(t, ca, "application", "k", "v3")
	publish(t, ca, "application", "three")
	wait.For(t, 5*time.Second, "push with the LISTEN connections killed", func() bool { return cl.String("k", "") == "v3" })
	wait.For(t, 10*time.Second, "servers to LISTEN again", func() bool { return listeners() == 2 })
}

// TestClientFailoverLosesNoChange: a client watching server A keeps up when
// A dies: it reconnects to B (same PostgreSQL store) and, thanks to the
// notification ids it sends, gets every release made while it moved.
func TestClientFailoverLosesNoChange(t *testing.T) {
	dsn := storetest.DSN(t, "postgres")
	key := bytes.Repeat([]byte{5}, 32)
	a := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	b := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	cb := b.Client()
	mustDo(t, cb, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, cb, "application", "k", "v1")
	publish(t, cb, "application", "one")
	cl, err := config.NewClient(context.Background(), config.ClientConfig{Servers: []string{a.URL, b.URL}, Token: a.Token, Env: "dev", App: "demo",
		CacheDir: servertest.CacheDir(t), WatchTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	wait.For(t, 5*time.Second, "watch held on a", func() bool { return a.Srv.Config().Watchers() > 0 })
	if err := a.Srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Releases land on b while the client is moving over.
	setItem(t, cb, "application", "k", "v2")
	setItem(t, cb, "application", "extra", "x")
	publish(t, cb, "application", "two")
	wait.For(t, 15*time.Second, "client to fail over and catch up", func() bool {
		return cl.String("k", "") == "v2" && cl.String("extra", "") == "x"
	})
}

// TestClientsUnderReleaseStorm: many clients, releases back to back, so
// watches are parked, answered, idled and handed back while others are
// being parked. Every client must end on the last release well within its
// watch timeout (2 s + 5 s): a watch left unanswered or a connection left
// without an owner would make it wait for that timeout.
func TestClientsUnderReleaseStorm(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	mustDo(t, c, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, c, "application", "k", "0")
	publish(t, c, "application", "0")
	var clients []*config.Client
	for i := 0; i < 50; i++ {
		cl, err := config.NewClient(context.Background(), config.ClientConfig{Servers: []string{h.URL}, Token: h.Token, Env: "dev", App: "demo",
			CacheDir: servertest.CacheDir(t), WatchTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}
	const rounds = 30
	for i := 1; i <= rounds; i++ {
		setItem(t, c, "application", "k", strconv.Itoa(i))
		publish(t, c, "application", strconv.Itoa(i))
		time.Sleep(time.Duration(i%4) * 5 * time.Millisecond) // sleep-ok: releases at uneven pace, some while a client refetches
	}
	want := strconv.Itoa(rounds)
	wait.For(t, 4*time.Second, "every client to hold the last release", func() bool {
		for _, cl := range clients {
			if cl.String("k", "") != want {
				return false
			}
		}
		return true
	})
}

// TestSecretKeyMismatch: a second server on the same store with another
// secret key refuses to start, naming the problem.
func TestSecretKeyMismatch(t *testing.T) {
	dsn := storetest.DSN(t, "sqlite")
	servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(bytes.Repeat([]byte{1}, 32)))
	srv, err := server.New(server.Config{HTTPAddr: "127.0.0.1:0", RPCAddr: "127.0.0.1:0", BrokerAddr: "off", DataDir: t.TempDir(), Store: dsn, SecretKey: bytes.Repeat([]byte{2}, 32),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start(context.Background())
	if !errors.Is(err, configserver.ErrKeyMismatch) || !strings.Contains(err.Error(), "same --secret-key-file") {
		t.Fatalf("start with another key: %v", err)
	}
	// The same key is accepted.
	servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(bytes.Repeat([]byte{1}, 32)))
}
