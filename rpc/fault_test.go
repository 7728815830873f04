package rpc

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/netfault"
	"github.com/tangram-dev/tangram/rpc/balance"
)

// Killing one of two servers mid-traffic: idempotent calls continue on the
// other without an error the caller sees; the dead endpoint leaves rotation
// and comes back once a server listens on its address again.
func TestFailoverAndProbeBack(t *testing.T) {
	s1, addr1 := testServer(t, Config{})
	_, addr2 := testServer(t, Config{})
	c := dial(t, addr1+","+addr2, WithBalancer(balance.RoundRobin()), WithIdempotent("Echo/Echo"))
	ctx := context.Background()
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Text: "x", Sleep: time.Millisecond}); err != nil {
					failures.Add(1)
					t.Errorf("call failed during failover: %v", err)
				}
				calls.Add(1)
			}
		}()
	}
	wait.For(t, 5*time.Second, "50 calls before the failover", func() bool { return calls.Load() >= 50 })
	s1.Close() // abrupt: connections reset, calls in flight fail and are retried
	after := calls.Load()
	wait.For(t, 5*time.Second, "100 calls after the failover", func() bool { return calls.Load() >= after+100 })
	close(stop)
	wg.Wait()
	if calls.Load() < 50 || failures.Load() > 0 {
		t.Fatalf("%d calls, %d failures", calls.Load(), failures.Load())
	}
	wait.For(t, 5*time.Second, "the condition", func() bool { return !c.Endpoints()[addr1] })
	// All calls now land on the survivor.
	for range 10 {
		r, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{})
		if err != nil || r.Peer != addr2 {
			t.Fatalf("%+v %v", r, err)
		}
	}
	// A new server on the old address is probed back into rotation.
	ln, err := net.Listen("tcp", addr1)
	if err != nil {
		t.Skipf("cannot rebind %s: %v", addr1, err)
	}
	s3, _ := NewServer(Config{Logger: quietLogger()})
	must(t, Handle(s3, "Echo/Echo", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		return &echoResp{Peer: addr1}, nil
	}))
	go s3.Serve(ln)
	defer s3.Close()
	wait.For(t, 5*time.Second, "the condition", func() bool { return c.Endpoints()[addr1] })
	seen := map[string]bool{}
	for range 10 {
		r, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{})
		must(t, err)
		seen[r.Peer] = true
	}
	if !seen[addr1] || !seen[addr2] {
		t.Fatalf("calls reached %v", seen)
	}
}

// A call that is not idempotent and was already written is not retried: the
// caller gets Unavailable.
func TestNonIdempotentNotRetried(t *testing.T) {
	var runs atomic.Int64
	s1, addr1 := testServer(t, Config{})
	started := make(chan struct{}, 1)
	must(t, Handle(s1, "Pay/Charge", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		runs.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	c := dial(t, addr1)
	f := Go[echoResp](context.Background(), c, "Pay/Charge", &echoReq{})
	<-started
	s1.Close()
	_, err := f.Wait()
	if CodeOf(err) != Unavailable {
		t.Fatalf("want Unavailable, got %v", err)
	}
	if runs.Load() != 1 {
		t.Fatalf("ran %d times", runs.Load())
	}
}

// A partitioned server: the connection stays open but nothing arrives. The
// heartbeat fails the pending call with Unavailable within the timeout, and
// idempotent calls go to the other server.
func TestHeartbeatDetectsPartition(t *testing.T) {
	_, addr1 := testServer(t, Config{})
	_, addr2 := testServer(t, Config{})
	p := netfault.New(t, addr1)
	c := dial(t, p.Addr(), WithHeartbeat(50*time.Millisecond, 200*time.Millisecond))
	if _, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{}); err != nil {
		t.Fatal(err)
	}
	p.Partition()
	start := time.Now()
	_, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{})
	if CodeOf(err) != Unavailable {
		t.Fatalf("want Unavailable, got %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v to notice the partition", el)
	}

	c2 := dial(t, p.Addr()+","+addr2, WithHeartbeat(50*time.Millisecond, 200*time.Millisecond),
		WithBalancer(balance.RoundRobin()))
	for range 4 {
		r, err := Call[echoResp](context.Background(), c2, "Echo/Echo", &echoReq{}, Idempotent())
		if err != nil || r.Peer != addr2 {
			t.Fatalf("%+v %v", r, err)
		}
	}
}

