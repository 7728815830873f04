package redislock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/internal/redistest"
	kvserver "github.com/tangram-dev/tangram/kv/server"
	"github.com/tangram-dev/tangram/lock"
	"github.com/tangram-dev/tangram/lock/redislock"
)

func TestRedlock(t *testing.T) {
	ctx := context.Background()
	var servers []*kvserver.Server
	var nodes []redis.UniversalClient
	for range 3 {
		s, c := redistest.KVServer(t)
		servers = append(servers, s)
		nodes = append(nodes, c)
	}
	opts := redislock.Options{TTL: 2 * time.Second, MaxWait: 100 * time.Millisecond}
	a, b := redislock.NewRedlock(nodes, opts), redislock.NewRedlock(nodes, opts)
	defer a.Close()
	defer b.Close()
	ma, mb := a.Mutex("r"), b.Mutex("r")
	la, err := ma.TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mb.TryLock(ctx); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("second owner: %v", err)
	}
	// One node held by someone else: still a majority for the other two.
	got := make(chan *lock.Lease, 1)
	go func() {
		l, err := mb.Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	if err := ma.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l.Fence <= la.Fence {
			t.Fatalf("fence %d after %d", l.Fence, la.Fence)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not granted after release")
	}
	if err := mb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	// A minority down: locks still work, renewals too.
	_ = servers[2].Close()
	l, err := ma.TryLock(ctx)
	if err != nil {
		t.Fatalf("with one node of three down: %v", err)
	}
	if err := ma.Extend(ctx); err != nil {
		t.Fatalf("extend with one node down: %v", err)
	}
	// A majority down: the held lock is lost at its deadline; new ones fail.
	_ = servers[1].Close()
	select {
	case <-l.Done():
		if !errors.Is(l.Err(), lock.ErrLockLost) {
			t.Fatalf("lease ended with %v", l.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lease outlived a majority of its nodes")
	}
	if _, err := mb.TryLock(ctx); err == nil {
		t.Fatal("granted with two nodes of three down")
	}
}
