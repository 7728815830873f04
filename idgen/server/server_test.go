package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server/servertest"
)

func TestMain(m *testing.M) {
	if helperMain() {
		return
	}
	goleak.VerifyTestMain(m)
}

func dial(t *testing.T, h *servertest.Harness) *idgen.Client {
	t.Helper()
	c, err := idgen.Dial(context.Background(), idgen.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// tiny is a layout whose worker field has two numbers: leases run out.
var tiny = idgen.Layout{Name: "tiny", Epoch: idgen.DefaultEpoch, Unit: time.Millisecond,
	Fields: []idgen.Field{{Name: idgen.FieldTime, Bits: 41}, {Name: "worker", Bits: 1}, {Name: idgen.FieldSeq, Bits: 21}}}

// helperMain is a child process of the tests below, told what to do by
// TANGRAM_ID_HELPER: "bulk|addr|token|n|file" takes n IDs from a segment
// allocator and n from a leased snowflake and writes them to file;
// "hold|addr|token" leases a number of the tiny layout (TTL 600 ms) and
// prints an ID every millisecond, or the error instead of one.
func helperMain() bool {
	spec := os.Getenv("TANGRAM_ID_HELPER")
	if spec == "" {
		return false
	}
	p := strings.Split(spec, "|")
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	c, err := idgen.Dial(ctx, idgen.ClientConfig{Servers: []string{p[1]}, Token: p[2]})
	if err != nil {
		fail(err)
	}
	switch p[0] {
	case "bulk":
		n, _ := strconv.Atoi(p[3])
		segs := c.Segments()
		a := segs.Alloc("orders")
		buf := make([]byte, 0, 16*n)
		for range n {
			id, err := a.Next(ctx)
			if err != nil {
				fail(err)
			}
			buf = binary.LittleEndian.AppendUint64(buf, uint64(id))
		}
		l, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{TTL: 2 * time.Second})
		if err != nil {
			fail(err)
		}
		for range n {
			id, err := l.Next()
			if err != nil {
				fail(err)
			}
			buf = binary.LittleEndian.AppendUint64(buf, uint64(id))
		}
		if err := os.WriteFile(p[4], buf, 0o600); err != nil {
			fail(err)
		}
		_ = l.Close()
		_ = segs.Close()
		fmt.Println("done")
	case "hold":
		l, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Layout: tiny, TTL: 600 * time.Millisecond, Holder: "paused"})
		if err != nil {
			fail(err)
		}
		fmt.Println("worker", l.Lease().Worker)
		tick := time.NewTicker(time.Millisecond) // a steady trickle of IDs
		for range tick.C {
			id, err := l.Next()
			if err != nil {
				fmt.Println("error", err)
			} else {
				fmt.Println("id", id)
			}
		}
	}
	os.Exit(0)
	return true
}

func helper(t *testing.T, spec string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TANGRAM_ID_HELPER="+spec)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	return cmd, sc
}

// Eight processes each take a million IDs from the same tag through
// their own double-buffered allocators and a million from snowflake
// generators with leased worker numbers: no ID repeats.
func TestEightProcessesNoDuplicates(t *testing.T) {
	h := servertest.Start(t)
	n := 1_000_000
	if raceEnabled || testing.Short() {
		n = 50_000
	}
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		file := filepath.Join(dir, fmt.Sprintf("ids-%d", i))
		_, sc := helper(t, fmt.Sprintf("bulk|%s|%s|%d|%s", h.Srv.RPCAddr(), h.Token, n, file))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last string
			for sc.Scan() {
				last = sc.Text()
			}
			if last != "done" {
				errs <- fmt.Errorf("process %d ended with %q", i, last)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var segIDs, snowIDs []int64
	for i := range 8 {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("ids-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 16*n {
			t.Fatalf("process %d wrote %d bytes, want %d", i, len(b), 16*n)
		}
		for j := 0; j < 2*n; j++ {
			id := int64(binary.LittleEndian.Uint64(b[8*j:]))
			if j < n {
				if j > 0 && id <= segIDs[len(segIDs)-1] {
					t.Fatalf("process %d: segment IDs not ascending at %d", i, j)
				}
				segIDs = append(segIDs, id)
			} else {
				snowIDs = append(snowIDs, id)
			}
		}
	}
	for name, ids := range map[string][]int64{"segment": segIDs, "snowflake": snowIDs} {
		slices.Sort(ids)
		for j := 1; j < len(ids); j++ {
			if ids[j] == ids[j-1] {
				t.Fatalf("%s ID %d issued twice", name, ids[j])
			}
		}
		if ids[0] <= 0 {
			t.Fatalf("%s ID %d not positive", name, ids[0])
		}
	}
	ws, err := idServer(h).Workers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.ExpiresAt != 0 {
			t.Fatalf("number %d of %s still leased after its process released it: %+v", w.Worker, w.Pool, w)
		}
	}
}