// Shutdown: calls in flight finish, clients are told to go away, new calls
// go to the other server, and nothing fails.
func TestGracefulShutdownDrains(t *testing.T) {
	s1, addr1 := testServer(t, Config{})
	_, addr2 := testServer(t, Config{})
	c := dial(t, addr1+","+addr2, WithBalancer(balance.RoundRobin()))
	var slow []*Future[echoResp]
	for range 6 {
		slow = append(slow, Go[echoResp](context.Background(), c, "Echo/Echo", &echoReq{Text: "slow", Sleep: 300 * time.Millisecond}))
	}
	wait.For(t, 5*time.Second, "the condition", func() bool { return s1.InFlight() > 0 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s1.Shutdown(ctx)
	}()
	wait.For(t, 5*time.Second, "s1 to be draining", s1.draining.Load)
	for range 20 {
		r, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{Text: "new"})
		if err != nil {
			t.Fatalf("call during shutdown: %v", err)
		}
		if r.Peer != addr2 {
			t.Fatalf("new call reached the draining server")
		}
	}
	for _, f := range slow {
		if r, err := f.Wait(); err != nil || r.Text != "slow" {
			t.Fatalf("in-flight call: %+v %v", r, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Hedging: one endpoint is slow; the backup request to the other answers
// first, and the slow copy is canceled on its server.
func TestHedgedRequest(t *testing.T) {
	s1, addr1 := testServer(t, Config{})
	s2, addr2 := testServer(t, Config{})
	var canceled atomic.Int64
	must(t, Handle(s1, "Hedge/Get", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		select {
		case <-time.After(2 * time.Second):
			return &echoResp{Peer: addr1}, nil
		case <-ctx.Done():
			canceled.Add(1)
			return nil, ctx.Err()
		}
	}))
	must(t, Handle(s2, "Hedge/Get", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		return &echoResp{Peer: addr2}, nil
	}))
	c := dial(t, addr1+","+addr2, WithBalancer(balance.RoundRobin()))
	for range 6 {
		start := time.Now()
		r, err := Call[echoResp](context.Background(), c, "Hedge/Get", &echoReq{}, Hedge(20*time.Millisecond))
		must(t, err)
		if r.Peer != addr2 || time.Since(start) > time.Second {
			t.Fatalf("answer from %s after %v", r.Peer, time.Since(start))
		}
	}
	// Each losing copy on the slow server was canceled there.
	wait.For(t, 5*time.Second, "the condition", func() bool { return canceled.Load() >= 3 })
}

// The retry budget: each call earns BudgetRatio of a retry, bursts are capped
// at BudgetMax, and a retry without a token is not made.
func TestRetryBudget(t *testing.T) {
	c := &Client{o: dialOptions{retry: RetryPolicy{MaxAttempts: 3, BudgetRatio: 0.5, BudgetMax: 2}}}
	c.budget.Store(2000)
	first, second, third := c.withdraw(), c.withdraw(), c.withdraw()
	if !first || !second || third {
		t.Fatalf("budget of 2: withdrawals %v %v %v, want true true false", first, second, third)
	}
	c.deposit()
	if c.withdraw() {
		t.Fatal("half a token allowed a retry")
	}
	c.deposit()
	c.deposit()
	if !c.withdraw() {
		t.Fatal("two calls at ratio 0.5 did not earn a retry")
	}
	for range 100 {
		c.deposit()
	}
	if c.budget.Load() > 2500 {
		t.Fatalf("budget grew to %d past its cap", c.budget.Load())
	}
}

// All endpoints refusing (overloaded): the caller gets ResourceExhausted
// after at most MaxAttempts tries on distinct endpoints, not a retry storm.
func TestRefusedCallsRetryElsewhereThenGiveUp(t *testing.T) {
	var addrs []string
	var releases []chan struct{}
	var servers []*Server
	for range 3 {
		s, addr := testServer(t, Config{})
		servers = append(servers, s)
		rel := make(chan struct{})
		releases = append(releases, rel)
		must(t, Handle(s, "Busy/One", func(ctx context.Context, r *echoReq) (*echoResp, error) {
			<-rel
			return &echoResp{Peer: addr}, nil
		}, MaxConcurrency(1)))
		addrs = append(addrs, addr)
	}
	c := dial(t, strings.Join(addrs, ","), WithBalancer(balance.RoundRobin()))
	// Occupy the first two servers.
	f1 := Go[echoResp](context.Background(), c, "Busy/One", &echoReq{})
	f2 := Go[echoResp](context.Background(), c, "Busy/One", &echoReq{})
	busy := func() int {
		n := 0
		for _, s := range servers {
			n += s.InFlight()
		}
		return n
	}
	wait.For(t, 5*time.Second, "two servers busy", func() bool { return busy() == 2 })
	// This call is refused by whichever busy server it reaches first and
	// retried until it lands on the free one.
	f3 := Go[echoResp](context.Background(), c, "Busy/One", &echoReq{})
	wait.For(t, 5*time.Second, "three servers busy", func() bool { return busy() == 3 })
	// Now every server is busy: a fourth call is refused everywhere.
	_, err := Call[echoResp](context.Background(), c, "Busy/One", &echoReq{})
	if CodeOf(err) != ResourceExhausted {
		t.Fatalf("want ResourceExhausted, got %v", err)
	}
	for _, r := range releases {
		close(r)
	}
	seen := map[string]bool{}
	for _, f := range []*Future[echoResp]{f1, f2, f3} {
		r, err := f.Wait()
		must(t, err)
		seen[r.Peer] = true
	}
	if len(seen) != 3 {
		t.Fatalf("the three calls ran on %d servers", len(seen))
	}
}
