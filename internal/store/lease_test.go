package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
)

// hold is a holder whose node and process share one name.
func hold(name string) store.Holder { return store.Holder{Node: name, ID: name} }

// TestLeases runs on every dialect: one holder at a time among racing
// servers, extension keeps the term, takeover after expiry bumps it, and a
// former holder cannot renew.
func TestLeases(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			// Ten servers race for a fresh lease: exactly one wins.
			var mu sync.Mutex
			winners := map[string]int64{}
			var wg sync.WaitGroup
			for i := 0; i < 10; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					holder := fmt.Sprintf("srv-%d", i)
					l, ok, err := s.AcquireLease(ctx, "trigger", hold(holder), time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						mu.Lock()
						winners[holder] = l.Term
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if len(winners) != 1 {
				t.Fatalf("winners: %v", winners)
			}
			var holder string
			for h, term := range winners {
				holder = h
				if term != 1 {
					t.Fatalf("first term %d", term)
				}
			}
			// The holder extends, same term; others are refused.
			l, ok, err := s.AcquireLease(ctx, "trigger", hold(holder), time.Minute)
			if err != nil || !ok || l.Term != 1 {
				t.Fatalf("extend: %+v %v %v", l, ok, err)
			}
			if _, ok, _ := s.AcquireLease(ctx, "trigger", hold("intruder"), time.Minute); ok {
				t.Fatal("live lease taken")
			}
			const ttl = 50 * time.Millisecond
			renewed := time.Now()
			if err := s.RenewLease(ctx, "trigger", holder, 1, ttl); err != nil {
				t.Fatal(err)
			}
			// Expired (never before its TTL): another server takes it with a
			// new term; the old holder cannot renew.
			wait.For(t, 5*time.Second, "the lease to expire", func() bool {
				l, ok, err = s.AcquireLease(ctx, "trigger", hold("srv-new"), time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if ok && time.Since(renewed) < ttl {
					t.Fatalf("lease taken over %v after a renewal for %v", time.Since(renewed), ttl)
				}
				return ok
			})
			if l.Term != 2 || l.Holder != "srv-new" {
				t.Fatalf("takeover: %+v", l)
			}
			if err := s.RenewLease(ctx, "trigger", holder, 1, time.Minute); !errors.Is(err, store.ErrLeaseLost) {
				t.Fatalf("stale renew: %v", err)
			}
			// Release lets the next one in at once.
			if err := s.ReleaseLease(ctx, "trigger", "srv-new", 2); err != nil {
				t.Fatal(err)
			}
			l, ok, err = s.AcquireLease(ctx, "trigger", hold(holder), time.Minute)
			if err != nil || !ok || l.Term != 3 {
				t.Fatalf("after release: %+v %v %v", l, ok, err)
			}
			if _, err := s.Lease(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("missing lease: %v", err)
			}
		})
	}
}

// A restarted process of a node (a new incarnation) takes the node's live
// leases at once, under a new term; the earlier process is fenced off: it
// can neither renew nor extend. Another node still waits for the expiry.
func TestLeaseTakeoverByRestartedNode(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			// Incarnations order by start time: a later process sorts after.
			if h1, h2 := store.NewHolder("node-a"), store.NewHolder("node-a"); h2.ID < h1.ID {
				t.Fatalf("incarnations out of order: %s then %s", h1.ID, h2.ID)
			}
			old := store.Holder{Node: "node-a", ID: "node-a#0000000000000001"}
			for _, name := range []string{"p/1", "p/2", "m/node-a"} {
				if _, ok, err := s.AcquireLease(ctx, name, old, time.Minute); err != nil || !ok {
					t.Fatalf("%s: %v %v", name, ok, err)
				}
			}
			if _, ok, _ := s.AcquireLease(ctx, "p/1", store.NewHolder("node-b"), time.Minute); ok {
				t.Fatal("another node took a live lease")
			}
			if n, err := s.RenewLeases(ctx, old.ID, time.Minute); err != nil || n != 3 {
				t.Fatalf("renew all: %d %v", n, err)
			}
			fresh := store.Holder{Node: "node-a", ID: "node-a#0000000000000002"}
			if fresh.ID == old.ID {
				t.Fatal("two incarnations share an ID")
			}
			l, ok, err := s.AcquireLease(ctx, "p/1", fresh, time.Minute)
			if err != nil || !ok || l.Term != 2 || l.Holder != fresh.ID || l.Node != "node-a" {
				t.Fatalf("restart takeover: %+v %v %v", l, ok, err)
			}
			if err := s.RenewLease(ctx, "p/1", old.ID, 1, time.Minute); !errors.Is(err, store.ErrLeaseLost) {
				t.Fatalf("the paused predecessor renewed: %v", err)
			}
			if _, ok, _ := s.AcquireLease(ctx, "p/1", old, time.Minute); ok {
				t.Fatal("the predecessor took its lease back from its successor")
			}
			if n, err := s.RenewLeases(ctx, fresh.ID, time.Minute); err != nil || n > 1 {
				t.Fatalf("renew fresh: %d %v", n, err)
			}
			ls, err := s.Leases(ctx, "p/")
			if err != nil || len(ls) != 2 {
				t.Fatalf("leases: %+v %v", ls, err)
			}
		})
	}
}

