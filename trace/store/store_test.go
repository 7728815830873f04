package store

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func traceID(n int) TraceID {
	var id TraceID
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range id {
		id[i] = byte(r.UintN(256))
	}
	return id
}

// span makes span j of trace n: services and names cycle, every fifth
// trace's root is an error, durations grow with j.
func span(n, j int, start time.Time) Span {
	s := Span{
		TraceID: traceID(n), Service: fmt.Sprintf("svc%d", j%3), Name: fmt.Sprintf("op%d", j%4), Kind: KindServer,
		StartUnixNano: uint64(start.Add(time.Duration(j) * time.Millisecond).UnixNano()),
		DurationNano:  uint64(time.Duration(j+1) * time.Millisecond),
		Attrs: []Attr{
			{Key: "http.route", Value: Value{Type: TypeString, Str: "/orders/" + strconv.Itoa(n%7)}},
			{Key: "http.status_code", Value: Value{Type: TypeInt, Int: 200}},
			{Key: "retry", Value: Value{Type: TypeBool, Bool: j%2 == 0}},
			{Key: "ratio", Value: Value{Type: TypeFloat, Float: 0.5}},
		},
		Resource: []Attr{{Key: "host.name", Value: Value{Type: TypeString, Str: "h1"}}},
	}
	s.SpanID[0], s.SpanID[1] = byte(j+1), byte(n)
	if j > 0 {
		s.ParentID[0], s.ParentID[1] = byte(j), byte(n)
	}
	if j == 0 && n%5 == 0 {
		s.Status, s.StatusMessage = StatusError, "boom"
		s.Events = []Event{{TimeUnixNano: s.StartUnixNano + 10, Name: "exception", Attrs: []Attr{{Key: "exception.message", Value: Value{Str: "boom"}}}}}
	}
	if j == 2 {
		s.Links = []Link{{TraceID: traceID(n + 1000), SpanID: SpanID{9}, Attrs: []Attr{{Key: "messaging.system", Value: Value{Str: "tangram"}}}}}
	}
	return s
}

