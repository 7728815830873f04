package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/internal/wait"
)

// raw dials s and returns the connection and a reader of its replies.
func raw(t *testing.T, s *Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReaderSize(conn, 1<<16)
}

func expectLine(t *testing.T, br *bufio.Reader, want string) {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil || line != want+"\r\n" {
		t.Fatalf("read %q (%v), want %q", line, err, want)
	}
}

// A client waiting in BLPOP holds back the commands it pipelined after it
// (they run after, in order), while every other client is served.
func TestBlockedClientKeepsItsOrder(t *testing.T) {
	s, rc := start(t, nil)
	ctx := context.Background()
	conn, br := raw(t, s)
	if _, err := io.WriteString(conn, "BLPOP q 10\r\nSET after 1\r\nGET after\r\n"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the client to block", func() bool {
		return strings.Contains(ok(rc.Info(ctx, "clients").Result()), "blocked_clients:1")
	})
	if n := ok(rc.Exists(ctx, "after").Result()); n != 0 {
		t.Fatal("a command pipelined after BLPOP ran while it waited")
	}
	ok(rc.LPush(ctx, "q", "x").Result())
	expectLine(t, br, "*2")
	expectLine(t, br, "$1")
	expectLine(t, br, "q")
	expectLine(t, br, "$1")
	expectLine(t, br, "x")
	expectLine(t, br, "+OK")
	expectLine(t, br, "$1")
	expectLine(t, br, "1")
}

// A blocked client whose peer goes away stops waiting: it takes nothing
// pushed afterwards.
func TestBlockedClientGoneAway(t *testing.T) {
	s, rc := start(t, nil)
	ctx := context.Background()
	conn, _ := raw(t, s)
	io.WriteString(conn, "BLPOP gone 30\r\n")
	wait.For(t, 5*time.Second, "the client to block", func() bool {
		return strings.Contains(ok(rc.Info(ctx, "clients").Result()), "blocked_clients:1")
	})
	conn.Close()
	wait.For(t, 5*time.Second, "the blocked client to be gone", func() bool {
		return strings.Contains(ok(rc.Info(ctx, "clients").Result()), "blocked_clients:0")
	})
	ok(rc.RPush(ctx, "gone", "v").Result())
	if n := ok(rc.LLen(ctx, "gone").Result()); n != 1 {
		t.Fatalf("a departed client took the value: LLEN %d", n)
	}
}

// A peer that sends its commands and shuts its side down (printf … | nc)
// still receives every reply.
func TestHalfClosedPeerGetsItsReplies(t *testing.T) {
	s, _ := start(t, nil)
	conn, br := raw(t, s)
	io.WriteString(conn, "SET a b\r\nGET a\r\nINCR n\r\n")
	conn.(*net.TCPConn).CloseWrite()
	all, err := io.ReadAll(br)
	if err != nil || string(all) != "+OK\r\n$1\r\nb\r\n:1\r\n" {
		t.Fatalf("%q %v", all, err)
	}
}

