package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/internal/wait"
)

// testIOLoops is Config.IOLoops for the tests' servers: make test runs
// the package twice, with event loops (the default) and with
// KV_TEST_IOLOOPS=-1, a goroutine per connection.
var testIOLoops, _ = strconv.Atoi(os.Getenv("KV_TEST_IOLOOPS"))

func start(t *testing.T, mod func(*Config)) (*Server, *redis.Client) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.IOLoops = testIOLoops
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rc := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: cfg.Password})
	t.Cleanup(func() { rc.Close() })
	return s, rc
}

// ok returns v, failing the test (by a panic: it takes no *testing.T so
// that a call's two results can be passed straight in) when err is set.
func ok[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestStringsAndKeys(t *testing.T) {
	_, rc := start(t, nil)
	ctx := context.Background()
	if got := ok(rc.Set(ctx, "a", "1", 0).Result()); got != "OK" {
		t.Fatal(got)
	}
	if got := ok(rc.Incr(ctx, "a").Result()); got != 2 {
		t.Fatal(got)
	}
	if got := ok(rc.IncrByFloat(ctx, "f", 0.1).Result()); got != 0.1 {
		t.Fatal(got)
	}
	if ok := ok(rc.SetNX(ctx, "a", "x", 0).Result()); ok {
		t.Fatal("SETNX on an existing key succeeded")
	}
	bin := "a\r\nb\x00c"
	ok(rc.Set(ctx, bin, bin, 0).Result())
	if got := ok(rc.Get(ctx, bin).Result()); got != bin {
		t.Fatalf("binary value: %q", got)
	}
	if _, err := rc.Get(ctx, "missing").Result(); !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	ok(rc.MSet(ctx, "m1", "x", "m2", "y").Result())
	if got := ok(rc.MGet(ctx, "m1", "m2", "m3").Result()); got[0] != "x" || got[1] != "y" || got[2] != nil {
		t.Fatal(got)
	}
	ok(rc.Set(ctx, "n", "9223372036854775807", 0).Result())
	if err := rc.Incr(ctx, "n").Err(); err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Fatalf("INCR past int64: %v", err)
	}
	ok(rc.RPush(ctx, "list", "x").Result())
	if err := rc.Get(ctx, "list").Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		t.Fatalf("GET of a list: %v", err)
	}
	if n := ok(rc.Append(ctx, "m1", "yz").Result()); n != 3 {
		t.Fatal(n)
	}
	if v := ok(rc.GetRange(ctx, "m1", 1, -1).Result()); v != "yz" {
		t.Fatal(v)
	}
	ok(rc.Rename(ctx, "m1", "renamed").Result())
	if v := ok(rc.Type(ctx, "renamed").Result()); v != "string" {
		t.Fatal(v)
	}
	keys := ok(rc.Keys(ctx, "m*").Result())
	if len(keys) != 1 || keys[0] != "m2" {
		t.Fatal(keys)
	}
	if n := ok(rc.Del(ctx, "m2", "renamed", "nope").Result()); n != 2 {
		t.Fatal(n)
	}
}

func TestScanReturnsEveryKeyOnce(t *testing.T) {
	_, rc := start(t, nil)
	ctx := context.Background()
	const n = 5000
	pipe := rc.Pipeline()
	for i := 0; i < n; i++ {
		pipe.Set(ctx, fmt.Sprintf("k:%d", i), "v", 0)
	}
	ok(pipe.Exec(ctx))
	seen := map[string]bool{}
	var cur uint64
	for {
		keys, next := ok2(rc.Scan(ctx, cur, "k:*", 100).Result())
		for _, k := range keys {
			seen[k] = true
		}
		if next == 0 {
			break
		}
		cur = next
	}
	if len(seen) != n {
		t.Fatalf("SCAN returned %d distinct keys of %d", len(seen), n)
	}
}

func ok2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return a, b
}

