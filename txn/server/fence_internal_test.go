package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/txn"
)

// A driver whose claim was taken over writes nothing of the transaction:
// not its end, not its branches' results or attempts, not the release of
// its row locks — every statement of a fenced write is guarded, on every
// dialect — while the calls it made are still recorded. The driver
// holding the claim writes them all.
func TestFencedWriteOfAStaleDriver(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			st := storetest.Open(t, d)
			s, err := New(Config{Store: st})
			if err != nil {
				t.Fatal(err)
			}
			const xid = "fence-test"
			if _, err := st.Batch(ctx, false,
				store.Write{Query: `INSERT INTO txn_globals (xid, mode, app, status, phase, options, reason, created_at, updated_at, next_at, timeout_at, owner, claim_until, term, branches)
					VALUES (?, 'at', 'app', 'committing', 'commit', '{}', '', 1, 1, 1, 0, 'other#1', ?, 2, 2)`, Args: []any{xid, store.NowMillis() + 60_000}},
				store.Write{Query: `INSERT INTO txn_branches (xid, branch, step, done, attempts) VALUES (?, 0, '{}', '', 0), (?, 1, '{}', '', 3)`, Args: []any{xid, xid}},
				store.Write{Query: `INSERT INTO txn_locks (resource, row_key, xid, branch) VALUES ('db.t', '1', ?, 0)`, Args: []any{xid}},
			); err != nil {
				t.Fatal(err)
			}
			g := txn.Global{XID: xid, Mode: txn.ModeAT, Status: txn.StatusCommitting, Branches: []txn.Branch{{ID: 0}, {ID: 1}}}
			state := func() (status string, done string, attempts, locks, events int) {
				t.Helper()
				if err := st.QueryRowContext(ctx, `SELECT status FROM txn_globals WHERE xid = ?`, xid).Scan(&status); err != nil {
					t.Fatal(err)
				}
				if err := st.QueryRowContext(ctx, `SELECT done FROM txn_branches WHERE xid = ? AND branch = 0`, xid).Scan(&done); err != nil {
					t.Fatal(err)
				}
				if err := st.QueryRowContext(ctx, `SELECT attempts FROM txn_branches WHERE xid = ? AND branch = 1`, xid).Scan(&attempts); err != nil {
					t.Fatal(err)
				}
				if err := st.QueryRowContext(ctx, `SELECT COUNT(*) FROM txn_locks WHERE xid = ?`, xid).Scan(&locks); err != nil {
					t.Fatal(err)
				}
				if err := st.QueryRowContext(ctx, `SELECT COUNT(*) FROM txn_events WHERE xid = ?`, xid).Scan(&events); err != nil {
					t.Fatal(err)
				}
				return
			}

			stale := &driver{s: s, g: g, term: 1}
			stale.event(0, txn.OpAction, time.Now(), "ok", nil)
			if err := stale.done(ctx, []int{0}, txn.OpAction, txn.StatusCommitted); !errors.Is(err, errFenced) {
				t.Fatalf("a stale driver's end: %v, want errFenced", err)
			}
			if err := stale.attemptFailed(ctx, outcome{branch: 1, op: txn.OpAction, err: errors.New("down")}); !errors.Is(err, errFenced) {
				t.Fatalf("a stale driver's failed attempt: %v, want errFenced", err)
			}
			if status, done, attempts, locks, events := state(); status != "committing" || done != "" || attempts != 3 || locks != 1 || events != 1 {
				t.Fatalf("after a stale driver's writes: status %s, branch 0 done %q, branch 1 attempts %d, %d locks, %d events; want committing, \"\", 3, 1, 1",
					status, done, attempts, locks, events)
			}

			s.holder = "other#1"
			cur := &driver{s: s, g: g, term: 2}
			if err := cur.attemptFailed(ctx, outcome{branch: 1, op: txn.OpAction, err: errors.New("down")}); err != nil {
				t.Fatal(err)
			}
			if _, _, attempts, _, _ := state(); attempts != 1 {
				t.Fatalf("the current driver's failed attempt left attempts %d, want 1 (its own count)", attempts)
			}
			if err := cur.done(ctx, []int{0, 1}, txn.OpAction, txn.StatusCommitted); err != nil {
				t.Fatal(err)
			}
			if status, done, attempts, locks, _ := state(); status != "committed" || done != "action" || attempts != 0 || locks != 0 {
				t.Fatalf("after the current driver's end: status %s, branch 0 done %q, branch 1 attempts %d, %d locks; want committed, action, 0, 0",
					status, done, attempts, locks)
			}
		})
	}
}

// The app cache holds at most two generations: an entry survives one
// turnover, moves back when read, and is gone after two without a read.
func TestAppCacheGenerations(t *testing.T) {
	var c appCache
	c.put("first", "a")
	c.put("kept", "b")
	for i := range appCacheSize - 1 { // fills the first generation: the next put turns it over
		c.put(fmt.Sprint("x", i), "x")
	}
	if app, ok := c.get("first"); !ok || app != "a" {
		t.Fatalf("an entry of a full generation: %q %v", app, ok)
	}
	c.put("next", "n") // first generation becomes the old one ("first" read back before is in it)
	if app, ok := c.get("kept"); !ok || app != "b" {
		t.Fatalf("an entry of the old generation: %q %v", app, ok) // and moves back to the current one
	}
	for i := range appCacheSize {
		c.put(fmt.Sprint("y", i), "y")
	}
	if _, ok := c.get("x5"); ok {
		t.Fatal("an entry two generations old is still there")
	}
	if len(c.cur)+len(c.old) > 2*appCacheSize {
		t.Fatalf("%d entries, more than two generations", len(c.cur)+len(c.old))
	}
}
