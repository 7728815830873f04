package server

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/kv/resp"
)

// trackStep sends a command on connection on (or, with no args, only
// reads) and reads the replies and pushes listed in reads (connection →
// count; the sender's own reply is one of them). skip: the replies differ
// between servers by nature (versions, client IDs) and are not compared.
type trackStep struct {
	on    int
	args  []string
	reads []int // connections to read one message from, in order
	skip  bool
}

func ts(on int, reads []int, args ...string) trackStep {
	return trackStep{on: on, args: args, reads: reads}
}

// trackingScenario: a (0) RESP3 default mode, b (1) a plain writer, c (2)
// a RESP2 connection subscribed to __redis__:invalidate, d (3) a RESP2
// client redirecting to c, e (4) RESP3 in OPTIN mode.
func trackingScenario() []trackStep {
	a, b, c, d, e := 0, 1, 2, 3, 4
	steps := []trackStep{
		{on: a, args: []string{"HELLO", "3"}, reads: []int{a}, skip: true},
		{on: e, args: []string{"HELLO", "3"}, reads: []int{e}, skip: true},
		{on: c, args: []string{"CLIENT", "ID"}, reads: []int{c}, skip: true},
	}
	for _, cn := range []int{a, b, d, e} {
		steps = append(steps, ts(cn, []int{cn}, "SELECT", "11"))
	}
	steps = append(steps,
		ts(b, []int{b}, "FLUSHDB"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "on"),
		ts(a, []int{a}, "CLIENT", "GETREDIR"),
		ts(a, []int{a}, "GET", "k"),
		ts(b, []int{b, a}, "SET", "k", "v"), // a hears of it
		ts(b, []int{b}, "SET", "k", "v2"),   // and only once, until it reads again
		ts(a, []int{a}, "GET", "k"),
		ts(a, []int{a, a}, "SET", "k", "w"), // its own write: the reply, then the push
		ts(a, []int{a}, "MGET", "k", "k2"),
		ts(b, []int{b, a}, "FLUSHDB"), // everything: a null key list
		ts(a, []int{a}, "CLIENT", "TRACKING", "on", "PREFIX", "x"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "on", "BCAST"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "on", "REDIRECT", "987654"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "off"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "on", "BCAST", "OPTIN"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "u:", "PREFIX", "v:", "NOLOOP"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "u:x"),
		ts(b, []int{b, a}, "SET", "u:1", "x"),
		ts(b, []int{b, a}, "SET", "v:1", "x"),
		ts(b, []int{b}, "SET", "z", "x"),
		ts(a, []int{a}, "SET", "u:2", "x"), // NOLOOP: not told of its own write
		ts(a, []int{a}, "CLIENT", "TRACKINGINFO"),
		ts(a, []int{a}, "CLIENT", "TRACKING", "off"),
		ts(a, []int{a}, "CLIENT", "TRACKINGINFO"),
		ts(c, []int{c}, "SUBSCRIBE", "__redis__:invalidate"),
		ts(d, []int{d}, "CLIENT", "TRACKING", "on", "REDIRECT", "$CID"),
		ts(d, []int{d}, "GET", "r"),
		ts(b, []int{b, c}, "SET", "r", "1"), // to c, as a pub/sub message
		ts(d, []int{d}, "GET", "r"),
		ts(b, []int{b, c}, "DEL", "r"),
		ts(d, []int{d}, "GET", "r"),
		ts(b, []int{b, c}, "FLUSHDB"),
		ts(e, []int{e}, "CLIENT", "CACHING", "yes"),
		ts(e, []int{e}, "CLIENT", "TRACKING", "on", "OPTIN"),
		ts(e, []int{e}, "CLIENT", "CACHING", "no"),
		ts(e, []int{e}, "GET", "o1"), // not remembered
		ts(e, []int{e}, "CLIENT", "CACHING", "yes"),
		ts(e, []int{e}, "GET", "o2"), // remembered
		ts(e, []int{e}, "GET", "o3"), // not: CACHING yes covers one command
		ts(b, []int{b}, "SET", "o1", "x"),
		ts(b, []int{b, e}, "SET", "o2", "x"),
		ts(b, []int{b}, "SET", "o3", "x"),
		ts(e, []int{e}, "HSET", "h", "f", "v"),
		ts(e, []int{e}, "CLIENT", "CACHING", "yes"),
		ts(e, []int{e}, "HGET", "h", "f"),
		ts(b, []int{b, e}, "HDEL", "h", "f"), // a deleted key (the hash emptied)
		ts(e, []int{e}, "CLIENT", "CACHING", "yes"),
		ts(e, []int{e}, "EXISTS", "gone"),
		ts(b, []int{b, e}, "SET", "gone", "1", "PX", "1"), // written…
	)
	// Nothing else is pending on any connection: the next reply each gets
	// is its PING's.
	for _, cn := range []int{a, b, c, d, e} {
		steps = append(steps, ts(cn, []int{cn}, "PING"))
	}
	return steps
}

