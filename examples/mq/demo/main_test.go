package main

import (
	"context"
	"testing"
	"time"

	poll "github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestDemos runs the README tour's message queue demos against a server
// with its in-process broker.
func TestDemos(t *testing.T) {
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := mq.NewClient(ctx, mq.Config{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken})
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
	resent := make(chan struct{})
	go func() {
		defer close(resent)
		var dead []*mq.Message
		if !poll.Until(60*time.Second, func() bool {
			var err error
			dead, err = c.DeadLetters(ctx, "demo-billing", 0, 10)
			return ctx.Err() != nil || err == nil && len(dead) == 1
		}) || ctx.Err() != nil {
			return
		}
		if err := c.Resend(ctx, "demo-billing", dead[0].ID); err != nil {
			t.Errorf("resend: %v", err)
		}
	}()
	defer func() { cancel(); <-resent }()
	start := time.Now()
	if err := deadLetters(ctx, c); err != nil {
		t.Fatalf("dlq: %v", err)
	}
	if time.Since(start) > 50*time.Second {
		t.Fatal("the resent dead letter was never billed")
	}
}
