package main

import (
	"context"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestDemos runs the README tour's message queue demos against a server
// with its in-process broker.
func TestDemos(t *testing.T) {
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := mq.NewClient(ctx, mq.Config{Servers: h.Srv.RPCAddr(), Token: servertest.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ordered(ctx, c); err != nil {
		t.Fatalf("ordered: %v", err)
	}
	if err := transactions(ctx, c); err != nil {
		t.Fatalf("tx: %v", err)
	}
	// dlq waits for a resend: do it, as the tour's reader would.
	go func() {
		for ctx.Err() == nil {
			time.Sleep(300 * time.Millisecond)
			dead, err := c.DeadLetters(ctx, "demo-billing", 0, 10)
			if err == nil && len(dead) == 1 {
				if err := c.Resend(ctx, "demo-billing", dead[0].ID); err != nil {
					t.Errorf("resend: %v", err)
				}
				return
			}
		}
	}()
	start := time.Now()
	if err := deadLetters(ctx, c); err != nil {
		t.Fatalf("dlq: %v", err)
	}
	if time.Since(start) > 50*time.Second {
		t.Fatal("the resent dead letter was never billed")
	}
}
