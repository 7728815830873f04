package store_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
)

// TestNotifyWakesListeners: on PostgreSQL a committed Notify wakes a
// listener and a rolled-back one does not; on the other dialects Notify is a
// no-op and Listen returns at once (callers scan).
func TestNotifyWakesListeners(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			s := storetest.Open(t, d)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			notify := func(commit bool) {
				err := s.InTx(ctx, func(tx *store.Tx) error {
					if err := tx.Notify(ctx, "test_wake"); err != nil {
						return err
					}
					if !commit {
						return errors.New("roll back")
					}
					return nil
				})
				if commit && err != nil {
					t.Fatal(err)
				}
			}
			if !s.CanListen() {
				notify(true)
				if err := s.Listen(ctx, "test_wake", func() { t.Error("woken without LISTEN") }, log); err != nil {
					t.Fatal(err)
				}
				return
			}
			wakes := make(chan struct{}, 16)
			done := make(chan error, 1)
			go func() { done <- s.Listen(ctx, "test_wake", func() { wakes <- struct{}{} }, log) }()
			wait.Receive(t, 10*time.Second, "the wake-up after connecting", wakes)
			notify(false) // rolled back: no wake-up
			notify(true)  // witnesses: two commits after the rollback
			notify(true)
			// PostgreSQL delivers in commit order, so once both commits'
			// wake-ups are in, a wake-up from the rollback would be too.
			wait.Receive(t, 10*time.Second, "the first committed notification", wakes)
			wait.Receive(t, 10*time.Second, "the second committed notification", wakes)
			select {
			case <-wakes:
				t.Fatal("a rolled-back Notify woke the listener")
			default:
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Listen after cancel: %v", err)
			}
		})
	}
}

func TestNotifyRefusesBadChannel(t *testing.T) {
	s := storetest.Open(t, store.Postgres)
	for _, ch := range []string{"", "Upper", "x; DROP TABLE y", strings.Repeat("a", 64)} {
		err := s.InTx(context.Background(), func(tx *store.Tx) error { return tx.Notify(context.Background(), ch) })
		if err == nil || !strings.Contains(err.Error(), "channel") {
			t.Errorf("Notify(%q) = %v, want an error naming the channel", ch, err)
		}
	}
}
