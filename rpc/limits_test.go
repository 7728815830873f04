package rpc

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
)

// lockedBuffer is a log sink shared by the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) lines() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), "\n")
}

func serveForTest(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return srv, ln.Addr().String()
}

// TestGarbageConnectionsAreCountedNotLogged: anyone can open connections
// that send garbage, without a token; each is counted, and the log gets a
// bounded number of lines saying how many it left out.
func TestGarbageConnectionsAreCountedNotLogged(t *testing.T) {
	var logs lockedBuffer
	srv, addr := serveForTest(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const n = 300
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		_, _ = io.Copy(io.Discard, c) // until the server closes it
		c.Close()
	}
	wait.For(t, 10*time.Second, "every garbage connection counted", func() bool { return srv.BadConns() == n })
	if got := logs.lines(); got > 20 {
		t.Fatalf("%d garbage connections wrote %d log lines", n, got)
	}
	if !strings.Contains(logs.String(), "suppressed=") {
		t.Fatalf("the log does not say how many it left out:\n%s", logs.String())
	}
}

// TestMaxConns: a connection beyond the limit is closed at once.
func TestMaxConns(t *testing.T) {
	srv, addr := serveForTest(t, Config{MaxConns: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	wait.For(t, 5*time.Second, "two connections served", func() bool {
		srv.mu.RLock()
		defer srv.mu.RUnlock()
		return len(srv.conns) == 2
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the third connection was served")
	}
	if srv.RefusedConns() != 1 {
		t.Fatalf("refused %d", srv.RefusedConns())
	}
}

// A handler's ConnContext ends when the client's connection closes, not
// when the call ends: servers tie a client's session to it.
func TestConnContextEndsWithTheConnection(t *testing.T) {
	srv, err := NewServer(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan context.Context, 1)
	if err := Handle(srv, "S/Hold", func(ctx context.Context, req *struct{}) (*struct{}, error) {
		got <- ConnContext(ctx)
		return &struct{}{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Call[struct{}](context.Background(), c, "S/Hold", &struct{}{}); err != nil {
		t.Fatal(err)
	}
	conn := <-got
	if conn == nil || conn.Err() != nil {
		t.Fatalf("connection context %v after the call", conn)
	}
	if ConnContext(context.Background()) != nil {
		t.Fatal("a connection context outside a call")
	}
	c.Close()
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection context outlived the connection")
	}
}
