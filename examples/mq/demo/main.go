// Command demo walks through the message queue with the Go SDK:
//
//	go run ./examples/mq/demo ordered   # an ordered stream per account, consumed in order
//	go run ./examples/mq/demo dlq       # a consumer that fails on "poison": it lands in the dead-letter topic
//	go run ./examples/mq/demo tx        # transactional messages: commit, roll back, and one the broker checks back
//
// It talks to a tangram server's RPC port (-servers, default 127.0.0.1:7071)
// with TANGRAM_TOKEN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/mq"
)

func main() {
	servers := flag.String("servers", "127.0.0.1:7071", "tangram server RPC addresses")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: demo [-servers ADDR] ordered|dlq|tx")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := mq.NewClient(ctx, mq.Config{Servers: strings.Split(*servers, ","), Token: os.Getenv("TANGRAM_TOKEN")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	switch flag.Arg(0) {
	case "ordered":
		err = ordered(ctx, c)
	case "dlq":
		err = deadLetters(ctx, c)
	case "tx":
		err = transactions(ctx, c)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// ordered sends five events for each of three accounts, keyed by account
// (one queue each), and consumes them with an ordered consumer.
func ordered(ctx context.Context, c *mq.Client) error {
	if err := c.CreateTopic(ctx, "ledger", 4, true); err != nil {
		return err
	}
	p, err := c.NewProducer(mq.ProducerConfig{})
	if err != nil {
		return err
	}
	defer p.Close()
	accounts := []string{"alice", "bob", "carol"}
	for i := 1; i <= 5; i++ {
		for _, a := range accounts {
			if _, err := p.Send(ctx, &mq.Message{Topic: "ledger", ShardingKey: a, Keys: []string{a},
				Body: []byte(a + " event " + strconv.Itoa(i))}); err != nil {
				return err
			}
		}
	}
	var mu sync.Mutex
	seen := 0
	done := make(chan struct{})
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "demo-ledger", Orderly: true})
	if err != nil {
		return err
	}
	if err := cs.Subscribe("ledger", nil, func(ctx context.Context, m *mq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf("queue %d  offset %-3d %s\n", m.Queue, m.QueueOffset, m.Body)
		if seen++; seen == 15 {
			close(done)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := cs.Start(ctx); err != nil {
		return err
	}
	defer cs.Close()
	return wait(ctx, done, "15 events")
}

// deadLetters sends three orders, one of them "poison"; the consumer
// fails on it every time, so after its retries it goes to the group's
// dead-letter topic. List and resend it with `tangram mq dlq`.
func deadLetters(ctx context.Context, c *mq.Client) error {
	if err := c.CreateTopic(ctx, "orders", 4, false); err != nil {
		return err
	}
	p, err := c.NewProducer(mq.ProducerConfig{})
	if err != nil {
		return err
	}
	defer p.Close()
	for _, b := range []string{"order 1", "poison", "order 2"} {
		if _, err := p.Send(ctx, &mq.Message{Topic: "orders", Body: []byte(b), ShardingKey: b}); err != nil {
			return err
		}
	}
	// An ordered consumer retries in place, here twice, then dead-letters;
	// a concurrent one would retry through %RETRY%demo-billing with growing
	// delays (10 s, 30 s, 1 m …) sixteen times.
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "demo-billing", Orderly: true, MaxRetry: 3})
	if err != nil {
		return err
	}
	gaveUp, fixed := make(chan struct{}), make(chan struct{})
	var once, fixOnce sync.Once
	if err := cs.Subscribe("orders", nil, func(ctx context.Context, m *mq.Message) error {
		// A message that comes back from the dead-letter topic carries the
		// ID it first had (ORIGIN_MSG_ID): this time the bug is "fixed".
		if string(m.Body) == "poison" && m.Prop("ORIGIN_MSG_ID") == "" {
			fmt.Printf("billing %q: failed\n", m.Body)
			return errors.New("cannot bill this order")
		}
		fmt.Printf("billing %q: ok\n", m.Body)
		switch string(m.Body) {
		case "order 2":
			once.Do(func() { close(gaveUp) })
		case "poison":
			fixOnce.Do(func() { close(fixed) })
		}
		return nil
	}); err != nil {
		return err
	}
	if err := cs.Start(ctx); err != nil {
		return err
	}
	defer cs.Close()
	if err := wait(ctx, gaveUp, "the consumer"); err != nil {
		return err
	}
	time.Sleep(4 * time.Second) // three attempts, a second apart
	dead, err := c.DeadLetters(ctx, "demo-billing", 0, 10)
	if err != nil {
		return err
	}
	for _, m := range dead {
		fmt.Printf("dead letter %s: %q after %d attempts\n  resend it: tangram mq dlq resend demo-billing %s\n", m.ID, m.Body, 3, m.ID)
	}
	fmt.Println("waiting up to a minute for a resent dead letter…")
	select {
	case <-fixed:
		fmt.Println("the resent message was billed")
	case <-time.After(time.Minute):
	case <-ctx.Done():
	}
	return nil
}

// transactions: a local transaction decides each half message's fate; the
// third never tells the broker, which asks the producer group's checker.
func transactions(ctx context.Context, c *mq.Client) error {
	if err := c.CreateTopic(ctx, "payments", 2, false); err != nil {
		return err
	}
	var mu sync.Mutex
	db := map[string]bool{} // the local "database": order → committed
	p, err := c.NewProducer(mq.ProducerConfig{Group: "demo-payments", TxChecker: func(ctx context.Context, m *mq.Message) mq.TxState {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf("broker asks about %q: ", m.Body)
		if db[string(m.Body)] {
			fmt.Println("committed locally → commit")
			return mq.TxCommit
		}
		fmt.Println("not in the database → roll back")
		return mq.TxRollback
	}})
	if err != nil {
		return err
	}
	defer p.Close()
	got := make(chan string, 10)
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "demo-shipping"})
	if err != nil {
		return err
	}
	if err := cs.Subscribe("payments", nil, func(ctx context.Context, m *mq.Message) error {
		got <- string(m.Body)
		return nil
	}); err != nil {
		return err
	}
	if err := cs.Start(ctx); err != nil {
		return err
	}
	defer cs.Close()
	for _, tc := range []struct {
		order string
		state mq.TxState
	}{{"order-A", mq.TxCommit}, {"order-B", mq.TxRollback}, {"order-C", mq.TxUnknown}} {
		_, st, err := p.SendTransaction(ctx, &mq.Message{Topic: "payments", Body: []byte(tc.order)},
			func(ctx context.Context, half *mq.SendResult) (mq.TxState, error) {
				mu.Lock()
				defer mu.Unlock()
				if tc.state != mq.TxRollback {
					db[tc.order] = true // the local transaction commits…
				}
				return tc.state, nil // …but order-C's outcome never reaches the broker
			})
		if err != nil {
			return err
		}
		fmt.Printf("%s: half message sent, local transaction said %v\n", tc.order, [...]string{"unknown", "commit", "rollback"}[st])
	}
	fmt.Println("waiting for delivery (order-C after the broker's check-back, about 6 s)…")
	for n := 0; n < 2; n++ {
		select {
		case o := <-got:
			fmt.Printf("shipping received %s\n", o)
		case <-time.After(20 * time.Second):
			return fmt.Errorf("only %d of 2 transactional messages arrived", n)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func wait(ctx context.Context, done <-chan struct{}, what string) error {
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("timed out waiting for %s", what)
	case <-ctx.Done():
		return ctx.Err()
	}
}
