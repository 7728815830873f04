// A fenced lock on Redis (or Tangram's kv).
package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/lock/redislock"
)

func main() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6380"})
	c := redislock.New(rdb, redislock.Options{})
	defer c.Close()
	m := c.Mutex("orders")
	l, err := m.TryLock(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(l.Fence)
	_ = m.Unlock(context.Background())
}
