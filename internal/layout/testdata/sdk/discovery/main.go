// A service that registers itself and calls another through discovery.
package main

import (
	"context"
	"fmt"

	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
)

func main() {
	ctx := context.Background()
	reg, err := registry.NewClient(ctx, registry.ClientConfig{Servers: []string{"127.0.0.1:7071"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	if _, err := reg.Register(ctx, registry.Instance{Key: registry.Key{Service: "greeter"}, Host: "127.0.0.1", Port: 9000}); err != nil {
		fmt.Println(err)
	}
	c, err := rpc.Dial(ctx, "greeter", rpc.WithResolver(reg.Resolver(registry.Key{Service: "other"})))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
}
