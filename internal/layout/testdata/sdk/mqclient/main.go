// A producer and a consumer, with idempotent handling over Redis.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tangram-dev/tangram/mq"
)

func main() {
	ctx := context.Background()
	c, err := mq.NewClient(ctx, mq.Config{Servers: []string{"127.0.0.1:7071"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	p, err := c.NewProducer(mq.ProducerConfig{})
	if err == nil {
		p.Close()
	}
	var st mq.DedupStore
	h := mq.Idempotent(st, "g", time.Hour, func(ctx context.Context, m *mq.Message) error { return nil })
	cons, err := c.NewConsumer(mq.ConsumerConfig{Group: "g"})
	if err == nil {
		_ = h
		cons.Close()
	}
}
