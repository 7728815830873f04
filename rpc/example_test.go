package rpc_test

import (
	"context"
	"fmt"
	"net"

	"github.com/tangram-dev/tangram/rpc"
)

type AddReq struct{ A, B int }
type AddResp struct{ Sum int }

func Example() {
	srv, _ := rpc.NewServer(rpc.Config{})
	rpc.Handle(srv, "Calc/Add", func(ctx context.Context, r *AddReq) (*AddResp, error) {
		return &AddResp{Sum: r.A + r.B}, nil
	})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	ctx := context.Background()
	c, _ := rpc.Dial(ctx, ln.Addr().String())
	defer c.Close()
	resp, err := rpc.Call[AddResp](ctx, c, "Calc/Add", &AddReq{A: 2, B: 3})
	fmt.Println(resp.Sum, err)

	_, err = rpc.Call[AddResp](ctx, c, "Calc/Mul", &AddReq{})
	fmt.Println(rpc.CodeOf(err), err)
	// Output:
	// 5 <nil>
	// Unimplemented rpc: Unimplemented: unknown method Calc/Mul
}
