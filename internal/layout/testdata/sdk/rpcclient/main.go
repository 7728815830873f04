// A plain RPC client and server.
package main

import (
	"context"
	"fmt"
	"net"

	"github.com/tangram-dev/tangram/rpc"
)

func main() {
	srv, err := rpc.NewServer(rpc.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := rpc.Dial(context.Background(), ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
}