// A write fenced by a lease (FenceLease) holds the lease's row until it
// ends; renewing every lease of the holder meanwhile must neither wait for
// it nor make other fenced writes wait (a convoy that made the scheduler
// fire hundreds of milliseconds late once a second). The fenced write
// extends its own lease, and a takeover still waits for it.
func TestRenewSkipsLeasesBusyWithFencedWrites(t *testing.T) {
	for _, d := range storetest.Dialects {
		if d == store.SQLite {
			continue // one writer: nothing runs beside a write
		}
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			h := hold("srv-a")
			var terms [2]int64
			for i, name := range []string{"p/0", "p/1"} {
				l, ok, err := s.AcquireLease(ctx, name, h, 2*time.Second)
				if err != nil || !ok {
					t.Fatal(ok, err)
				}
				terms[i] = l.Term
			}
			before, _ := s.Lease(ctx, "p/0")
			locked := make(chan struct{})
			release := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				done <- s.InTx(ctx, func(tx *store.Tx) error {
					if err := store.FenceLease(ctx, tx, "p/0", h.ID, terms[0], time.Minute); err != nil {
						return err
					}
					close(locked)
					<-release
					return nil
				})
			}()
			<-locked
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			n, err := s.RenewLeases(rctx, h.ID, 2*time.Second)
			cancel()
			if err != nil || n != 1 {
				t.Fatalf("renewal beside a fenced write: renewed %d, %v (want 1: the busy lease skipped, not waited for)", n, err)
			}
			// Another fenced write on the other lease goes through at once.
			fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err = s.InTx(fctx, func(tx *store.Tx) error { return store.FenceLease(fctx, tx, "p/1", h.ID, terms[1], 2*time.Second) })
			cancel()
			if err != nil {
				t.Fatalf("a fenced write on another lease waited: %v", err)
			}
			// A takeover of the busy lease waits for its write to end.
			took := make(chan bool, 1)
			go func() {
				_, ok, _ := s.AcquireLease(ctx, "p/0", hold("srv-b"), time.Minute)
				took <- ok
			}()
			select {
			case ok := <-took:
				t.Fatalf("a takeover did not wait for the fenced write (took it: %v)", ok)
			case <-time.After(300 * time.Millisecond): // sleep-ok: asserting that nothing happens
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if ok := <-took; ok {
				t.Fatal("the lease was taken over though its fenced write had extended it")
			}
			after, _ := s.Lease(ctx, "p/0")
			if !after.ExpiresAt.After(before.ExpiresAt.Add(30 * time.Second)) {
				t.Fatalf("the fenced write did not extend its lease: %v → %v", before.ExpiresAt, after.ExpiresAt)
			}
			// A fence under a stale term fails.
			err = s.InTx(ctx, func(tx *store.Tx) error { return store.FenceLease(ctx, tx, "p/0", h.ID, terms[0]+1, time.Second) })
			if !errors.Is(err, store.ErrLeaseLost) {
				t.Fatalf("fence under a wrong term: %v, want ErrLeaseLost", err)
			}
		})
	}
}

// FenceLeases fences several leases in one statement and names the ones
// the holder no longer holds; the others are extended.
func TestFenceLeasesNamesTheLostOnes(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s := storetest.Open(t, d)
			a, b := hold("srv-a"), hold("srv-b")
			terms := map[string]int64{}
			for _, n := range []string{"p/0", "p/1", "p/2"} {
				l, ok, err := s.AcquireLease(ctx, n, a, time.Minute)
				if err != nil || !ok {
					t.Fatal(ok, err)
				}
				terms[n] = l.Term
			}
			if err := s.ReleaseLease(ctx, "p/1", a.ID, terms["p/1"]); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.AcquireLease(ctx, "p/1", b, time.Minute); err != nil || !ok {
				t.Fatal(ok, err)
			}
			var lost []string
			err := s.InTx(ctx, func(tx *store.Tx) (err error) {
				lost, err = store.FenceLeases(ctx, tx, a.ID, terms, 2*time.Minute)
				return err
			})
			if err != nil || len(lost) != 1 || lost[0] != "p/1" {
				t.Fatalf("lost %v, %v; want [p/1]", lost, err)
			}
			err = s.InTx(ctx, func(tx *store.Tx) (err error) {
				lost, err = store.FenceLeases(ctx, tx, a.ID, map[string]int64{"p/0": terms["p/0"], "p/2": terms["p/2"]}, time.Minute)
				return err
			})
			if err != nil || len(lost) != 0 {
				t.Fatalf("lost %v, %v; want none", lost, err)
			}
		})
	}
}