func runTracking(t *testing.T, addr string) [][]byte {
	t.Helper()
	var conns []net.Conn
	var brs []*bufio.Reader
	for range 5 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
		brs = append(brs, bufio.NewReader(conn))
	}
	var out [][]byte
	cid := ""
	for i, st := range trackingScenario() {
		var bs [][]byte
		for _, a := range st.args {
			if a == "$CID" {
				a = cid
			}
			bs = append(bs, []byte(a))
		}
		if _, err := conns[st.on].Write(resp.AppendCommand(nil, bs...)); err != nil {
			t.Fatal(err)
		}
		for _, r := range st.reads {
			conns[r].SetReadDeadline(time.Now().Add(5 * time.Second))
			m, err := readReply(brs[r])
			if err != nil {
				t.Fatalf("%s: step %d %q: reading connection %d: %v (%d replies so far)", addr, i, st.args, r, err, len(out))
			}
			if len(st.args) == 2 && st.args[1] == "ID" {
				cid = strings.TrimSpace(string(m[1:]))
			}
			if st.skip {
				m = nil
			}
			out = append(out, m)
		}
	}
	return out
}

// TestTrackingLikeRedis runs one client-side-caching scenario on five
// connections against Redis (TANGRAM_TEST_REDIS, its database 11) and kv
// and compares every reply and push byte for byte.
func TestTrackingLikeRedis(t *testing.T) {
	raddr := os.Getenv("TANGRAM_TEST_REDIS")
	if raddr == "" {
		raddr = "127.0.0.1:6379"
	}
	s, _ := start(t, nil)
	want := runTracking(t, raddr)
	got := runTracking(t, s.Addr())
	steps := trackingScenario()
	k := 0
	for _, st := range steps {
		for _, r := range st.reads {
			if !bytes.Equal(want[k], got[k]) {
				t.Errorf("%q (read on %d):\n redis: %q\n    kv: %q", st.args, r, want[k], got[k])
			}
			k++
		}
	}
	t.Logf("%d messages compared", k)
}

// A tracked key that expires is invalidated by the active expiry (no
// read needed), never before its time.
func TestTrackedKeyExpiry(t *testing.T) {
	s, rc := start(t, nil)
	conn, br := raw(t, s)
	conn.Write(resp.AppendCommand(nil, []byte("HELLO"), []byte("3")))
	if _, err := readReply(br); err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("CLIENT TRACKING on\r\n"))
	expectLine(t, br, "+OK")
	at := time.Now().Add(300 * time.Millisecond)
	ok(rc.Set(context.Background(), "soon", "v", 0).Result())
	ok(rc.PExpireAt(context.Background(), "soon", at).Result())
	conn.Write([]byte("GET soon\r\n"))
	expectLine(t, br, "$1")
	expectLine(t, br, "v")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := readReply(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(m) != ">2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\nsoon\r\n" {
		t.Fatalf("push %q", m)
	}
	// Expired means expiry < now in whole milliseconds: the push cannot
	// leave before the millisecond after the expiry.
	if early := at.Truncate(time.Millisecond).Add(time.Millisecond).Sub(time.Now()); early > 0 {
		t.Fatalf("invalidated %v before the key's time", early)
	}
}