func TestExpiryNeverEarlyAndReclaimed(t *testing.T) {
	s, rc := start(t, nil)
	ctx := context.Background()
	// Keys that are never read again: the active sampler reclaims them.
	for i := 0; i < 200; i++ {
		ok(rc.Do(ctx, "SET", fmt.Sprintf("e:%d", i), "v", "PX", 50).Result())
	}
	ok(rc.Set(ctx, "w", "v", 0).Result())
	if s.dbsize(0) != 201 {
		t.Fatal(s.dbsize(0))
	}
	wait.For(t, 5*time.Second, "expired keys reclaimed without being read", func() bool { return s.dbsize(0) == 1 })
	// Never before its time: a key with a PX is there until its deadline.
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("p:%d", i)
		set := time.Now()
		ok(rc.Do(ctx, "SET", k, "v", "PX", 30).Result())
		for {
			_, err := rc.Get(ctx, k).Result()
			if errors.Is(err, redis.Nil) {
				if el := time.Since(set); el < 30*time.Millisecond {
					t.Fatalf("key gone after %v, before its 30ms", el)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if ttl := ok(rc.TTL(ctx, "w").Result()); ttl != -1 {
		t.Fatal(ttl)
	}
}

func TestCollections(t *testing.T) {
	_, rc := start(t, nil)
	ctx := context.Background()
	ok(rc.HSet(ctx, "h", "a", "1", "b", "2").Result())
	if v := ok(rc.HGetAll(ctx, "h").Result()); v["a"] != "1" || v["b"] != "2" {
		t.Fatal(v)
	}
	if v := ok(rc.HIncrBy(ctx, "h", "a", 5).Result()); v != 6 {
		t.Fatal(v)
	}
	for i := 0; i < 300; i++ { // past the small form
		ok(rc.HSet(ctx, "big", fmt.Sprint(i), i).Result())
	}
	if n := ok(rc.HLen(ctx, "big").Result()); n != 300 {
		t.Fatal(n)
	}
	ok(rc.RPush(ctx, "l", "a", "b", "c", "d").Result())
	if v := ok(rc.LPopCount(ctx, "l", 2).Result()); strings.Join(v, ",") != "a,b" {
		t.Fatal(v)
	}
	if v := ok(rc.LRange(ctx, "l", 0, -1).Result()); strings.Join(v, ",") != "c,d" {
		t.Fatal(v)
	}
	ok(rc.SAdd(ctx, "s1", "a", "b", "c").Result())
	ok(rc.SAdd(ctx, "s2", "b", "c", "d").Result())
	v := ok(rc.SInter(ctx, "s1", "s2").Result())
	sort.Strings(v)
	if strings.Join(v, ",") != "b,c" {
		t.Fatal(v)
	}
	for i := 0; i < 100; i++ {
		ok(rc.ZAdd(ctx, "z", redis.Z{Score: float64(100 - i), Member: fmt.Sprint("m", i)}).Result())
	}
	if r := ok(rc.ZRank(ctx, "z", "m99").Result()); r != 0 {
		t.Fatal(r)
	}
	if got := ok(rc.ZRangeByScore(ctx, "z", &redis.ZRangeBy{Min: "(1", Max: "3"}).Result()); strings.Join(got, ",") != "m98,m97" {
		t.Fatal(got)
	}
	if got := ok(rc.ZRevRange(ctx, "z", 0, 1).Result()); strings.Join(got, ",") != "m0,m1" {
		t.Fatal(got)
	}
	if got := ok(rc.ZPopMin(ctx, "z", 2).Result()); len(got) != 2 || got[0].Member != "m99" {
		t.Fatal(got)
	}
	if n := ok(rc.ZCard(ctx, "z").Result()); n != 98 {
		t.Fatal(n)
	}
}

func TestMultiWatch(t *testing.T) {
	s, rc := start(t, nil)
	ctx := context.Background()
	ok(rc.Set(ctx, "bal", "10", 0).Result())
	// 20 clients each add 1 with optimistic locking: every add lands once.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := redis.NewClient(&redis.Options{Addr: s.Addr()})
			defer c.Close()
			for {
				err := c.Watch(ctx, func(tx *redis.Tx) error {
					n, err := tx.Get(ctx, "bal").Int()
					if err != nil {
						return err
					}
					_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, "bal", n+1, 0)
						p.Set(ctx, fmt.Sprint("other", n), 1, 0)
						return nil
					})
					return err
				}, "bal")
				if errors.Is(err, redis.TxFailedErr) {
					continue
				}
				if err != nil {
					t.Error(err)
				}
				return
			}
		}()
	}
	wg.Wait()
	if v := ok(rc.Get(ctx, "bal").Int()); v != 30 {
		t.Fatalf("balance %d, want 30", v)
	}
}

