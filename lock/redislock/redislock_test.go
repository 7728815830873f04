package redislock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tangram-dev/tangram/internal/redistest"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/lock"
	"github.com/tangram-dev/tangram/lock/redislock"
)

func TestMain(m *testing.M) {
	if helperMain() {
		return
	}
	// go-redis redials a node that refused connections from a goroutine
	// that sleeps a second between tries and sees its pool closed only
	// after the sleep (TestRedlock stops nodes).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// backends runs f on kv, real Redis and a 3-master Redis Cluster.
func backends(t *testing.T, f func(t *testing.T, rdb redis.UniversalClient, prefix string)) {
	t.Run("kv", func(t *testing.T) { f(t, redistest.KV(t), redistest.Prefix(t)) })
	t.Run("redis", func(t *testing.T) { f(t, redistest.Redis(t, 0), redistest.Prefix(t)) })
	t.Run("cluster", func(t *testing.T) {
		_, cc := redistest.Cluster(t, 3, 0)
		f(t, cc, redistest.Prefix(t))
	})
}

func newClient(t *testing.T, rdb redis.UniversalClient, prefix string, ttl, maxWait time.Duration) *redislock.Client {
	c := redislock.New(rdb, redislock.Options{Prefix: prefix, TTL: ttl, MaxWait: maxWait})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestMutex(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		c := newClient(t, rdb, prefix, 10*time.Second, time.Second)
		a, b := c.Mutex("m"), c.Mutex("m")
		if err := a.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("unlock before lock: %v", err)
		}
		la, err := a.TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("second owner: %v, want ErrNotAcquired", err)
		}
		again, err := a.Lock(ctx) // re-entered
		if err != nil || again != la || again.Fence != la.Fence {
			t.Fatalf("re-enter: %v %v", again, err)
		}
		if err := a.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("after one of two unlocks: %v, want still held", err)
		}
		if err := a.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-la.Done():
		default:
			t.Fatal("lease not ended by the last unlock")
		}
		if la.Err() != nil {
			t.Fatalf("released lease's Err = %v", la.Err())
		}
		lb, err := b.TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if lb.Fence <= la.Fence {
			t.Fatalf("fence did not grow: %d then %d", la.Fence, lb.Fence)
		}
		// Same owner on another handle re-enters; a Client elsewhere with
		// another owner cannot.
		c2 := newClient(t, rdb, prefix, 10*time.Second, time.Second)
		if _, err := c2.Mutex("m").TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("other client: %v", err)
		}
		if err := b.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		o1, o2 := c.Mutex("o", redislock.Owner("job-7")), c2.Mutex("o", redislock.Owner("job-7"))
		l1, err := o1.TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := o2.TryLock(ctx)
		if err != nil || l2.Fence != l1.Fence {
			t.Fatalf("same owner elsewhere: %v %v", l2, err)
		}
		if err := o1.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := o2.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// A waiter is woken by the release's message: MaxWait is far longer than
// the test may take.
func TestWaiterWokenByRelease(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		// Two clients: one Client's own contenders queue in the process
		// (TestLocalContendersQueueInProcess) and never wait on Redis.
		c := newClient(t, rdb, prefix, 10*time.Second, time.Minute)
		a, b := c.Mutex("w"), newClient(t, rdb, prefix, 10*time.Second, time.Minute).Mutex("w")
		la, err := a.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *lock.Lease, 1)
		errc := make(chan error, 1)
		go func() {
			l, err := b.Lock(ctx)
			if err != nil {
				errc <- err
				return
			}
			got <- l
		}()
		// The waiter is subscribed once the channel has a subscriber.
		wait.For(t, 10*time.Second, "the waiter subscribed", func() bool {
			n, _ := subscribers(ctx, rdb, prefix+"{w}:ch")
			return n > 0
		})
		if err := a.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-got:
			if l.Fence <= la.Fence {
				t.Fatalf("fence %d after %d", l.Fence, la.Fence)
			}
			_ = b.Unlock(ctx)
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("the waiter was not woken by the release")
		}
	})
}

func subscribers(ctx context.Context, rdb redis.UniversalClient, ch string) (int64, error) {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var total atomic.Int64 // ForEachShard calls in parallel
		err := cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			m, err := c.PubSubNumSub(ctx, ch).Result()
			total.Add(m[ch])
			return err
		})
		return total.Load(), err
	}
	m, err := rdb.PubSubNumSub(ctx, ch).Result()
	return m[ch], err
}

