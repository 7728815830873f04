// A lock of the server backend (ZooKeeper semantics) over Tangram RPC.
package main

import (
	"context"
	"fmt"

	"github.com/tangram-dev/tangram/lock"
)

func main() {
	ctx := context.Background()
	c, err := lock.Dial(ctx, lock.Config{Servers: []string{"127.0.0.1:7071"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	m := c.Mutex("orders/report")
	if l, err := m.TryLock(ctx); err == nil {
		fmt.Println(l.Fence)
		_ = m.Unlock(ctx)
	}
}