func TestPubSubAndBlockingPop(t *testing.T) {
	_, rc := start(t, nil)
	ctx := context.Background()
	sub := rc.PSubscribe(ctx, "news.*")
	defer sub.Close()
	ok(sub.Receive(ctx))
	if n := ok(rc.Publish(ctx, "news.a", "hello").Result()); n != 1 {
		t.Fatal(n)
	}
	m := ok(sub.ReceiveMessage(ctx))
	if m.Payload != "hello" || m.Channel != "news.a" || m.Pattern != "news.*" {
		t.Fatal(m)
	}
	got := make(chan []string, 1)
	go func() {
		v, err := rc.BLPop(ctx, 5*time.Second, "q").Result()
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	c2 := redis.NewClient(&redis.Options{Addr: rc.Options().Addr})
	defer c2.Close()
	wait.For(t, 5*time.Second, "BLPOP blocked", func() bool {
		info := c2.Info(ctx, "clients").Val()
		return strings.Contains(info, "blocked_clients:1")
	})
	ok(c2.RPush(ctx, "q", "job").Result())
	if v := wait.Receive(t, 5*time.Second, "BLPOP woken", got); len(v) != 2 || v[1] != "job" {
		t.Fatal(v)
	}
	if v, err := c2.BRPop(ctx, 50*time.Millisecond, "empty").Result(); !errors.Is(err, redis.Nil) {
		t.Fatal(v, err)
	}
}

func TestMetrics(t *testing.T) {
	s, rc := start(t, nil)
	ctx := context.Background()
	ok(rc.Set(ctx, "a", "1", 0).Result())
	rc.Get(ctx, "nope")
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	mfs := ok(reg.Gather())
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetValue() + "}"
			}
			if m.Counter != nil {
				got[name] = m.GetCounter().GetValue()
			} else {
				got[name] = m.GetGauge().GetValue()
			}
		}
	}
	if got["tangram_kv_commands_total{set}"] < 1 || got["tangram_kv_keys"] != 1 || got["tangram_kv_keyspace_misses_total"] < 1 || got["tangram_kv_used_memory_bytes"] <= 0 {
		t.Fatal(got)
	}
}

func TestAuth(t *testing.T) {
	s, _ := start(t, func(c *Config) {
		c.Password = "pw"
		c.Authenticate = func(_ context.Context, user, pass string) error {
			if user == "svc" && pass == "tok" {
				return nil
			}
			return errors.New("no")
		}
	})
	ctx := context.Background()
	bad := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer bad.Close()
	if err := bad.Get(ctx, "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatal(err)
	}
	tok := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: "svc", Password: "tok"})
	defer tok.Close()
	ok(tok.Set(ctx, "x", "1", 0).Result())
	wrong := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: "nope"})
	defer wrong.Close()
	if err := wrong.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatal(err)
	}
	// Before AUTH, a request may not be large.
	conn := ok(net.Dial("tcp", s.Addr()))
	defer conn.Close()
	fmt.Fprintf(conn, "*2\r\n$3\r\nSET\r\n$100000\r\n")
	line := ok(bufio.NewReader(conn).ReadString('\n'))
	if !strings.Contains(line, "Protocol error") {
		t.Fatal(line)
	}
}

func TestHugeRequestsRefused(t *testing.T) {
	s, _ := start(t, nil)
	for _, req := range []string{
		"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$536870912\r\n", // a 512 MB bulk string
		"*1000000\r\n", // 10^6 arguments
		"*1\r\n$-5\r\n",
		"*x\r\n",
	} {
		conn := ok(net.Dial("tcp", s.Addr()))
		fmt.Fprint(conn, req)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil || !strings.HasPrefix(line, "-ERR Protocol error") {
			t.Fatalf("%q: %q %v", req[:min(len(req), 20)], line, err)
		}
	}
}

func TestInlineCommands(t *testing.T) {
	s, _ := start(t, nil)
	conn := ok(net.Dial("tcp", s.Addr()))
	defer conn.Close()
	fmt.Fprint(conn, "SET greeting \"hello world\"\r\nGET greeting\r\nPING\r\n")
	br := bufio.NewReader(conn)
	var got []string
	for i := 0; i < 4; i++ {
		got = append(got, strings.TrimSpace(ok(br.ReadString('\n'))))
	}
	if strings.Join(got, "|") != "+OK|$11|hello world|+PONG" {
		t.Fatal(got)
	}
}

func TestPersistenceRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	open := func() (*Server, *redis.Client) {
		cfg := DefaultConfig()
		cfg.Addr, cfg.Dir, cfg.Fsync = "127.0.0.1:0", dir, FsyncAlways
		s := ok(New(cfg))
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return s, redis.NewClient(&redis.Options{Addr: s.Addr()})
	}
	s, rc := open()
	ok(rc.Set(ctx, "s", "v", 0).Result())
	ok(rc.Set(ctx, "ttl", "v", time.Hour).Result())
	ok(rc.Incr(ctx, "n").Result())
	ok(rc.RPush(ctx, "l", "a", "b").Result())
	ok(rc.ZAdd(ctx, "z", redis.Z{Score: 1.5, Member: "x"}).Result())
	ok(rc.Do(ctx, "SELECT", "0").Result())
	pipe := rc.TxPipeline()
	pipe.HSet(ctx, "h", "f", "v")
	pipe.SAdd(ctx, "set", "m")
	ok(pipe.Exec(ctx))
	// A rewrite, then more writes after it.
	ok(rc.Do(ctx, "BGREWRITEAOF").Result())
	wait.For(t, 10*time.Second, "rewrite done", func() bool { return s.aof.status().rewrites == 1 })
	ok(rc.Incr(ctx, "n").Result())
	rc.Close()
	s.Close()

	s, rc = open()
	defer s.Close()
	defer rc.Close()
	checks := map[string]string{}
	checks["s"] = ok(rc.Get(ctx, "s").Result())
	checks["n"] = ok(rc.Get(ctx, "n").Result())
	checks["l"] = strings.Join(ok(rc.LRange(ctx, "l", 0, -1).Result()), ",")
	checks["h"] = ok(rc.HGet(ctx, "h", "f").Result())
	checks["z"] = fmt.Sprint(ok(rc.ZScore(ctx, "z", "x").Result()))
	want := map[string]string{"s": "v", "n": "2", "l": "a,b", "h": "v", "z": "1.5"}
	for k, v := range want {
		if checks[k] != v {
			t.Fatalf("%s after restart: %q, want %q", k, checks[k], v)
		}
	}
	if ttl := ok(rc.TTL(ctx, "ttl").Result()); ttl < 59*time.Minute {
		t.Fatalf("TTL after restart %v", ttl)
	}
}

func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Addr, cfg.Dir = "127.0.0.1:0", dir
	s := ok(New(cfg))
	noErr(t, s.Start(ctx))
	rc := redis.NewClient(&redis.Options{Addr: s.Addr()})
	ok(rc.Set(ctx, "a", "1", 0).Result())
	rc.Close()
	s.Close()
	f := ok(os.OpenFile(filepath.Join(dir, "incr.1.aof"), os.O_APPEND|os.O_WRONLY, 0))
	f.WriteString("*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$5\r\nhal") // a write cut short
	f.Close()
	s = ok(New(cfg))
	noErr(t, s.Start(ctx))
	defer s.Close()
	rc = redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer rc.Close()
	if v := ok(rc.Get(ctx, "a").Result()); v != "1" {
		t.Fatal(v)
	}
	if n := ok(rc.Exists(ctx, "b").Result()); n != 0 {
		t.Fatal("a torn record was applied")
	}
	ok(rc.Set(ctx, "c", "1", 0).Result()) // the log goes on after the cut
}

func TestIdleConnectionsTimeOut(t *testing.T) {
	s, _ := start(t, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	conn := ok(net.Dial("tcp", s.Addr()))
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("an idle connection got data")
	}
	wait.For(t, 5*time.Second, "idle connection dropped", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.clients) == 0
	})
}

// redis_rate's AllowN script (GCRA), run natively by its SHA1: a burst of
// 3 at 3 per hour lets 3 through with 2, 1, 0 remaining, then refuses with
// a retry after one emission interval (1,200 s); AllowAtMost grants what is
// left.
func TestRateLimiterScript(t *testing.T) {
	_, rc := start(t, nil)
	ctx := context.Background()
	const allowN, atMost = "f52a5b566060d79fd321d695df55bc918339c4aa", "054143318f521948424aa25df61d7f7ba835a9d7"
	for i, wantRemaining := range []int64{2, 1, 0} {
		v := ok(rc.EvalSha(ctx, allowN, []string{"rate:u1"}, 3, 3, 3600, 1).Slice())
		if v[0].(int64) != 1 || v[1].(int64) != wantRemaining || v[2].(string) != "-1" {
			t.Fatalf("call %d: %v", i, v)
		}
	}
	v := ok(rc.EvalSha(ctx, allowN, []string{"rate:u1"}, 3, 3, 3600, 1).Slice())
	retry, _ := strconv.ParseFloat(v[2].(string), 64)
	reset, _ := strconv.ParseFloat(v[3].(string), 64)
	if v[0].(int64) != 0 || retry < 1199 || retry > 1200 || reset < 3599 || reset > 3600 {
		t.Fatalf("over the limit: %v", v)
	}
	if ttl := ok(rc.TTL(ctx, "rate:u1").Result()); ttl < 3599*time.Second || ttl > 3600*time.Second {
		t.Fatalf("limiter key TTL %v", ttl)
	}
	v = ok(rc.EvalSha(ctx, atMost, []string{"rate:u2"}, 3, 3, 3600, 5).Slice())
	if v[0].(int64) != 3 || v[1].(int64) != 0 {
		t.Fatalf("AllowAtMost 5 of a burst of 3: %v", v)
	}
}