// The watchdog keeps a lock past its TTL; when the lock is taken over,
// the lease ends with ErrLockLost and Unlock does not touch the new
// holder's lock.
func TestWatchdogAndLoss(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		ttl := 300 * time.Millisecond
		c := newClient(t, rdb, prefix, ttl, time.Second)
		a, b := c.Mutex("d"), c.Mutex("d")
		la, err := a.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		wait.For(t, 10*time.Second, "three TTLs held", func() bool {
			if _, err := b.TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
				t.Fatalf("lock taken while its holder renews it: %v", err)
			}
			return time.Since(start) > 3*ttl
		})
		if la.Err() != nil {
			t.Fatal(la.Err())
		}
		// Another owner takes the lock (as after an expiry).
		key := prefix + "{d}"
		if err := rdb.HSet(ctx, key, "o", "intruder", "n", 1, "f", 999).Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-la.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the watchdog did not notice the take-over")
		}
		if !errors.Is(la.Err(), lock.ErrLockLost) {
			t.Fatalf("lease Err = %v, want ErrLockLost", la.Err())
		}
		if err := a.Unlock(ctx); !errors.Is(err, lock.ErrLockLost) {
			t.Fatalf("unlock after loss: %v", err)
		}
		if o, _ := rdb.HGet(ctx, key, "o").Result(); o != "intruder" {
			t.Fatalf("the new holder's lock was touched: owner %q", o)
		}
		wctx, cancel := la.Context(ctx)
		defer cancel()
		if !errors.Is(context.Cause(wctx), lock.ErrLockLost) {
			t.Fatalf("lease context cause = %v", context.Cause(wctx))
		}
	})
}

func TestFairMutexIsFIFO(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		c := newClient(t, rdb, prefix, 10*time.Second, time.Second)
		head := c.FairMutex("f")
		if _, err := head.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		order := make(chan int, 4)
		var wg sync.WaitGroup
		for i := range 4 {
			m := newClient(t, rdb, prefix, 10*time.Second, time.Second).FairMutex("f") // a process each
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := m.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				order <- i
				_ = m.Unlock(ctx)
			}()
			wait.For(t, 10*time.Second, fmt.Sprintf("waiter %d queued", i), func() bool {
				n, _ := rdb.LLen(ctx, prefix+"{f}:q").Result()
				return n == int64(i+1)
			})
		}
		if err := head.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(order)
		want := 0
		for i := range order {
			if i != want {
				t.Fatalf("granted to waiter %d, want %d (FIFO)", i, want)
			}
			want++
		}
		// A TryLock does not take a free lock from the head of a queue, and
		// leaves no place in it.
		if _, err := c.FairMutex("f").TryLock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRWMutex(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		c := newClient(t, rdb, prefix, 10*time.Second, time.Second)
		r1, r2, w := c.RWMutex("rw"), c.RWMutex("rw"), c.RWMutex("rw")
		if _, err := r1.Reader().TryLock(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r2.Reader().TryLock(ctx); err != nil {
			t.Fatalf("second reader: %v", err)
		}
		if _, err := w.Writer().TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("writer beside readers: %v", err)
		}
		if _, err := r1.Writer().TryLock(ctx); err == nil || errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("upgrade: %v, want a refusal naming the upgrade", err)
		}
		got := make(chan *lock.Lease, 1)
		go func() {
			l, err := w.Writer().Lock(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		_ = r1.Reader().Unlock(ctx)
		select {
		case <-got:
			t.Fatal("writer in while a reader holds")
		default:
		}
		_ = r2.Reader().Unlock(ctx)
		lw := wait.Receive(t, 10*time.Second, "the writer", got)
		if _, err := r1.Reader().TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("reader beside the writer: %v", err)
		}
		// Downgrade: the writer reads, releases the write hold, others read.
		lr, err := w.Reader().TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if lr.Fence != lw.Fence {
			t.Fatalf("reader's token %d, want the writer's %d", lr.Fence, lw.Fence)
		}
		if err := w.Writer().Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r1.Reader().TryLock(ctx); err != nil {
			t.Fatalf("reader after downgrade: %v", err)
		}
		_ = r1.Reader().Unlock(ctx)
		_ = w.Reader().Unlock(ctx)
		if l, err := r2.Writer().TryLock(ctx); err != nil || l.Fence <= lw.Fence {
			t.Fatalf("writer after all left: %v %v", l, err)
		}
	})
}

