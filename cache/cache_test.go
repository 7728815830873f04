package cache_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tangram-dev/tangram/cache"
	"github.com/tangram-dev/tangram/internal/redistest"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backends are the remote tiers every behaviour is checked on.
func backends(t *testing.T) map[string]redis.UniversalClient {
	t.Helper()
	return map[string]redis.UniversalClient{"kv": redistest.KV(t), "redis": redistest.Redis(t, 0)}
}

// misses counts the reads that went past the local tier (LocalHits is
// sampled; these counters are exact).
func misses[V any](c *cache.Cache[V]) uint64 {
	st := c.Stats()
	return st.RemoteHits + st.Loads
}

func newCache[V any](t *testing.T, cfg cache.Config[V]) *cache.Cache[V] {
	t.Helper()
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the invalidation listener did not subscribe")
	}
	return c
}

// A thousand goroutines miss the same cold key together: one load.
func TestStampedeLoadsOnce(t *testing.T) {
	remotes := backends(t)
	remotes["none"] = nil
	for name, rdb := range remotes {
		for _, local := range []time.Duration{time.Minute, -1} {
			t.Run(fmt.Sprintf("%s/local=%v", name, local > 0), func(t *testing.T) {
				var loads atomic.Int64
				release := make(chan struct{})
				c := newCache(t, cache.Config[string]{Name: redistest.Prefix(t), Remote: rdb, LocalTTL: local, Codec: cache.String{},
					Load: func(ctx context.Context, key string) (string, error) {
						loads.Add(1)
						<-release // every caller arrives while the load is in flight
						return "v-" + key, nil
					}})
				var wg sync.WaitGroup
				var started atomic.Int64
				errs := make(chan error, 1000)
				for range 1000 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						started.Add(1)
						v, err := c.Get(context.Background(), "hot")
						if err == nil && v != "v-hot" {
							err = fmt.Errorf("got %q", v)
						}
						if err != nil {
							errs <- err
						}
					}()
				}
				wait.For(t, 10*time.Second, "every goroutine to start", func() bool { return started.Load() == 1000 })
				wait.For(t, 10*time.Second, "the load to begin", func() bool { return loads.Load() > 0 })
				if rdb == nil && local < 0 {
					// No tier keeps the value: a caller that reaches Get
					// after the load has finished loads again, as it should.
					// Release only once every caller waits on the one load.
					wait.For(t, 10*time.Second, "every caller to wait on the load", func() bool { return goroutinesIn("singleflight.(*Group).Do") == 1000 })
				}
				close(release)
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
				if n := loads.Load(); n != 1 {
					t.Fatalf("%d loads for one cold key", n)
				}
			})
		}
	}
}

// An absent key is cached as a placeholder (this process and others);
// a Bloom filter answers for keys never added without any load.
func TestPenetration(t *testing.T) {
	for name, rdb := range backends(t) {
		t.Run(name, func(t *testing.T) {
			var loads atomic.Int64
			ns := redistest.Prefix(t)
			load := func(ctx context.Context, key string) (int, error) {
				loads.Add(1)
				return 0, cache.ErrNotFound
			}
			a := newCache(t, cache.Config[int]{Name: ns, Remote: rdb, Load: load})
			for range 3 {
				if _, err := a.Get(context.Background(), "ghost"); !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("Get of an absent key: %v", err)
				}
			}
			b := newCache(t, cache.Config[int]{Name: ns, Remote: rdb, Load: load})
			if _, err := b.Get(context.Background(), "ghost"); !errors.Is(err, cache.ErrNotFound) {
				t.Fatal(err)
			}
			if n := loads.Load(); n != 1 {
				t.Fatalf("%d loads of an absent key, want 1 (the placeholder answers the rest)", n)
			}
			if ttl := rdb.PTTL(context.Background(), "tangram:cache:"+ns+":ghost").Val(); ttl <= 0 || ttl > 63*time.Second {
				t.Fatalf("placeholder TTL %v, want about a minute", ttl)
			}
			bloom, err := cache.NewBloom(1000, 0.01)
			if err != nil {
				t.Fatal(err)
			}
			bloom.Add("real")
			f := newCache(t, cache.Config[int]{Name: ns + "b", Remote: rdb, Bloom: bloom, Load: func(ctx context.Context, key string) (int, error) {
				loads.Add(1)
				return len(key), nil
			}})
			before := loads.Load()
			for i := range 100 {
				if _, err := f.Get(context.Background(), "never-"+strconv.Itoa(i)); !errors.Is(err, cache.ErrNotFound) {
					t.Fatal(err)
				}
			}
			if v, err := f.Get(context.Background(), "real"); err != nil || v != 4 {
				t.Fatalf("a key in the filter: %v %v", v, err)
			}
			if n := loads.Load() - before; n > 3 { // false positives at 1%
				t.Fatalf("%d loads for keys outside the filter", n)
			}
		})
	}
	if _, err := cache.NewBloom(0, 0.1); err == nil {
		t.Fatal("a bloom for 0 keys was made")
	}
}

