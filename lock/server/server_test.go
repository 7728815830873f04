package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/lock"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, opts ...servertest.Option) *servertest.Harness {
	return servertest.Start(t, opts...)
}

func dial(t *testing.T, h *servertest.Harness, ttl time.Duration) *lock.Client {
	t.Helper()
	c, err := lock.Dial(context.Background(), lock.Config{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token, SessionTTL: ttl, Owner: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawClient is an RPC connection to the server for calling the lock
// methods by hand (no lock.Client, no keep-alive).
func rawClient(t *testing.T, h *servertest.Harness) *rpc.Client {
	t.Helper()
	raw, err := rpc.Dial(context.Background(), h.Srv.RPCAddr(), rpc.WithToken(h.Token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// Waiters get the lock in the order they queued, each with a larger
// token; TryLock does not queue.
func TestMutexQueueAndFence(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	a := dial(t, h, 10*time.Second)
	ma := a.Mutex("orders/pay")
	la, err := ma.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := ma.Lock(ctx); err != nil || again != la {
		t.Fatalf("re-enter: %v %v", again, err)
	}
	if _, err := dial(t, h, 10*time.Second).Mutex("orders/pay").TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("TryLock on a held lock: %v", err)
	}
	admin := lock.NewAdmin(h.URL, h.Token)
	type grant struct {
		i     int
		fence uint64
	}
	got := make(chan grant, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		c := dial(t, h, 10*time.Second)
		m := c.Mutex("orders/pay")
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := m.Lock(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			got <- grant{i, l.Fence}
			_ = m.Unlock(ctx)
		}()
		wait.For(t, 10*time.Second, fmt.Sprintf("waiter %d queued", i), func() bool {
			ls, err := admin.Locks(ctx)
			return err == nil && len(ls) == 1 && len(ls[0].Waiters) == i+1
		})
	}
	ls, _ := admin.Locks(ctx)
	if ls[0].Name != "orders/pay" || uint64(ls[0].Holder.Seq) != la.Fence {
		t.Fatalf("lock list: %+v", ls)
	}
	_ = ma.Unlock(ctx) // one of two holds
	select {
	case g := <-got:
		t.Fatalf("waiter %d granted while the holder still holds once", g.i)
	default:
	}
	if err := ma.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(got)
	last := la.Fence
	want := 0
	for g := range got {
		if g.i != want || g.fence <= last {
			t.Fatalf("grant %d with fence %d after %d; want waiter %d, growing fences", g.i, g.fence, last, want)
		}
		last, want = g.fence, want+1
	}
	if err := ma.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("unlock of a released lock: %v", err)
	}
}

// A session that stops keeping alive ends after its TTL — not before —
// and its lock passes to the waiter.
func TestExpiredSessionPassesTheLock(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	raw := rawClient(t, h)
	ttl := time.Second
	ss, err := rpc.Call[lock.Session](ctx, raw, lock.MethodOpen, &lock.SessionRequest{Owner: "silent", TTLMs: ttl.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	rep, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, &lock.AcquireRequest{Session: ss.ID, Name: "orders/expire"})
	if err != nil || !rep.Held {
		t.Fatalf("acquire: %+v %v", rep, err)
	}
	b := dial(t, h, 10*time.Second)
	l, err := b.Mutex("orders/expire").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(opened); took < ttl {
		t.Fatalf("lock passed on %v after the session opened, before its TTL %v", took, ttl)
	} else {
		t.Logf("passed on %v after the silent session's last renewal (TTL %v)", took, ttl)
	}
	if l.Fence <= uint64(rep.Node.Seq) {
		t.Fatalf("fence %d after %d", l.Fence, rep.Node.Seq)
	}
	if _, err := rpc.Call[lock.Session](ctx, raw, lock.MethodKeepAlive, &lock.SessionRequest{ID: ss.ID}); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("keep-alive of the expired session: %v", err)
	}
}

// Ending a client's session from outside: its lease ends with
// ErrLockLost, Unlock says so, and the client goes on in a new session.
func TestLostSessionEndsLeases(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	c := dial(t, h, 3*time.Second)
	m := c.Mutex("orders/lost")
	l, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := c.Session()
	if err := lock.NewAdmin(h.URL, h.Token).EndSession(ctx, old); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease outlived its session")
	}
	if !errors.Is(l.Err(), lock.ErrLockLost) {
		t.Fatalf("lease Err %v", l.Err())
	}
	if err := m.Unlock(ctx); !errors.Is(err, lock.ErrLockLost) {
		t.Fatalf("unlock after loss: %v", err)
	}
	wait.For(t, 10*time.Second, "a new session", func() bool { s := c.Session(); return s != "" && s != old })
	l2, err := m.Lock(ctx)
	if err != nil || l2.Fence <= l.Fence {
		t.Fatalf("lock in the new session: %v %v", l2, err)
	}
	_ = m.Unlock(ctx)
}

func TestNodes(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	c := dial(t, h, 10*time.Second)
	var names []string
	for range 3 {
		n, err := c.Create(ctx, "/orders/queue/item-", "x", lock.Sequential)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, n.Path)
	}
	for i := 1; i < len(names); i++ {
		if names[i] <= names[i-1] || !strings.HasPrefix(names[i], "/orders/queue/item-") {
			t.Fatalf("sequential names %v", names)
		}
	}
	e, err := c.Create(ctx, "/orders/members/me", "addr", lock.Ephemeral)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, "/orders/members/me", "", 0); !errors.Is(err, lock.ErrNodeExists) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []string{"orders", "/orders/", "/orders//x", "/orders/a b", "/"} {
		if _, err := c.Create(ctx, bad, "", 0); !errors.Is(err, lock.ErrBadPath) {
			t.Fatalf("path %q: %v, want ErrBadPath", bad, err)
		}
	}
	kids, err := c.Children(ctx, "/orders/queue")
	if err != nil || len(kids) != 3 || kids[0].Path != names[0] {
		t.Fatalf("children %v %v", kids, err)
	}
	// A watch on the ephemeral node fires when its session closes.
	other := dial(t, h, 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- other.WaitDeleted(ctx, e.Path) }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait.Receive(t, 10*time.Second, "the watch", done); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Get(ctx, e.Path); !errors.Is(err, lock.ErrNoNode) {
		t.Fatalf("ephemeral node after its session: %v", err)
	}
	if _, err := other.Get(ctx, names[0]); err != nil {
		t.Fatalf("persistent node: %v", err)
	}
}

// Nodes and counters survive a restart: a sequential node made after it
// sorts after every one made before.
func TestRestartKeepsNodesAndCounters(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	same := []servertest.Option{servertest.WithDataDir(dir)}
	if d := os.Getenv("TANGRAM_TEST_STORE"); d != "" && d != "sqlite" {
		same = append(same, servertest.WithStore(storetest.DSN(t, store.Dialect(d))))
	}
	h := start(t, same...)
	c := dial(t, h, 10*time.Second)
	before, err := c.Create(ctx, "/orders/ids/id-", "", lock.Sequential)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	_ = h.Srv.Close()
	h2 := start(t, same...)
	c2 := dial(t, h2, 10*time.Second)
	if _, err := c2.Get(ctx, before.Path); err != nil {
		t.Fatalf("node after restart: %v", err)
	}
	after, err := c2.Create(ctx, "/orders/ids/id-", "", lock.Sequential)
	if err != nil || after.Seq <= before.Seq {
		t.Fatalf("after restart: %v %v (before %d)", after, err, before.Seq)
	}
}

// A keyed acquisition repeated (its reply lost) finds the node it made
// instead of queueing twice.
func TestKeyedAcquireIsIdempotent(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	raw := rawClient(t, h)
	ss, err := rpc.Call[lock.Session](ctx, raw, lock.MethodOpen, &lock.SessionRequest{TTLMs: 10000})
	if err != nil {
		t.Fatal(err)
	}
	req := &lock.AcquireRequest{Session: ss.ID, Name: "orders/keyed", Key: "abc123"}
	a, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, req)
	if err != nil {
		t.Fatal(err)
	}
	req.Repeat = true
	b, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, req)
	if err != nil || b.Node.Path != a.Node.Path || !b.Held {
		t.Fatalf("repeat: %+v %v, first %+v", b, err, a)
	}
	// Another key of the same session queues behind it, and its repeat
	// finds its own node, not the first key's.
	other := &lock.AcquireRequest{Session: ss.ID, Name: "orders/keyed", Key: "abc1234"}
	c, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, other)
	if err != nil || c.Held || c.Node.Path == a.Node.Path {
		t.Fatalf("second key: %+v %v", c, err)
	}
	other.Repeat = true
	d, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, other)
	if err != nil || d.Node.Path != c.Node.Path || d.Held {
		t.Fatalf("second key's repeat: %+v %v, first %+v", d, err, c)
	}
	if !strings.Contains(a.Node.Path, "/_c_abc123-lock-") {
		t.Fatalf("node path %s", a.Node.Path)
	}
	bad := &lock.AcquireRequest{Session: ss.ID, Name: "orders/keyed", Key: "no/slash"}
	if _, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, bad); err == nil {
		t.Fatal("a bad key accepted")
	}
}

