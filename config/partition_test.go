package config_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/server/servertest"
)

// proxy forwards TCP connections to a target until blackhole is called;
// from then on it keeps every connection open but passes no bytes, as a
// network partition does (no RST, no FIN).
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	holed  bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			holed := p.holed
			p.mu.Unlock()
			if holed {
				continue // accepted, never answered
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); p.pipe(up, c) }()
			go func() { defer p.wg.Done(); p.pipe(c, up) }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

// pipe copies src to dst until the blackhole, then discards.
func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		holed := p.holed
		p.mu.Unlock()
		if holed {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *proxy) blackhole() {
	p.mu.Lock()
	p.holed = true
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

// TestClientPartition: the client's server is cut off without a FIN or
// RST (a partition, not a crash). The held watch times out, the client
// moves to the other server and gets the release made meanwhile.
func TestClientPartition(t *testing.T) {
	dsn := storetest.DSN(t, "postgres")
	key := bytes.Repeat([]byte{3}, 32)
	a := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	b := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	cb := b.Client()
	mustDo(t, cb, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, cb, "application", "k", "v1")
	publish(t, cb, "application", "one")
	px := newProxy(t, a.Srv.Addr())
	cl, err := config.NewClient(context.Background(), config.ClientOptions{Servers: []string{px.url(), b.URL}, Token: a.Token, Env: "dev", App: "demo",
		CacheDir: servertest.CacheDir(t), WatchTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitFor(t, "watch held on a through the proxy", 5*time.Second, func() bool { return a.Srv.Config().Watchers() > 0 })
	px.blackhole()
	setItem(t, cb, "application", "k", "v2")
	start := time.Now()
	publish(t, cb, "application", "two")
	waitFor(t, "client to leave the partitioned server and catch up", 20*time.Second, func() bool { return cl.String("k", "") == "v2" })
	t.Logf("caught up %v after the release (watch hold 2s + 5s margin)", time.Since(start).Round(time.Millisecond))
	if cl.String("k", "") != "v2" {
		t.Fatal("lost the release")
	}
}