// Remote TTLs are spread by ±5%, absent keys' by theirs.
func TestTTLJitter(t *testing.T) {
	rdb := redistest.KV(t)
	ns := redistest.Prefix(t)
	c := newCache(t, cache.Config[int]{Name: ns, Remote: rdb, TTL: 100 * time.Second, Load: func(ctx context.Context, key string) (int, error) { return 1, nil }})
	seen := map[time.Duration]bool{}
	for i := range 50 {
		k := strconv.Itoa(i)
		if _, err := c.Get(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		ttl := rdb.PTTL(context.Background(), "tangram:cache:"+ns+":"+k).Val()
		if ttl < 94*time.Second || ttl > 105*time.Second {
			t.Fatalf("TTL %v outside 100 s ± 5%%", ttl)
		}
		seen[ttl.Round(100*time.Millisecond)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 keys got only %d distinct TTLs", len(seen))
	}
}

// A Delete in one process drops the key from the others' local tiers;
// with tracking, so does any change of the remote key by anyone.
func TestInvalidationReachesOtherProcesses(t *testing.T) {
	remotes := backends(t)
	_, cl := redistest.Cluster(t, 3, 0)
	remotes["cluster"] = cl
	for name, rdb := range remotes {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			db := map[string]string{"k": "one"}
			load := func(ctx context.Context, key string) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				v, ok := db[key]
				if !ok {
					return "", cache.ErrNotFound
				}
				return v, nil
			}
			ns := redistest.Prefix(t)
			a := newCache(t, cache.Config[string]{Name: ns, Remote: rdb, Load: load, Codec: cache.String{}})
			b := newCache(t, cache.Config[string]{Name: ns, Remote: rdb, Load: load, Codec: cache.String{}})
			ctx := context.Background()
			for _, c := range []*cache.Cache[string]{a, b, b} {
				if v, err := c.Get(ctx, "k"); err != nil || v != "one" {
					t.Fatalf("first read: %q %v", v, err)
				}
			}
			wait.For(t, 5*time.Second, "b to hold the key locally", func() bool {
				before := misses(b)
				_, _ = b.Get(ctx, "k")
				return misses(b) == before
			})
			mu.Lock()
			db["k"] = "two" // the write path: the database first…
			mu.Unlock()
			if err := a.Delete(ctx, "k"); err != nil { // …then the cache
				t.Fatal(err)
			}
			wait.For(t, 5*time.Second, "b to read the new value", func() bool {
				v, err := b.Get(ctx, "k")
				return err == nil && v == "two"
			})
			if name == "cluster" {
				return
			}
			// Tracking: a change made behind the cache's back also reaches b.
			wait.For(t, 5*time.Second, "b to hold the key locally again", func() bool {
				before := misses(b)
				_, _ = b.Get(ctx, "k")
				return misses(b) == before
			})
			mu.Lock()
			db["k"] = "three"
			mu.Unlock()
			if err := rdb.Del(ctx, "tangram:cache:"+ns+":k").Err(); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 5*time.Second, "b to drop the key changed in the remote tier", func() bool {
				v, err := b.Get(ctx, "k")
				return err == nil && v == "three"
			})
		})
	}
}

