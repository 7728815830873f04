package store

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, dir string, flush string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, SegmentSize: 64 << 10, QueueFileEntries: 100, Flush: flush, FlushInterval: 20 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func body(topic string, q, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("%s/%d/%d;", topic, q, i)), 1+i%40)
}

// Messages of several topics and queues go in across many segments and come
// back out of their queues in order, with their properties — before and
// after a restart, where queue offsets continue.
func TestPutGetAcrossSegmentsAndRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FlushAsync)
	const n = 600
	for i := range n {
		for _, topic := range []string{"orders", "%RETRY%group"} {
			q := i % 3
			m := &Message{Topic: topic, QueueID: uint32(q), BornAt: int64(i), Properties: map[string]string{"KEYS": strconv.Itoa(i), TagProperty: "t" + strconv.Itoa(i%2)},
				Body: body(topic, q, i)}
			if err := s.Put(m); err != nil {
				t.Fatal(err)
			}
			if m.QueueOffset != int64(i/3) {
				t.Fatalf("queue offset %d, want %d", m.QueueOffset, i/3)
			}
		}
	}
	segs, _ := os.ReadDir(filepath.Join(dir, "commitlog"))
	if len(segs) < 5 {
		t.Fatalf("only %d segments: the test means to cross several", len(segs))
	}
	check := func(s *Store) {
		t.Helper()
		s.WaitIndexed()
		for _, topic := range []string{"orders", "%RETRY%group"} {
			for q := range 3 {
				var got []*Message
				for from := int64(0); ; {
					ms, next, err := s.Get(topic, uint32(q), from, 37)
					if err != nil {
						t.Fatal(err)
					}
					if len(ms) == 0 {
						break
					}
					got, from = append(got, ms...), next
				}
				if len(got) != n/3 {
					t.Fatalf("%s/%d: %d messages, want %d", topic, q, len(got), n/3)
				}
				for k, m := range got {
					i := k*3 + q
					if !bytes.Equal(m.Body, body(topic, q, i)) || m.Properties["KEYS"] != strconv.Itoa(i) || m.QueueOffset != int64(k) || m.BornAt != int64(i) {
						t.Fatalf("%s/%d #%d: %+v", topic, q, k, m)
					}
				}
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(&Message{Topic: "orders", Body: []byte("x")}); err != ErrClosed {
		t.Fatalf("put after close: %v", err)
	}
	s = open(t, dir, FlushAsync)
	defer s.Close()
	check(s)
	m := &Message{Topic: "orders", QueueID: 0, Body: []byte("after restart")}
	if err := s.Put(m); err != nil || m.QueueOffset != n/3 {
		t.Fatalf("after restart: queue offset %d (want %d), %v", m.QueueOffset, n/3, err)
	}
}

// crash stops a store as a killed process would: no final index, flush or
// checkpoint.
func crash(s *Store) {
	close(s.stop)
	s.cl.shutFlush()
	s.wg.Wait()
	s.closeFiles()
}

// A torn record at the commitlog's end is cut off at recovery, with the
// consume queue entries pointing at it; everything before it stays.
func TestRecoveryTruncatesTornTail(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FlushSync)
	var last *Message
	for i := range 50 {
		last = &Message{Topic: "t", Body: []byte(fmt.Sprintf("message %d", i))}
		if err := s.Put(last); err != nil {
			t.Fatal(err)
		}
	}
	s.WaitIndexed()
	crash(s)
	// Tear the last record: garbage over its second half.
	seg := filepath.Join(dir, "commitlog", segmentName(last.Offset-last.Offset%(64<<10)))
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage!"), last.Offset%(64<<10)+int64(last.Size)/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s = open(t, dir, FlushSync)
	defer s.Close()
	if s.End() != last.Offset {
		t.Fatalf("recovered end %d, want %d (just before the torn record)", s.End(), last.Offset)
	}
	if got := s.MaxOffset("t", 0); got != 49 {
		t.Fatalf("queue has %d entries, want 49", got)
	}
	ms, _, err := s.Get("t", 0, 0, 100)
	if err != nil || len(ms) != 49 || string(ms[48].Body) != "message 48" {
		t.Fatalf("after recovery: %d messages, %v", len(ms), err)
	}
	// The next append takes the torn record's place and queue offset.
	m := &Message{Topic: "t", Body: []byte("again")}
	if err := s.Put(m); err != nil || m.Offset != last.Offset || m.QueueOffset != 49 {
		t.Fatalf("append after recovery at %d/%d: %v", m.Offset, m.QueueOffset, err)
	}
}

func TestBadInput(t *testing.T) {
	s := open(t, t.TempDir(), FlushAsync)
	defer s.Close()
	for _, m := range []*Message{
		{Topic: "", Body: []byte("x")},
		{Topic: "../etc", Body: []byte("x")},
		{Topic: strings.Repeat("t", 200), Body: []byte("x")},
		{Topic: "t", Body: make([]byte, 70<<10)}, // larger than a 64 KiB segment
	} {
		if err := s.Put(m); err == nil {
			t.Errorf("put of topic %.20q, %d bytes accepted", m.Topic, len(m.Body))
		}
	}
	if _, err := Open(Config{Dir: t.TempDir(), SegmentSize: 1000}); err == nil {
		t.Error("a segment size that is not a page multiple was accepted")
	}
}

// TestKill9SyncFlush kills a writing process with SIGKILL: every message it
// had acknowledged (sync flush) is there after recovery, with its bytes,
// exactly once.
func TestKill9SyncFlush(t *testing.T) {
	if os.Getenv("MQSTORE_CHILD_DIR") != "" {
		child()
		return
	}
	if testing.Short() {
		t.Skip("kills a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKill9SyncFlush$")
	cmd.Env = append(os.Environ(), "MQSTORE_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		i, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "acked "))
		if err != nil {
			continue
		}
		acked[i] = true
		if len(acked) == 3000 {
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	cmd.Wait()
	if len(acked) < 3000 {
		t.Fatalf("the child acknowledged only %d messages", len(acked))
	}
	s := open(t, dir, FlushSync)
	defer s.Close()
	s.WaitIndexed()
	seen := map[int]int{}
	for q := range 4 {
		for from := int64(0); ; {
			ms, next, err := s.Get("k9", uint32(q), from, 500)
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) == 0 {
				break
			}
			for _, m := range ms {
				i, _ := strconv.Atoi(m.Properties["i"])
				if !bytes.Equal(m.Body, body("k9", q, i)) {
					t.Fatalf("message %d has other bytes", i)
				}
				seen[i]++
			}
			from = next
		}
	}
	for i := range acked {
		if seen[i] != 1 {
			t.Fatalf("acknowledged message %d is there %d times", i, seen[i])
		}
	}
	t.Logf("%d acknowledged before the kill, %d in the log after recovery", len(acked), len(seen))
}

// child writes with sync flush from 8 goroutines, printing each ack.
func child() {
	s, err := Open(Config{Dir: os.Getenv("MQSTORE_CHILD_DIR"), SegmentSize: 64 << 10, QueueFileEntries: 100, Flush: FlushSync, Logger: quiet()})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	acks := make(chan int, 1024)
	for g := range 8 {
		go func() {
			for i := g; ; i += 8 {
				q := i % 4
				m := &Message{Topic: "k9", QueueID: uint32(q), Properties: map[string]string{"i": strconv.Itoa(i)}, Body: body("k9", q, i)}
				if err := s.Put(m); err != nil {
					return
				}
				acks <- i
			}
		}()
	}
	w := bufio.NewWriter(os.Stdout)
	for i := range acks {
		fmt.Fprintf(w, "acked %d\n", i)
		if len(acks) == 0 {
			w.Flush()
		}
	}
}

// Retention deletes whole old segments (never the one being written) and
// the consume queue files that point into them; what a consumer still
// needs is kept.
func TestRetention(t *testing.T) {
	dir := t.TempDir()
	var protect int64 = -1
	s, err := Open(Config{Dir: dir, SegmentSize: 64 << 10, QueueFileEntries: 20, Logger: quiet(), RetainAge: time.Hour,
		Protect: func() int64 { return protect }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ms []*Message
	for i := range 400 {
		m := &Message{Topic: "r", Body: bytes.Repeat([]byte{byte(i)}, 1000)}
		if err := s.Put(m); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	s.WaitIndexed()
	// Protected: a consumer still needs message 100.
	protect = ms[100].Offset
	n, err := s.DeleteExpired(time.Now().Add(2 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.Get("r", 0, 100, 1); err != nil || len(got) != 1 || got[0].QueueOffset != 100 {
		t.Fatalf("a protected message went: %v %v (deleted %d segments)", got, err, n)
	}
	protect = -1
	n, err = s.DeleteExpired(time.Now().Add(2 * time.Hour))
	if err != nil || n == 0 {
		t.Fatalf("deleted %d segments: %v", n, err)
	}
	segs, _ := os.ReadDir(filepath.Join(dir, "commitlog"))
	for _, e := range segs {
		if st, ok := parseSegmentName(e.Name()); ok && st+64<<10 <= ms[0].Offset {
			t.Fatalf("segment %s survived", e.Name())
		}
	}
	first := s.MinOffset("r", 0)
	if first == 0 {
		t.Fatal("no consume queue file was deleted")
	}
	// Reading from before the first readable message starts at it; the
	// entries whose segment is gone are skipped.
	got, _, err := s.Get("r", 0, 0, 1)
	if err != nil || len(got) != 1 || got[0].QueueOffset < first || got[0].Body[0] != byte(got[0].QueueOffset) {
		t.Fatalf("read from the start after retention: %v %v (first %d)", got, err, first)
	}
	rest, _, err := s.Get("r", 0, got[0].QueueOffset, 1000)
	if err != nil || int64(len(rest)) != 400-got[0].QueueOffset {
		t.Fatalf("after retention, %d messages from %d: %v", len(rest), got[0].QueueOffset, err)
	}
	// The newest messages are all there.
	if got, _, err := s.Get("r", 0, 399, 1); err != nil || len(got) != 1 {
		t.Fatalf("the newest message: %v %v", got, err)
	}
	// Nothing is old at "now".
	if n, err := s.DeleteExpired(time.Now()); err != nil || n != 0 {
		t.Fatalf("deleted %d fresh segments: %v", n, err)
	}
}

// Lookup finds messages by any of their keys, across a restart and a torn
// tail; a key reused after the tail was cut finds only the new message.
func TestLookupByKey(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FlushSync)
	for i := range 300 {
		m := &Message{Topic: "orders", QueueID: uint32(i % 2), Properties: map[string]string{KeysProperty: fmt.Sprintf("order-%d user-%d", i, i%7)},
			Body: []byte(strconv.Itoa(i))}
		if err := s.Put(m); err != nil {
			t.Fatal(err)
		}
	}
	s.Put(&Message{Topic: "other", Properties: map[string]string{KeysProperty: "order-5"}, Body: []byte("other topic")})
	s.WaitIndexed()
	got, err := s.Lookup("orders", "order-5", 10)
	if err != nil || len(got) != 1 || string(got[0].Body) != "5" {
		t.Fatalf("order-5: %v %v", got, err)
	}
	if got, _ := s.Lookup("orders", "user-3", 100); len(got) != 43 {
		t.Fatalf("user-3: %d messages, want 43", len(got))
	}
	if got, _ := s.Lookup("orders", "nobody", 10); len(got) != 0 {
		t.Fatalf("nobody: %v", got)
	}
	// Tear the last "orders" message (299), then reuse its key.
	last, _ := s.Lookup("orders", "order-299", 1)
	s.WaitIndexed()
	crash(s)
	seg := filepath.Join(dir, "commitlog", segmentName(last[0].Offset-last[0].Offset%(64<<10)))
	f, _ := os.OpenFile(seg, os.O_RDWR, 0)
	f.WriteAt([]byte("xx"), last[0].Offset%(64<<10)+20)
	f.Close()
	s = open(t, dir, FlushSync)
	defer s.Close()
	if got, _ := s.Lookup("orders", "order-299", 10); len(got) != 0 {
		t.Fatalf("a torn message is still found: %v", got)
	}
	if got, _ := s.Lookup("orders", "order-298", 10); len(got) != 1 {
		t.Fatalf("order-298 after recovery: %v", got)
	}
	m := &Message{Topic: "orders", Properties: map[string]string{KeysProperty: "order-299"}, Body: []byte("new 299")}
	if err := s.Put(m); err != nil {
		t.Fatal(err)
	}
	s.WaitIndexed()
	if got, _ := s.Lookup("orders", "order-299", 10); len(got) != 1 || string(got[0].Body) != "new 299" {
		t.Fatalf("reused key: %v", got)
	}
}

func TestReplicateRaw(t *testing.T) {
	master, err := Open(Config{Dir: t.TempDir(), SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	slave, err := Open(Config{Dir: t.TempDir(), SegmentSize: 64 << 10, Flush: FlushSync})
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	for i := range 500 {
		if err := master.Put(&Message{Topic: "t", QueueID: uint32(i % 3), Body: bytes.Repeat([]byte{byte(i)}, 300+i)}); err != nil {
			t.Fatal(err)
		}
	}
	var pos int64
	for pos < master.End() {
		data, next, err := master.ReadRaw(pos, 8<<10)
		if err != nil {
			t.Fatal(err)
		}
		if next == pos {
			t.Fatalf("no progress at %d", pos)
		}
		if err := slave.AppendRaw(pos, data); err != nil {
			t.Fatal(err)
		}
		pos = next
	}
	if slave.End() != master.End() {
		t.Fatalf("slave ends at %d, master at %d", slave.End(), master.End())
	}
	slave.WaitIndexed()
	for q := uint32(0); q < 3; q++ {
		ms, _, err := slave.Get("t", q, 0, 1000)
		if err != nil || int64(len(ms)) != master.MaxOffset("t", q) {
			t.Fatalf("queue %d: %d on the slave, %d on the master (%v)", q, len(ms), master.MaxOffset("t", q), err)
		}
	}
	// Out of place, or corrupt, data is refused.
	data, _, _ := master.ReadRaw(0, 4096)
	if err := slave.AppendRaw(0, data); err == nil {
		t.Fatal("data at a wrong offset accepted")
	}
	bad := append([]byte(nil), data...)
	bad[len(bad)/2] ^= 0xff
	if err := slave.AppendRaw(slave.End(), bad); err == nil {
		t.Fatal("corrupt data accepted")
	}
}

// TestAsyncFlushWindow: under async flush an acknowledged message is on
// disk within two flush intervals, even when it is the last one (its page
// only partly filled).
func TestAsyncFlushWindow(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir(), SegmentSize: 1 << 20, FlushInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 30 {
		if err := s.Put(&Message{Topic: "t", Body: bytes.Repeat([]byte{'x'}, 100+i)}); err != nil {
			t.Fatal(err)
		}
	}
	end := s.End()
	if end%4096 == 0 {
		t.Fatalf("test needs a partial last page; end %d", end)
	}
	wait.For(t, 2*50*time.Millisecond+200*time.Millisecond, "everything flushed within two intervals", func() bool { return !(s.Flushed() < end) })
}

// A log keeps the segment size it was written with: reopened with another
// setting (the default changed, a flag given), it opens, and reads and
// appends as before.
func TestExistingSegmentSizeIsKept(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, SegmentSize: 64 << 10, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := s.Put(&Message{Topic: "t", Body: body("t", 0, i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err = Open(Config{Dir: dir, SegmentSize: 1 << 20, Logger: quiet()})
	if err != nil {
		t.Fatalf("reopened with another segment size: %v", err)
	}
	defer s.Close()
	if err := s.Put(&Message{Topic: "t", Body: body("t", 0, 300)}); err != nil {
		t.Fatal(err)
	}
	s.WaitIndexed()
	n := 0
	for from := int64(0); ; {
		ms, next, err := s.Get("t", 0, from, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		n += len(ms)
		from = next
	}
	if n != 301 {
		t.Fatalf("read %d of 301 messages", n)
	}
}