func open(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill appends traces [from, to), each of 5 spans, in batches of 4 traces
// interleaved (a trace's spans end up in different batches and segments).
func fill(t *testing.T, s *Store, from, to int, start time.Time) {
	t.Helper()
	for n := from; n < to; n += 4 {
		for j := range 5 {
			var batch []Span
			for m := n; m < min(n+4, to); m++ {
				batch = append(batch, span(m, j, start))
			}
			if err := s.Append(batch); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func checkTrace(t *testing.T, s *Store, n int, start time.Time) {
	t.Helper()
	got, err := s.Trace(traceID(n))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("trace %d: %d spans, want 5", n, len(got))
	}
	for j := range 5 {
		if want := span(n, j, start); !reflect.DeepEqual(got[j], want) {
			t.Fatalf("trace %d span %d:\n got %+v\nwant %+v", n, j, got[j], want)
		}
	}
}

// TestTracesAcrossSegmentsAndReopen: a trace's spans, written in several
// batches over several segments, come back whole and in order — from the
// active segment's map, from sealed segments' index files, after a
// reopen, and after an index file is lost (rebuilt from its segment).
func TestTracesAcrossSegmentsAndReopen(t *testing.T) {
	dir := t.TempDir()
	start := time.Unix(1_700_000_000, 0)
	s := open(t, Config{Dir: dir, SegmentBytes: 16 << 10})
	fill(t, s, 0, 200, start)
	if st := s.Stats(); st.Segments < 4 || st.Spans != 1000 {
		t.Fatalf("stats %+v: want several segments and 1000 spans", st)
	}
	for _, n := range []int{0, 1, 57, 150, 199} {
		checkTrace(t, s, n, start)
	}
	if got, err := s.Trace(traceID(5000)); err != nil || len(got) != 0 {
		t.Fatalf("an unknown trace: %d spans, %v", len(got), err)
	}
	s.Close()
	if _, err := s.Trace(traceID(1)); err != ErrClosed {
		t.Fatalf("Trace after Close: %v", err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(idx) < 3 {
		t.Fatalf("index files %v", idx)
	}
	os.Remove(idx[1])
	os.WriteFile(idx[2], []byte("TGSIDX01 damaged"), 0o644)
	s = open(t, Config{Dir: dir, SegmentBytes: 16 << 10})
	if st := s.Stats(); st.Spans != 1000 {
		t.Fatalf("after reopening: %+v", st)
	}
	for n := range 200 {
		checkTrace(t, s, n, start)
	}
	fill(t, s, 200, 240, start) // appends continue
	checkTrace(t, s, 239, start)
}

// TestTornTail: a segment cut in the middle of a record, or followed by
// garbage, keeps every whole record before the damage and takes appends.
func TestTornTail(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	for _, damage := range []string{"cut", "garbage", "zeros"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, Config{Dir: dir})
			fill(t, s, 0, 8, start)
			s.Close()
			segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			f, err := os.OpenFile(segs[len(segs)-1], os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			switch damage {
			case "cut":
				f.Truncate(fi.Size() - 10) // the last record loses its end
			case "garbage":
				f.WriteAt([]byte("\x05\x00\x00\x00junk-junk"), fi.Size())
			case "zeros":
				f.WriteAt(make([]byte, 4096), fi.Size())
			}
			f.Close()
			s = open(t, Config{Dir: dir})
			want := 40
			if damage == "cut" {
				want = 39
			}
			if st := s.Stats(); st.Spans != want {
				t.Fatalf("after %s: %d spans, want %d", damage, st.Spans, want)
			}
			for n := range 4 { // traces 0-3 were wholly in the first batches
				checkTrace(t, s, n, start)
			}
			fill(t, s, 100, 104, start)
			checkTrace(t, s, 103, start)
			if fi2, _ := os.Stat(segs[len(segs)-1]); damage != "cut" && fi2.Size() >= fi.Size()+4096 {
				t.Fatal("the damage was not cut before new appends")
			}
		})
	}
}

// TestKill9MidIngest: a process appending batches is killed with -9; the
// reopened store holds every batch whose Append returned.
func TestKill9MidIngest(t *testing.T) {
	if os.Getenv("TANGRAM_SPANSTORE_WRITER") != "" {
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKill9Writer$")
	cmd.Env = append(os.Environ(), "TANGRAM_SPANSTORE_WRITER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := -1
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
			acked, _ = strconv.Atoi(n)
			if acked >= 300 {
				break
			}
		}
	}
	cmd.Process.Kill()
	// Batches acknowledged after the one read: more to find, never fewer.
	for sc.Scan() {
	}
	cmd.Wait()
	if acked < 300 {
		t.Fatalf("the writer acknowledged only %d batches", acked)
	}
	s := open(t, Config{Dir: dir, SegmentBytes: 64 << 10})
	start := time.Unix(1_700_000_000, 0)
	for n := 0; n <= acked; n++ {
		got, err := s.Trace(traceID(n))
		if err != nil || len(got) != 5 {
			t.Fatalf("trace %d of %d acknowledged: %d spans, %v", n, acked, len(got), err)
		}
		if !reflect.DeepEqual(got[4], span(n, 4, start)) {
			t.Fatalf("trace %d differs", n)
		}
	}
}

// TestKill9Writer is the process TestKill9MidIngest kills: it appends one
// trace per batch forever, printing each acknowledgement.
func TestKill9Writer(t *testing.T) {
	dir := os.Getenv("TANGRAM_SPANSTORE_WRITER")
	if dir == "" {
		t.Skip("run by TestKill9MidIngest")
	}
	s, err := Open(Config{Dir: dir, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_700_000_000, 0)
	for n := 0; n < 1_000_000; n++ {
		batch := make([]Span, 5)
		for j := range batch {
			batch[j] = span(n, j, start)
		}
		if err := s.Append(batch); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("acked %d\n", n)
	}
}

// TestSearch: each criterion narrows, newest traces first, limits hold.
func TestSearch(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	s := open(t, Config{Dir: t.TempDir(), SegmentBytes: 16 << 10})
	fill(t, s, 0, 100, start)
	count := func(q Query) int {
		t.Helper()
		q.Limit = 1000
		m, err := s.Search(q)
		if err != nil {
			t.Fatal(err)
		}
		return len(m)
	}
	cases := []struct {
		q    Query
		want int
	}{
		{Query{}, 100},
		{Query{Service: "svc1"}, 100},
		{Query{Service: "nope"}, 0},
		{Query{Service: "svc0", Operation: "op3"}, 100}, // j=3 is svc0/op3
		{Query{Operation: "op3", Service: "svc1"}, 0},
		{Query{OnlyErrors: true}, 20},
		{Query{MinDuration: 5 * time.Millisecond}, 100},
		{Query{MinDuration: 6 * time.Millisecond}, 0},
		{Query{MaxDuration: time.Millisecond, MinDuration: time.Millisecond}, 100},
		{Query{Attrs: map[string]string{"http.route": "/orders/3"}}, 14},
		{Query{Attrs: map[string]string{"http.route": "/orders/3", "http.status_code": "200", "retry": "true"}}, 14},
		{Query{Attrs: map[string]string{"http.status_code": "500"}}, 0},
		{Query{Start: start.Add(4 * time.Millisecond)}, 100},
		{Query{Start: start.Add(5 * time.Millisecond)}, 0},
		{Query{End: start.Add(time.Millisecond)}, 100},
		{Query{End: start}, 0},
	}
	for _, c := range cases {
		if got := count(c.q); got != c.want {
			t.Errorf("%+v: %d traces, want %d", c.q, got, c.want)
		}
	}
	m, err := s.Search(Query{Limit: 7, OnlyErrors: true})
	if err != nil || len(m) != 7 {
		t.Fatalf("limit 7: %d, %v", len(m), err)
	}
	if m[0].Status != StatusError || m[0].Name != "op0" || m[0].Service != "svc0" {
		t.Fatalf("a match: %+v", m[0])
	}
	if m[0].TraceID != traceID(95) {
		t.Fatalf("first match is trace %x, want the newest error trace (95)", m[0].TraceID)
	}
}

// TestRetention: by size the oldest sealed segments go; by age those whose
// newest span is too old; the active segment always stays.
func TestRetention(t *testing.T) {
	start := time.Now().Add(-2 * time.Hour)
	s := open(t, Config{Dir: t.TempDir(), SegmentBytes: 16 << 10, MaxBytes: 64 << 10})
	fill(t, s, 0, 400, start)
	st := s.Stats()
	if st.Bytes > 64<<10+16<<10 || st.Spans >= 2000 {
		t.Fatalf("size cap: %+v", st)
	}
	if got, _ := s.Trace(traceID(0)); len(got) != 0 {
		t.Fatalf("the oldest trace survived the size cap: %d spans", len(got))
	}
	checkTrace(t, s, 399, start)

	// By age: recent spans stay through rotations; an hour and more
	// later every sealed segment goes.
	now := time.Now()
	s2 := open(t, Config{Dir: t.TempDir(), SegmentBytes: 16 << 10, MaxAge: time.Hour})
	fill(t, s2, 0, 300, now)
	before := s2.Stats()
	if before.Segments < 3 || before.Spans != 1500 {
		t.Fatalf("recent spans were dropped: %+v", before)
	}
	s2.Retain(now) // nothing is old yet
	if s2.Stats() != before {
		t.Fatal("retention changed a store with nothing old")
	}
	s2.Retain(now.Add(2 * time.Hour))
	if after := s2.Stats(); after.Segments != 1 || after.Spans >= before.Spans {
		t.Fatalf("age: %+v before, %+v after; want only the active segment left", before, after)
	}
}

// TestBadConfig: what cannot work is refused by name.
func TestBadConfig(t *testing.T) {
	if _, err := Open(Config{}); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("no Dir: %v", err)
	}
	if _, err := Open(Config{Dir: t.TempDir(), MaxBytes: -1}); err == nil {
		t.Fatal("negative MaxBytes accepted")
	}
}

// TestLookupsWhileSealing: segments sealed in the background while traces
// are looked up from another goroutine — every trace is found throughout,
// from the trace map until the index is in place, then from the index;
// Close waits for the last index, which the next open uses.
func TestLookupsWhileSealing(t *testing.T) {
	dir := t.TempDir()
	start := time.Unix(1_700_000_000, 0)
	s := open(t, Config{Dir: dir, SegmentBytes: 8 << 10})
	done := make(chan struct{})
	var written atomic.Int64
	var stop atomic.Bool
	errs := make(chan string, 1)
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			n := written.Load()
			if n == 0 {
				runtime.Gosched()
				continue
			}
			k := i % int(n)
			got, err := s.Trace(traceID(k))
			if err != nil || len(got) != 5 {
				select {
				case errs <- fmt.Sprintf("trace %d of %d: %d spans, %v", k, n, len(got), err):
				default:
				}
				return
			}
		}
	}()
	for n := 0; n < 300; n += 10 {
		fill(t, s, n, n+10, start)
		written.Store(int64(n + 10))
	}
	stop.Store(true)
	<-done
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	segs := s.Stats().Segments
	s.Close()
	idx, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(idx) != segs-1 {
		t.Fatalf("%d index files for %d sealed segments", len(idx), segs-1)
	}
	s = open(t, Config{Dir: dir, SegmentBytes: 8 << 10})
	for n := range 300 {
		checkTrace(t, s, n, start)
	}
}

// TestScanRecent: the heads of the spans started since a time, across
// sealed segments and the active one, after a reopen too; fn stops it.
func TestScanRecent(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	dir := t.TempDir()
	s := open(t, Config{Dir: dir, SegmentBytes: 16 << 10})
	fill(t, s, 0, 500, start)
	scan := func(s *Store, since time.Time, stopAfter int) []Span {
		t.Helper()
		var got []Span
		err := s.ScanRecent(since, func(b []Span) bool {
			got = append(got, b...)
			return stopAfter == 0 || len(got) < stopAfter
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	all := scan(s, start, 0)
	if len(all) != 2500 {
		t.Fatalf("%d spans since the first, want 2500", len(all))
	}
	want := span(7, 3, start)
	found := false
	for _, sp := range all {
		if sp.TraceID == want.TraceID && sp.SpanID == want.SpanID {
			found = true
			if sp.Service != want.Service || sp.Name != want.Name || sp.StartUnixNano != want.StartUnixNano ||
				sp.DurationNano != want.DurationNano || sp.ParentID != want.ParentID || sp.Kind != want.Kind || sp.Attrs != nil {
				t.Fatalf("head of trace 7 span 3: %+v, want %+v without attributes", sp, want)
			}
		}
	}
	if !found {
		t.Fatal("trace 7 span 3 not scanned")
	}
	// Spans j start at start+j ms: since start+3ms leaves j = 3, 4.
	if got := scan(s, start.Add(3*time.Millisecond), 0); len(got) != 1000 {
		t.Fatalf("%d spans since +3 ms, want 1000", len(got))
	}
	if got := scan(s, start.Add(time.Hour), 0); len(got) != 0 {
		t.Fatalf("%d spans from the future", len(got))
	}
	if got := scan(s, start, 1); len(got) != 1024 {
		t.Fatalf("a scan told to stop after its first batch gave %d spans, want one batch of 1024", len(got))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, Config{Dir: dir, SegmentBytes: 16 << 10})
	if got := scan(s2, start, 0); len(got) != 2500 {
		t.Fatalf("after a reopen: %d spans, want 2500", len(got))
	}
}
