// Command cache benchmarks the hit path of Tangram's two-tier cache
// against go-zero's two-level pattern, in one run on this machine:
//
//   - tangram cache.Cache: otter v2 local tier over the remote tier;
//   - go-zero: core/collection.Cache (its in-process cache: a mutex, a
//     map, an LRU list) whose Take falls through to core/stores/cache's
//     Redis node — the two levels go-zero services stack — called as its
//     docs show, with a fetch closure per call;
//   - the two candidate local tiers alone, for the choice docs/cache.md
//     explains: otter v2 and ristretto v2 (Get only).
//
// Both caches use the same real Redis (TANGRAM_TEST_REDIS, default
// 127.0.0.1:6379) as the remote tier and the same in-memory "database";
// -keys keys of a ~100-byte struct are loaded first, so reads are local
// hits; keys are drawn from a Zipf distribution (s = 1.1) precomputed per
// goroutine. Figures: reads/s on 1 and on 8 goroutines, and heap
// allocations per read (runtime.MemStats.Mallocs over the run). Systems
// take turns going first over -rounds rounds; each row is a median with
// its spread; the last line is JSON.
//
//	go run ./bench/cache           # 3 s per case, 3 rounds
//	go run ./bench/cache -quick    # 1 s per case, 3 rounds
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/maypok86/otter/v2"
	goredis "github.com/redis/go-redis/v9"
	"github.com/zeromicro/go-zero/core/collection"
	"github.com/zeromicro/go-zero/core/logx"
	zcache "github.com/zeromicro/go-zero/core/stores/cache"
	zredis "github.com/zeromicro/go-zero/core/stores/redis"
	"github.com/zeromicro/go-zero/core/syncx"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/cache"
)

// User is the cached value (about 100 bytes encoded).
type User struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Plan  string `json:"plan"`
}

func redisAddr() string {
	if a := os.Getenv("TANGRAM_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func main() {
	quick := flag.Bool("quick", false, "1 s per case")
	dur := flag.Duration("d", 3*time.Second, "time per case and system")
	reps := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	nkeys := flag.Int("keys", 100_000, "keys")
	flag.Parse()
	if *quick {
		*dur = time.Second
	}
	if err := run(*dur, *reps, *nkeys); err != nil {
		fmt.Fprintln(os.Stderr, "bench/cache:", err)
		os.Exit(1)
	}
}

type system struct {
	name string
	get  func(ctx context.Context, key string) (User, error)
}

type result struct {
	perSec, allocs float64
	errs           int
}

// drive reads Zipf keys on g goroutines for d.
func drive(d time.Duration, g int, keys []string, get func(context.Context, string) (User, error)) result {
	ctx := context.Background()
	draws := make([][]int32, g)
	for i := range draws {
		z := rand.NewZipf(rand.New(rand.NewPCG(uint64(i), 7)), 1.1, 1, uint64(len(keys)-1))
		draws[i] = make([]int32, 1<<16)
		for j := range draws[i] {
			draws[i][j] = int32(z.Uint64())
		}
	}
	var n, errs atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dr := draws[i]
			local, bad := int64(0), int64(0)
			for j := 0; !stop.Load(); j++ {
				for k := range 256 {
					if _, err := get(ctx, keys[dr[(j*256+k)&(len(dr)-1)]]); err != nil {
						bad++
					}
				}
				local += 256
			}
			n.Add(local)
			errs.Add(bad)
		}()
	}
	time.Sleep(d) // sleep-ok: the measured interval
	stop.Store(true)
	wg.Wait()
	el := time.Since(start)
	runtime.ReadMemStats(&m1)
	ops := float64(n.Load())
	return result{perSec: ops / el.Seconds(), allocs: float64(m1.Mallocs-m0.Mallocs) / ops, errs: int(errs.Load())}
}