// An acquisition in a session that has expired fails with
// ErrSessionExpired and leaves no node in the queue (the insert is
// conditional on the session in the same statement).
func TestAcquireInDeadSessionQueuesNothing(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	raw := rawClient(t, h)
	ss, err := rpc.Call[lock.Session](ctx, raw, lock.MethodOpen, &lock.SessionRequest{Owner: "short", TTLMs: time.Second.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, &lock.AcquireRequest{Session: "no-such-session", Name: "orders/dead"}); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("acquire in an unknown session: %v", err)
	}
	opened := time.Now()
	wait.For(t, 10*time.Second, "the session's TTL to pass", func() bool { return time.Since(opened) > 1100*time.Millisecond })
	if _, err := rpc.Call[lock.AcquireReply](ctx, raw, lock.MethodAcquire, &lock.AcquireRequest{Session: ss.ID, Name: "orders/dead"}); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("acquire in an expired session: %v", err)
	}
	nodes, err := dial(t, h, time.Second).Children(ctx, "/orders/dead")
	if err != nil || len(nodes) != 0 {
		t.Fatalf("queue after acquisitions in dead sessions: %+v %v", nodes, err)
	}
}

// Sessions may share one connection (Config.RPC): each is its own
// session — one waits for the other's lock — and closing one ends its
// session and leaves the connection to the others.
func TestSessionsShareOneConnection(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	if _, err := lock.Dial(ctx, lock.Config{}); err == nil {
		t.Fatal("Dial with neither Servers nor RPC succeeded")
	}
	conn := rawClient(t, h)
	a, err := lock.Dial(ctx, lock.Config{RPC: conn, Owner: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := lock.Dial(ctx, lock.Config{RPC: conn, Owner: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Session() == b.Session() {
		t.Fatalf("two clients on one connection share session %s", a.Session())
	}
	la, err := a.Mutex("orders/share").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	granted := make(chan *lock.Lease, 1)
	mb := b.Mutex("orders/share")
	go func() {
		l, err := mb.Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		granted <- l
	}()
	admin := lock.NewAdmin(h.URL, h.Token)
	wait.For(t, 10*time.Second, "b queued behind a", func() bool {
		ls, err := admin.Locks(ctx)
		return err == nil && len(ls) == 1 && len(ls[0].Waiters) == 1
	})
	// Closing a ends its session, which releases its lock to b; the
	// connection stays open for b.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	var lb *lock.Lease
	select {
	case lb = <-granted:
	case <-time.After(10 * time.Second):
		t.Fatal("b not granted after a's session closed")
	}
	if lb == nil || lb.Fence <= la.Fence {
		t.Fatalf("b's lease %+v after a's fence %d", lb, la.Fence)
	}
	if err := mb.Unlock(ctx); err != nil {
		t.Fatalf("unlock over the shared connection after the other client closed: %v", err)
	}
}
