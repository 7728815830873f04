package cache_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tangram-dev/tangram/cache"
)

// Readers keep a key hot (so it lives in the front) while a writer changes
// it, by Set and by Delete after a source change; after each change
// returns, the writer's own read must see it: no value read just before a
// change may settle in the front after it.
func TestFrontReadsYourWritesUnderReaders(t *testing.T) {
	var src atomic.Int64
	c := newCache(t, cache.Config[string]{Name: "front", Codec: cache.String{},
		Load: func(ctx context.Context, key string) (string, error) { return strconv.FormatInt(src.Load(), 10), nil }})
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for range 64 {
					if _, err := c.Get(ctx, "k"); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := int64(1); i <= 20000; i++ {
		want := strconv.FormatInt(i, 10)
		src.Store(i) // the source of truth first, as a writer does (a delayed second delete reloads from it)
		if i%2 == 0 {
			if err := c.Set(ctx, "k", want); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := c.Delete(ctx, "k"); err != nil {
				t.Fatal(err)
			}
		}
		for range 8 { // the writer's reads promote too
			if v, err := c.Get(ctx, "k"); err != nil || v != want {
				t.Fatalf("change %d: read %q %v after it returned", i, v, err)
			}
		}
	}
}
