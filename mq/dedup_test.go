package mq_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/mq/redisdedup"
	"github.com/tangram-dev/tangram/mq/sqldedup"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/mq"
)

func dedupStores(t *testing.T) map[string]mq.DedupStore {
	out := map[string]mq.DedupStore{}
	for _, d := range storetest.Dialects {
		st := storetest.Open(t, d)
		sd := &sqldedup.Store{DB: st.DB(), Dialect: string(d)}
		if d == store.SQLite {
			sd.Dialect = "sqlite"
		}
		if err := sd.Init(context.Background()); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		out[string(d)] = sd
	}
	addr := os.Getenv("TANGRAM_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rc := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rc.Close() })
	if err := rc.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s is not reachable (%v); start it with scripts/services.sh or set TANGRAM_TEST_REDIS", addr, err)
	}
	out["redis"] = &redisdedup.Store{Client: rc, Prefix: fmt.Sprintf("test:%d:", time.Now().UnixNano())}
	return out
}

func TestDedupStores(t *testing.T) {
	ctx := context.Background()
	for name, st := range dedupStores(t) {
		t.Run(name, func(t *testing.T) {
			expect := func(key string, want mq.Claim) {
				t.Helper()
				got, err := st.Claim(ctx, key, time.Minute)
				if err != nil || got != want {
					t.Fatalf("claim %s: %v %v, want %v", key, got, err, want)
				}
			}
			expect("a", mq.Claimed)
			expect("a", mq.InProgress)
			keep := 300 * time.Millisecond
			doneAt := time.Now()
			if err := st.Done(ctx, "a", keep); err != nil {
				t.Fatal(err)
			}
			expect("a", mq.Duplicate)
			expect("b", mq.Claimed)
			if err := st.Release(ctx, "b"); err != nil {
				t.Fatal(err)
			}
			expect("b", mq.Claimed)
			// The record expires after keep, never before.
			wait.For(t, 10*time.Second, "the record of a to expire", func() bool {
				c, err := st.Claim(ctx, "a", time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if c == mq.Claimed && time.Since(doneAt) < keep {
					t.Fatalf("record expired after %v, before its %v", time.Since(doneAt), keep)
				}
				return c == mq.Claimed
			})
		})
	}
}

func TestIdempotentHandlerRunsOnce(t *testing.T) {
	ctx := context.Background()
	for name, st := range dedupStores(t) {
		t.Run(name, func(t *testing.T) {
			var runs atomic.Int32
			fail := true
			h := mq.Idempotent(st, "billing", time.Hour, func(ctx context.Context, m *mq.Message) error {
				runs.Add(1)
				if fail {
					fail = false
					return fmt.Errorf("first attempt fails")
				}
				return nil
			})
			m := &mq.Message{MsgID: "0123abcd", Body: []byte("charge")}
			if err := h(ctx, m); err == nil {
				t.Fatal("the failure was swallowed")
			}
			for range 3 { // the retry, then two duplicates
				if err := h(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			if n := runs.Load(); n != 2 {
				t.Fatalf("handler ran %d times, want 2 (a failure, then once)", n)
			}
		})
	}
}