// A client that pipelines far more reply bytes than the socket holds, and
// reads them only later, gets every byte in order: the server writes what
// the socket takes, waits for room, and reads no more requests from that
// client meanwhile.
func TestSlowReaderGetsEveryReply(t *testing.T) {
	s, rc := start(t, nil)
	ctx := context.Background()
	val := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MB
	ok(rc.Set(ctx, "big", val, 0).Result())
	conn, br := raw(t, s)
	const n = 64
	sent := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < n && err == nil; i++ {
			_, err = fmt.Fprintf(conn, "GET big\r\nECHO %d\r\n", i)
		}
		sent <- err
	}()
	// Let the replies pile up unread before reading any.
	wait.For(t, 5*time.Second, "the server to hold replies for the client", func() bool {
		return len(ok(rc.ClientList(ctx).Result())) > 0
	})
	hdr := fmt.Sprintf("$%d\r\n", len(val))
	buf := make([]byte, len(val)+2)
	for i := 0; i < n; i++ {
		line, err := br.ReadString('\n')
		if err != nil || line != hdr {
			t.Fatalf("reply %d: %q %v", i, line, err)
		}
		if _, err := io.ReadFull(br, buf); err != nil || !bytes.Equal(buf[:len(val)], val) {
			t.Fatalf("reply %d: the value came back damaged (%v)", i, err)
		}
		expectLine(t, br, fmt.Sprintf("$%d", len(fmt.Sprint(i))))
		expectLine(t, br, fmt.Sprint(i))
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// Many clients pipelining at once on few loops: every reply reaches the
// client that asked, in its order.
func TestManyPipeliningClients(t *testing.T) {
	s, _ := start(t, nil)
	const clients, per = 40, 500
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		go func() {
			conn, err := net.Dial("tcp", s.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			var req bytes.Buffer
			for i := 0; i < per; i++ {
				fmt.Fprintf(&req, "*3\r\n$3\r\nSET\r\n$6\r\nk%02d%03d\r\n$3\r\n%03d\r\n*2\r\n$3\r\nGET\r\n$6\r\nk%02d%03d\r\n", c, i, i, c, i)
			}
			go conn.Write(req.Bytes())
			br := bufio.NewReader(conn)
			for i := 0; i < per; i++ {
				a, _ := br.ReadString('\n')
				b, _ := br.ReadString('\n')
				v, err := br.ReadString('\n')
				if a != "+OK\r\n" || b != "$3\r\n" || v != fmt.Sprintf("%03d\r\n", i) {
					errs <- fmt.Errorf("client %d reply %d: %q %q %q %v", c, i, a, b, v, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for c := 0; c < clients; c++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// Within one EXEC, a key's entry remembered by one command is not used
// after another command removed it (the per-command lookup memo).
func TestExecSeesRemovals(t *testing.T) {
	s, _ := start(t, nil)
	conn, br := raw(t, s)
	io.WriteString(conn, "MULTI\r\nSET k v\r\nFLUSHALL\r\nGET k\r\nSET k w\r\nDEL k\r\nEXISTS k\r\nSET k x\r\nEXEC\r\n")
	for _, want := range []string{"+OK", "+QUEUED", "+QUEUED", "+QUEUED", "+QUEUED", "+QUEUED", "+QUEUED", "+QUEUED",
		"*7", "+OK", "+OK", "$-1", "+OK", ":1", ":0", "+OK"} {
		expectLine(t, br, want)
	}
	io.WriteString(conn, "GET k\r\n")
	expectLine(t, br, "$1")
	expectLine(t, br, "x")
}

// Redisson's lock scripts run natively: a waiter subscribed to the lock's
// channel hears the release, and the lock's hold count and lease survive
// a restart (the scripts' effects are logged as commands).
func TestRedissonLockScripts(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	open := func() (*Server, *redis.Client) {
		s, rc := start(t, func(c *Config) { c.Dir, c.Fsync = dir, FsyncAlways })
		return s, rc
	}
	s, rc := open()
	sub := rc.Subscribe(ctx, "redisson_lock__channel:{job}")
	defer sub.Close()
	ok(sub.Receive(ctx))
	lock := func(owner string) any {
		v, err := rc.Eval(ctx, redissonLock, []string{"job"}, 30000, owner).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return v
	}
	unlock := func(owner, req string) any {
		v, err := rc.EvalSha(ctx, "6866459238a13a701d42f4971f12d9f3a50e2442",
			[]string{"job", "redisson_lock__channel:{job}", "redisson_unlock_latch:{job}:" + req}, 0, 30000, owner, "publish", 5000).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return v
	}
	if v := lock("c1:1"); v != nil {
		t.Fatalf("free lock refused: %v", v)
	}
	if v := lock("c1:1"); v != nil {
		t.Fatalf("re-entry refused: %v", v)
	}
	if v, _ := lock("c2:1").(int64); v <= 0 || v > 30000 {
		t.Fatalf("another thread got %v, want the lease left", v)
	}
	rc.Close()
	s.Close()

	s, rc = open()
	if n := ok(rc.HGet(ctx, "job", "c1:1").Result()); n != "2" {
		t.Fatalf("hold count after restart %q", n)
	}
	if ttl := ok(rc.PTTL(ctx, "job").Result()); ttl <= 0 || ttl > 30*time.Second {
		t.Fatalf("lease after restart %v", ttl)
	}
	sub = rc.Subscribe(ctx, "redisson_lock__channel:{job}")
	defer sub.Close()
	ok(sub.Receive(ctx))
	if v := unlock("c1:1", "a"); v != int64(0) {
		t.Fatalf("first unlock %v, want 0 (still held once)", v)
	}
	if v := unlock("c1:1", "b"); v != int64(1) {
		t.Fatalf("second unlock %v, want 1 (released)", v)
	}
	m := wait.Receive(t, 5*time.Second, "the release on the lock's channel", sub.Channel())
	if m.Payload != "0" {
		t.Fatalf("release message %q", m.Payload)
	}
	if v := unlock("c1:1", "b"); v != int64(1) {
		t.Fatalf("repeated unlock request %v, want its first answer 1", v)
	}
	if n := ok(rc.Exists(ctx, "job").Result()); n != 0 {
		t.Fatal("released lock still there")
	}
}

// A key's table node (key, entry, next) fits the 64-byte size class: the
// memory per key depends on it.
func TestNodeFitsSizeClass(t *testing.T) {
	if s := unsafe.Sizeof(entry{}); s != 32 {
		t.Fatalf("entry is %d bytes, want 32", s)
	}
	if s := unsafe.Sizeof(node[entry]{}); s > 64 {
		t.Fatalf("a table node is %d bytes, over the 64-byte size class", s)
	}
}