// The local tier keeps answering while the remote tier is down, and is
// dropped (consistent again) once the invalidation connection is back.
func TestLocalTierSurvivesRemoteRestart(t *testing.T) {
	srv, rdb := redistest.KVServer(t)
	_ = srv
	var loads atomic.Int64
	c := newCache(t, cache.Config[string]{Name: redistest.Prefix(t), Remote: rdb, Codec: cache.String{}, Load: func(ctx context.Context, key string) (string, error) {
		loads.Add(1)
		return "v", nil
	}})
	ctx := context.Background()
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the key in the local tier", func() bool {
		before := misses(c)
		_, _ = c.Get(ctx, "k")
		return misses(c) == before
	})
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
			t.Fatalf("read with the remote tier down: %q %v", v, err)
		}
	}
}

// Hot-only local tier: the keys most read are promoted, the rest stay
// remote; the local tier's bytes stay under its bound.
func TestHotKeysPromoted(t *testing.T) {
	rdb := redistest.KV(t)
	c := newCache(t, cache.Config[string]{Name: redistest.Prefix(t), Remote: rdb, Codec: cache.String{}, HotKeys: 4, HotOnly: true,
		LocalMaxBytes: 64 << 10, Load: func(ctx context.Context, key string) (string, error) { return key + "-value", nil }})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	z := rand.NewZipf(rng, 1.3, 1, 999)
	for range 20_000 {
		k := "k" + strconv.FormatUint(z.Uint64(), 10)
		if v, err := c.Get(ctx, k); err != nil || v != k+"-value" {
			t.Fatalf("%s: %q %v", k, v, err)
		}
	}
	hot := c.HotKeys()
	if len(hot) != 4 || hot[0].Key != "k0" {
		t.Fatalf("hot keys %+v, want k0 first of 4", hot)
	}
	st := c.Stats()
	if hits := 20_000 - misses(c); hits < 5000 {
		t.Fatalf("local hits %d of 20000 Zipf reads: hot keys were not promoted", hits)
	}
	if b := c.LocalBytes(); b > 64<<10 || b == 0 {
		t.Fatalf("local tier holds %d bytes (bound 64 KiB)", b)
	}
	t.Logf("stats %+v, hot %v", st, hot)
}

// Stale-while-revalidate: an entry past RefreshAfter is returned at once
// and reloaded in the background.
func TestStaleWhileRevalidate(t *testing.T) {
	var version atomic.Int64
	version.Store(1)
	var loads atomic.Int64
	c := newCache(t, cache.Config[int64]{Name: redistest.Prefix(t), RefreshAfter: 50 * time.Millisecond, Load: func(ctx context.Context, key string) (int64, error) {
		loads.Add(1)
		return version.Load(), nil
	}})
	ctx := context.Background()
	if v, _ := c.Get(ctx, "k"); v != 1 {
		t.Fatalf("first %d", v)
	}
	version.Store(2)
	loaded := time.Now()
	wait.For(t, time.Second, "the entry to age past RefreshAfter", func() bool { return time.Since(loaded) > 80*time.Millisecond })
	start := time.Now()
	if v, _ := c.Get(ctx, "k"); v != 1 {
		t.Fatalf("stale read %d, want the old 1 returned at once", v)
	}
	if d := time.Since(start); d > 20*time.Millisecond {
		t.Logf("stale read took %v", d)
	}
	wait.For(t, 5*time.Second, "the background reload", func() bool { v, _ := c.Get(ctx, "k"); return v == 2 })
}