// A holder paused past its lease (SIGSTOP) stops issuing before the
// server gives its number to another; the new holder's IDs start after
// the paused one's last possible time, and the resumed process issues
// nothing more under the lost lease.
func TestPausedHolderStopsBeforeItsNumberIsReused(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	c := dial(t, h)
	cmd, sc := helper(t, fmt.Sprintf("hold|%s|%s", h.Srv.RPCAddr(), h.Token))
	lines := make(chan string, 1<<16)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	first := <-lines
	var pausedWorker int64
	if _, err := fmt.Sscanf(first, "worker %d", &pausedWorker); err != nil {
		t.Fatalf("holder said %q", first)
	}
	other, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Layout: tiny, TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Layout: tiny, TTL: time.Second}); !errors.Is(err, idgen.ErrNoWorker) {
		t.Fatalf("a third lease of a two-number pool: %v", err)
	}
	var pausedIDs []int64
	collect := func() {
		for {
			select {
			case l := <-lines:
				var id int64
				if _, err := fmt.Sscanf(l, "id %d", &id); err == nil {
					pausedIDs = append(pausedIDs, id)
				}
			default:
				return
			}
		}
	}
	wait.For(t, 10*time.Second, "the holder to issue IDs", func() bool { collect(); return len(pausedIDs) > 50 })
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var taker *idgen.Leased
	wait.For(t, 10*time.Second, "the paused holder's number to be leased again", func() bool {
		l, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Layout: tiny, TTL: 10 * time.Second})
		if err == nil {
			taker = l
			return true
		}
		if !errors.Is(err, idgen.ErrNoWorker) {
			t.Fatal(err)
		}
		return false
	})
	defer taker.Close()
	if got := taker.Lease(); got.Worker != pausedWorker || got.Term < 2 {
		t.Fatalf("new lease %+v, want number %d with a later term", got, pausedWorker)
	}
	collect()
	lastPaused := slices.Max(pausedIDs)
	var takerIDs []int64
	for range 200 {
		id, err := taker.Next()
		if err != nil {
			t.Fatal(err)
		}
		takerIDs = append(takerIDs, id)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// After resuming, the holder must report errors, not IDs, until it
	// leases again (it cannot: both numbers are held).
	errorsSeen := 0
	deadline := time.After(3 * time.Second)
	for errorsSeen < 20 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("holder ended")
			}
			var id int64
			if _, err := fmt.Sscanf(l, "id %d", &id); err == nil {
				pausedIDs = append(pausedIDs, id)
				continue
			}
			if !strings.Contains(l, "lease lost") {
				t.Fatalf("resumed holder said %q", l)
			}
			errorsSeen++
		case <-deadline:
			t.Fatalf("resumed holder reported %d errors in 3 s", errorsSeen)
		}
	}
	lay := tiny
	lastTime := func(id int64) int64 { v, _ := lay.Field(id, idgen.FieldTime); return v }
	for _, id := range pausedIDs {
		if id > lastPaused {
			w, _ := lay.Field(id, "worker")
			t.Errorf("the resumed holder issued ID %d (worker %d, time %d) after losing its lease", id, w, lastTime(id))
		}
	}
	if lastTime(slices.Min(takerIDs)) <= lastTime(lastPaused) {
		t.Fatalf("the new holder's first time %d is not after the paused holder's last %d", lastTime(slices.Min(takerIDs)), lastTime(lastPaused))
	}
	t.Logf("paused holder: %d IDs, last time %d; new holder from time %d (gap %d ms)", len(pausedIDs), lastTime(lastPaused),
		lastTime(slices.Min(takerIDs)), lastTime(slices.Min(takerIDs))-lastTime(lastPaused))
}