// 50 contenders add to a PostgreSQL counter through the lock, each write
// fenced: the count is exact.
func TestContendersCountExactlyInPostgres(t *testing.T) {
	db, err := sql.Open("pgx", storetest.DSN(t, store.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL, fence bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO counter VALUES (1, 0, 0)`); err != nil {
		t.Fatal(err)
	}
	rdb := redistest.KV(t)
	c := newClient(t, rdb, redistest.Prefix(t), 5*time.Second, time.Second)
	const contenders, each = 50, 4
	var wg sync.WaitGroup
	for range contenders {
		m := c.Mutex("counter")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				l, err := m.Lock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				var n int64
				if err := db.QueryRowContext(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&n); err != nil {
					t.Error(err)
				}
				if err := lock.Fenced(ctx, db, l.Fence, `UPDATE counter SET n = $1, fence = $2 WHERE id = 1 AND fence <= $2`, n+1, int64(l.Fence)); err != nil {
					t.Error(err)
				}
				if err := m.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	var n int64
	if err := db.QueryRowContext(ctx, `SELECT n FROM counter`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != contenders*each {
		t.Fatalf("count %d, want %d", n, contenders*each)
	}
}

// Contenders of one Client queue in the process: a release hands the lock
// on without retries on Redis, and one that unlocks and locks again at
// once does not starve the others.
func TestLocalContendersQueueInProcess(t *testing.T) {
	rdb := redistest.KV(t)
	prefix := redistest.Prefix(t)
	c := newClient(t, rdb, prefix, 10*time.Second, time.Minute)
	ctx := context.Background()
	const n, each = 8, 50
	counts := make([]int, n)
	var wg sync.WaitGroup
	var inside atomic.Int32
	for i := range n {
		m := c.Mutex("hot")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := m.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					t.Error("two holders at once")
				}
				counts[i]++
				inside.Add(-1)
				if err := m.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for i, k := range counts {
		if k != each {
			t.Fatalf("contender %d got the lock %d times, want %d", i, k, each)
		}
	}
	// TryLock sees a local holder without asking Redis.
	m1, m2 := c.Mutex("t"), c.Mutex("t")
	if _, err := m1.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("second local TryLock: %v", err)
	}
	_ = m1.Unlock(ctx)
	if _, err := m2.TryLock(ctx); err != nil {
		t.Fatalf("after the local release: %v", err)
	}
	_ = m2.Unlock(ctx)
}

// TestBatchedCallers: concurrent callers' scripts go to Redis in shared
// pipelines; each gets its own reply, a fence of its own lock, and a
// script cache emptied under them (SCRIPT FLUSH, as after a restart) is
// refilled without an error reaching a caller.
func TestBatchedCallers(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		c := newClient(t, rdb, prefix, 10*time.Second, time.Second)
		const n, rounds = 64, 20
		fences := make([][]uint64, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				m := c.Mutex(fmt.Sprintf("b%d", i))
				for r := range rounds {
					if r == rounds/2 && i == 0 {
						flush(ctx, rdb)
					}
					l, err := m.Lock(ctx)
					if err != nil {
						errs <- fmt.Errorf("caller %d round %d: lock: %w", i, r, err)
						return
					}
					fences[i] = append(fences[i], l.Fence)
					if err := m.Unlock(ctx); err != nil {
						errs <- fmt.Errorf("caller %d round %d: unlock: %w", i, r, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for i, fs := range fences {
			for r, f := range fs {
				if f != uint64(r+1) {
					t.Fatalf("caller %d: fences %v, want 1..%d (each lock's own counter)", i, fs, rounds)
				}
			}
		}
		// A caller whose context ends while its batch waits gets the
		// context's error.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Mutex("b-cancelled").Lock(cctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("lock with a cancelled context: %v", err)
		}
	})
}

// flush empties the script cache of every node (kv has none to empty:
// its scripts are native).
func flush(ctx context.Context, rdb redis.UniversalClient) {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.ScriptFlush(ctx).Err() })
		return
	}
	_ = rdb.ScriptFlush(ctx).Err()
}