// The cache-aside model check on a real PostgreSQL table: a writer
// updates a row and deletes the key; readers in two processes read
// through slow loaders. No read returns a value older than the newest
// one committed more than the window before the read began, and at the
// end every process reads the last value. The second delete is off: the
// leases alone keep slow fills out; the window is the invalidations'
// propagation, given 350 ms for a loaded machine.
func TestCacheAsideNoStaleValueBeyondWindow(t *testing.T) {
	dsn := storetest.DSN(t, store.Postgres)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE model (id int PRIMARY KEY, v bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO model VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}
	const window = 350 * time.Millisecond
	for name, rdb := range backends(t) {
		t.Run(name, func(t *testing.T) {
			if _, err := db.Exec(`UPDATE model SET v = 0 WHERE id = 1`); err != nil {
				t.Fatal(err)
			}
			load := func(ctx context.Context, key string) (int64, error) {
				var v int64
				if err := db.QueryRowContext(ctx, `SELECT v FROM model WHERE id = 1`).Scan(&v); err != nil {
					return 0, err
				}
				// A slow reader: the row read, the fill comes later.
				time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond) // sleep-ok: the race this test provokes
				return v, nil
			}
			ns := redistest.Prefix(t)
			caches := []*cache.Cache[int64]{
				newCache(t, cache.Config[int64]{Name: ns, Remote: rdb, Load: load, DoubleDelete: -1, LocalTTL: time.Minute, TTL: time.Minute}),
				newCache(t, cache.Config[int64]{Name: ns, Remote: rdb, Load: load, DoubleDelete: -1, LocalTTL: time.Minute, TTL: time.Minute}),
			}
			const versions = 150
			committed := make([]time.Time, versions+1)
			var mu sync.Mutex
			stop := make(chan struct{})
			type read struct {
				start time.Time
				v     int64
			}
			var reads []read
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := caches[i%2]
					for {
						select {
						case <-stop:
							return
						default:
						}
						s := time.Now()
						v, err := c.Get(context.Background(), "row1")
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						reads = append(reads, read{s, v})
						mu.Unlock()
					}
				}()
			}
			ctx := context.Background()
			for i := 1; i <= versions; i++ {
				if _, err := db.Exec(`UPDATE model SET v = $1 WHERE id = 1`, i); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				committed[i] = time.Now()
				mu.Unlock()
				if err := caches[i%2].Delete(ctx, "row1"); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			last := committed[versions]
			mu.Unlock()
			// Readers go on through the documented window after the last write.
			wait.For(t, 10*time.Second, "the window after the last write", func() bool { return time.Since(last) > window })
			close(stop)
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			stale := 0
			for _, r := range reads {
				// The newest version committed before r.start - window.
				newest := int64(0)
				for j := versions; j >= 1; j-- {
					if committed[j].Add(window).Before(r.start) {
						newest = int64(j)
						break
					}
				}
				if r.v < newest {
					stale++
					if stale <= 3 {
						t.Errorf("a read begun %v after version %d committed returned %d", r.start.Sub(committed[newest]), newest, r.v)
					}
				}
			}
			for _, c := range caches {
				if v, err := c.Get(ctx, "row1"); err != nil || v != versions {
					t.Fatalf("after the window: %d %v, want %d", v, err, versions)
				}
			}
			t.Logf("%d reads, %d stale beyond %v", len(reads), stale, window)
		})
	}
}

// A Delete while a miss is loading voids the fill: the stale value is
// returned to its caller but stored in neither tier, whatever the delay.
func TestLeaseVoidsFillAfterDelete(t *testing.T) {
	for name, rdb := range backends(t) {
		t.Run(name, func(t *testing.T) {
			loading, release := make(chan struct{}), make(chan struct{})
			var version atomic.Int64
			ns := redistest.Prefix(t)
			c := newCache(t, cache.Config[int64]{Name: ns, Remote: rdb, DoubleDelete: -1, Load: func(ctx context.Context, key string) (int64, error) {
				v := version.Load()
				if v == 0 {
					close(loading)
					<-release // the reader is slow: the write and its Delete happen now
				}
				return v, nil
			}})
			ctx := context.Background()
			got := make(chan int64, 1)
			go func() {
				v, err := c.Get(ctx, "k")
				if err != nil {
					t.Error(err)
				}
				got <- v
			}()
			<-loading
			version.Store(1)                           // the database write…
			if err := c.Delete(ctx, "k"); err != nil { // …then the cache
				t.Fatal(err)
			}
			close(release)
			// The local tier may load again when its key is invalidated
			// during the load (otter's rule): then the caller gets 1.
			if v := <-got; v != 0 && v != 1 {
				t.Fatalf("the slow read returned %d", v)
			}
			if b, err := rdb.Get(ctx, "tangram:cache:"+ns+":k").Result(); err == nil && b != "v1" {
				t.Fatalf("the remote tier holds %q after the write: the voided fill was stored", b)
			}
			if st := c.Stats(); st.Voided != 1 {
				t.Fatalf("stats %+v, want one voided fill", st)
			}
			if v, err := c.Get(ctx, "k"); err != nil || v != 1 {
				t.Fatalf("next read %d %v, want 1", v, err)
			}
		})
	}
}

// goroutinesIn counts the goroutines with fn on their stacks.
func goroutinesIn(fn string) int {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