// idServer reaches the component for listings.
func idServer(h *servertest.Harness) interface {
	Workers(context.Context) ([]idgen.WorkerLease, error)
} {
	return h.Srv.IDs()
}

// Leases: distinct numbers, fencing terms, renew and release checks,
// recycled numbers start after their last holder's time.
func TestLeaseRules(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	c := dial(t, h)
	a, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Layout: tiny, TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Layout: tiny, TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if a.Lease().Worker == b.Lease().Worker {
		t.Fatalf("two holders of number %d", a.Lease().Worker)
	}
	var last int64
	for range 5000 {
		if last, err = a.Next(); err != nil {
			t.Fatal(err)
		}
	}
	wa := a.Lease()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Next(); !errors.Is(err, idgen.ErrLeaseLost) {
		t.Fatalf("Next after Close: %v", err)
	}
	again, err := c.LeaseSnowflake(ctx, idgen.LeaseConfig{Layout: tiny, TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	wl := again.Lease()
	if wl.Worker != wa.Worker || wl.Term != wa.Term+1 {
		t.Fatalf("released number not recycled with the next term: %+v after %+v", wl, wa)
	}
	id, err := again.Next()
	if err != nil {
		t.Fatal(err)
	}
	lt, _ := tiny.Field(last, idgen.FieldTime)
	nt, _ := tiny.Field(id, idgen.FieldTime)
	if nt <= lt {
		t.Fatalf("recycled number issued at time %d, not after the last holder's %d", nt, lt)
	}
	_ = b.Close()
	for _, bad := range []idgen.LeaseConfig{
		{Layout: tiny, Field: "seq"},
		{Layout: tiny, Field: "nope"},
		{Layout: tiny, Pool: "bad pool!"},
		{Layout: tiny, TTL: time.Millisecond},
		{Layout: tiny, Max: 5},
	} {
		if _, err := c.LeaseSnowflake(ctx, bad); err == nil {
			t.Fatalf("lease with %+v accepted", bad)
		}
	}
}

// Segments: the step is the tag's unless a client asks for more (within
// the cap), ranges follow each other, bad requests are refused with their
// reason, and the HTTP API serves IDs and lists tags.
func TestSegmentsAndHTTP(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	c := dial(t, h)
	s1, err := c.Segment(ctx, "invoices", 0)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Start != 1 || s1.End != 1001 || s1.Step != 1000 {
		t.Fatalf("first range %+v, want [1, 1001) of step 1000", s1)
	}
	s2, err := c.Segment(ctx, "invoices", 5000)
	if err != nil || s2.Start != 1001 || s2.End != 6001 {
		t.Fatalf("second range %+v %v, want [1001, 6001)", s2, err)
	}
	s3, err := c.Segment(ctx, "invoices", 10)
	if err != nil || s3.Start != 6001 || s3.End != 7001 {
		t.Fatalf("a step below the tag's: %+v %v, want [6001, 7001)", s3, err)
	}
	for _, bad := range []struct {
		tag  string
		step int64
		want string
	}{{"", 0, `tag ""`}, {"a b", 0, `tag "a b"`}, {strings.Repeat("x", 200), 0, "want 1–128"}, {"ok", -1, "step -1"}} {
		if _, err := c.Segment(ctx, bad.tag, bad.step); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("segment %q step %d: %v, want an error naming %q", bad.tag, bad.step, err, bad.want)
		}
	}
	ids, err := c.Next(ctx, "invoices", 3)
	if err != nil || len(ids) != 3 || ids[0] < 7001 || ids[1] != ids[0]+1 {
		t.Fatalf("server Next: %v %v", ids, err)
	}
	if _, err := c.Next(ctx, "invoices", 20_000); err == nil || !strings.Contains(err.Error(), "count 20000") {
		t.Fatalf("count over the limit: %v", err)
	}
	post := func(path, token, body string) (int, []byte) {
		req, _ := http.NewRequest("POST", h.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		_, _ = out.ReadFrom(resp.Body)
		return resp.StatusCode, out.Bytes()
	}
	if code, _ := post("/api/v1/id/next", "", `{"tag":"invoices"}`); code != 401 {
		t.Fatalf("unauthenticated next: %d", code)
	}
	code, body := post("/api/v1/id/next", h.Token, `{"tag":"invoices","count":2}`)
	var rep idgen.NextReply
	if code != 200 || json.Unmarshal(body, &rep) != nil || len(rep.IDs) != 2 || rep.IDs[0] <= ids[2] {
		t.Fatalf("HTTP next: %d %s", code, body)
	}
	if code, body := post("/api/v1/id/tags", h.Token, `{"tag":"users","start":1000000,"step":50}`); code != 200 || !strings.Contains(string(body), `"max_id":1000000`) {
		t.Fatalf("create tag: %d %s", code, body)
	}
	if sg, err := c.Segment(ctx, "users", 0); err != nil || sg.Start != 1_000_000 || sg.End != 1_000_050 {
		t.Fatalf("range of a created tag: %+v %v", sg, err)
	}
	req, _ := http.NewRequest("GET", h.URL+"/api/v1/id/tags", nil)
	req.Header.Set("Authorization", "Bearer "+h.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tags struct{ Items []idgen.Tag }
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil || len(tags.Items) != 2 {
		t.Fatalf("tags: %+v %v", tags, err)
	}
}

// TestNextCoalesced: concurrent Next calls of one tag share requests;
// every call gets exactly its count of IDs, none twice, each caller's in
// ascending order; callers that give up while queued or in flight leave
// the others unharmed and the queue moving.
func TestNextCoalesced(t *testing.T) {
	h := servertest.Start(t)
	var sent atomic.Int64
	count := func(ctx context.Context, info *rpc.CallInfo, req, resp any, next rpc.Invoker) error {
		if info.Method == idgen.MethodNext {
			sent.Add(1)
		}
		return next(ctx, info, req, resp)
	}
	c, err := idgen.Dial(context.Background(), idgen.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token,
		DialOptions: []rpc.DialOption{rpc.WithInterceptors(count)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Next(context.Background(), "warm-up", 1); err != nil { // connected before the short deadlines
		t.Fatal(err)
	}
	sent.Store(0)
	const callers, rounds = 64, 200
	var mu sync.Mutex
	seen := map[int64]bool{}
	var calls, gaveUp atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Go(func() {
			last := int64(0)
			for r := range rounds {
				n := 1 + (g+r)%5
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if (g+r)%17 == 0 { // some give up almost at once
					ctx, cancel = context.WithTimeout(context.Background(), time.Duration(r%3)*50*time.Microsecond)
				}
				ids, err := c.Next(ctx, "coalesced", n)
				cancel()
				calls.Add(1)
				if err != nil {
					// A caller with a short deadline gives up. (The rpc client
					// reports a deadline that passes during its call as
					// DeadlineExceeded or, in some paths, Canceled.)
					short := (g+r)%17 == 0
					if short && (errors.Is(err, context.DeadlineExceeded) || rpc.CodeOf(err) == rpc.DeadlineExceeded || rpc.CodeOf(err) == rpc.Canceled) {
						gaveUp.Add(1)
						continue
					}
					errs <- fmt.Errorf("caller %d round %d (short deadline %v): %w", g, r, (g+r)%17 == 0, err)
					return
				}
				if len(ids) != n {
					errs <- fmt.Errorf("caller %d asked %d IDs, got %d", g, n, len(ids))
					return
				}
				mu.Lock()
				for _, id := range ids {
					if seen[id] {
						mu.Unlock()
						errs <- fmt.Errorf("ID %d handed out twice", id)
						return
					}
					seen[id] = true
				}
				mu.Unlock()
				for _, id := range ids {
					if id <= last {
						errs <- fmt.Errorf("caller %d: ID %d after %d", g, id, last)
						return
					}
					last = id
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if gaveUp.Load() == calls.Load() {
		t.Fatal("every call gave up")
	}
	if s := sent.Load(); s >= calls.Load() {
		t.Fatalf("%d requests for %d concurrent calls: nothing coalesced", s, calls.Load())
	}
	t.Logf("%d calls (%d gave up) in %d requests", calls.Load(), gaveUp.Load(), sent.Load())
	// The queue still moves after all that.
	if ids, err := c.Next(context.Background(), "coalesced", 2); err != nil || len(ids) != 2 {
		t.Fatalf("after: %v %v", ids, err)
	}
}