func run(d time.Duration, reps, nkeys int) error {
	ctx := context.Background()
	logx.Disable()
	rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr()})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("Redis at %s (set TANGRAM_TEST_REDIS; scripts/services.sh starts one): %w", redisAddr(), err)
	}
	keys := make([]string, nkeys)
	db := make(map[string]User, nkeys)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
		db[keys[i]] = User{ID: int64(i), Name: "User " + strconv.Itoa(i), Email: "user" + strconv.Itoa(i) + "@example.com", Plan: "pro"}
	}
	errNotFound := errors.New("not found")
	query := func(key string) (User, error) {
		u, ok := db[key]
		if !ok {
			return User{}, errNotFound
		}
		return u, nil
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)

	ours, err := cache.New(cache.Config[User]{Name: "bench-" + run, Remote: rdb, LocalTTL: time.Hour, TTL: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Load: func(ctx context.Context, key string) (User, error) {
			u, err := query(key)
			if errors.Is(err, errNotFound) {
				return u, cache.ErrNotFound
			}
			return u, err
		}})
	if err != nil {
		return err
	}
	defer ours.Close()
	<-ours.Ready()

	zr, err := zredis.NewRedis(zredis.RedisConf{Host: redisAddr(), Type: zredis.NodeType})
	if err != nil {
		return err
	}
	node := zcache.NewNode(zr, syncx.NewSingleFlight(), zcache.NewStat("bench"), errNotFound, zcache.WithExpiry(time.Hour))
	local, err := collection.NewCache(time.Hour, collection.WithLimit(2*nkeys))
	if err != nil {
		return err
	}
	zeroGet := func(ctx context.Context, key string) (User, error) {
		v, err := local.Take(key, func() (any, error) {
			var u User
			err := node.TakeCtx(ctx, &u, "bench:"+run+":"+key, func(val any) error {
				x, err := query(key)
				*val.(*User) = x
				return err
			})
			return u, err
		})
		if err != nil {
			return User{}, err
		}
		return v.(User), nil
	}

	ot, err := otter.New(&otter.Options[string, User]{MaximumSize: 2 * nkeys})
	if err != nil {
		return err
	}
	rc, err := ristretto.NewCache(&ristretto.Config[string, User]{NumCounters: int64(20 * nkeys), MaxCost: int64(2 * nkeys), BufferItems: 64})
	if err != nil {
		return err
	}
	defer rc.Close()
	errMiss := errors.New("miss")
	systems := []system{
		{"tangram cache (otter local tier over Redis)", ours.Get},
		{"go-zero " + spread.Version("github.com/zeromicro/go-zero") + " collection.Cache.Take over cache node (Redis)", zeroGet},
		{"otter " + spread.Version("github.com/maypok86/otter/v2") + " alone (GetIfPresent)", func(_ context.Context, k string) (User, error) {
			if u, ok := ot.GetIfPresent(k); ok {
				return u, nil
			}
			return User{}, errMiss
		}},
		{"ristretto " + spread.Version("github.com/dgraph-io/ristretto/v2") + " alone (Get)", func(_ context.Context, k string) (User, error) {
			if u, ok := rc.Get(k); ok {
				return u, nil
			}
			return User{}, errMiss
		}},
	}
	// Warm every system: each key read once (loads), then again.
	fmt.Fprintf(os.Stderr, "loading %d keys into each system …\n", nkeys)
	for _, k := range keys {
		u := db[k]
		ot.Set(k, u)
		rc.Set(k, u, 1)
		if _, err := ours.Get(ctx, k); err != nil {
			return err
		}
		if _, err := zeroGet(ctx, k); err != nil {
			return err
		}
	}
	rc.Wait()
	// A second pass: every key is now a local hit.
	for _, k := range keys {
		if _, err := ours.Get(ctx, k); err != nil {
			return err
		}
	}
	fmt.Printf("| case | system | reads/s | allocs per read | errors (misses) |\n| --- | --- | --- | --- | --- |\n")
	var rows []spread.Row
	for _, g := range []int{1, 8} {
		cas := fmt.Sprintf("hit path, Zipf, %d goroutine(s)", g)
		res := map[string][]result{}
		for r := range reps {
			for _, sys := range spread.Order(systems, r) {
				fmt.Fprintf(os.Stderr, "round %d/%d %s: %s …\n", r+1, reps, cas, sys.name)
				res[sys.name] = append(res[sys.name], drive(d, g, keys, sys.get))
			}
		}
		base := systems[0].name
		for _, sys := range systems {
			var rate, allocs []float64
			errs := 0
			for _, x := range res[sys.name] {
				rate, allocs, errs = append(rate, x.perSec), append(allocs, x.allocs), errs+x.errs
			}
			fmt.Printf("| %s | %s | %s | %s | %d |\n", cas, sys.name, spread.Summarise(rate).Format("%.0f"), spread.Summarise(allocs).Format("%.2f"), errs)
			if sys.name == base {
				continue
			}
			var our []float64
			oe := 0
			for _, x := range res[base] {
				our, oe = append(our, x.perSec), oe+x.errs
			}
			row := spread.NewRow(cas+" vs "+sys.name, spread.Summarise(our).Median, spread.Summarise(rate).Median, spread.Ratios(our, rate), oe+errs)
			row.Note = fmt.Sprintf("allocs per read: ours %.2f, theirs %.2f", median(res[base], func(x result) float64 { return x.allocs }), spread.Summarise(allocs).Median)
			rows = append(rows, row)
		}
	}
	st := ours.Stats()
	fmt.Printf("\nours: %d local hits, %d remote hits, %d loads, %d invalidations\n", st.LocalHits, st.RemoteHits, st.Loads, st.Invalidations)
	spread.Print("cache", "go-zero collection.Cache + cache node; otter v2, ristretto v2 alone", rows, nil)
	return nil
}

func median(rs []result, f func(result) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return spread.Summarise(xs).Median
}
