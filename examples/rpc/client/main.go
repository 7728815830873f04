// Command client calls Greeter on a set of servers and reports which one
// answered each call. Kill a server while it runs: the calls go on.
//
//	go run ./examples/rpc/client -servers 127.0.0.1:7101,127.0.0.1:7102 -n 50
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/examples/rpc/greet"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/trace"
)

func main() {
	servers := flag.String("servers", "127.0.0.1:7101,127.0.0.1:7102", "comma-separated server addresses")
	reg := flag.String("registry", "", "find the servers through the registry at these RPC addresses instead of -servers")
	n := flag.Int("n", 50, "calls to make")
	every := flag.Duration("every", 100*time.Millisecond, "pause between calls")
	traceTo := flag.String("trace", trace.DefaultEndpoint, "send spans to this OTLP/HTTP endpoint (a tangram server's collector); off: none")
	flag.Parse()
	if err := run(*servers, *reg, *n, *every, *traceTo); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(servers, reg string, n int, every time.Duration, traceTo string) error {
	ctx := context.Background()
	var extra []rpc.DialOption
	if traceTo != "off" {
		// A client span per call; its context travels to the server.
		cfg := trace.EnvConfig()
		cfg.Service, cfg.Endpoint = "greeter-client", traceTo
		p, err := trace.New(cfg)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = p.Shutdown(sctx) // export what is left
		}()
		extra = append(extra, rpc.WithInterceptors(rpc.ClientTracing(p.TracerProvider())))
	}
	if reg != "" {
		rc, err := registry.NewClient(ctx, registry.ClientConfig{Servers: strings.Split(reg, ","), Token: os.Getenv("TANGRAM_TOKEN")})
		if err != nil {
			return err
		}
		defer rc.Close()
		extra = append(extra, rpc.WithResolver(rc.Resolver(registry.Key{Service: "greeter"})))
	}
	c, err := rpc.Dial(ctx, servers, append([]rpc.DialOption{
		rpc.WithTimeout(2 * time.Second),
		rpc.WithIdempotent("Greeter/SayHello"), // safe to retry on another server
		rpc.WithInterceptors(rpc.ClientCaller("example-client")),
		rpc.WithHeartbeat(500*time.Millisecond, 2*time.Second)}, extra...)...)
	if err != nil {
		return err
	}
	defer c.Close()
	g := greet.NewGreeterClient(c) // implements greet.Greeter by remote calls
	if err := g.Audit(ctx, &greet.AuditLine{Text: "client started"}); err != nil {
		return err
	}
	failed := 0
	for i := range n {
		r, err := g.SayHello(ctx, &greet.HelloRequest{Name: fmt.Sprintf("call %d", i)})
		if err != nil {
			failed++
			fmt.Printf("%3d error: %v\n", i, err)
		} else {
			fmt.Printf("%3d %s (from %s)\n", i, r.Message, r.Server)
		}
		time.Sleep(every)
	}
	// The async form: a future per call.
	f := g.SayHelloAsync(ctx, &greet.HelloRequest{Name: "async"})
	if r, err := f.Wait(); err == nil {
		fmt.Printf("async %s (from %s)\n", r.Message, r.Server)
	} else {
		failed++
	}
	fmt.Printf("done: %d calls, %d failed\n", n+1, failed)
	if failed > 0 {
		return fmt.Errorf("%d calls failed", failed)
	}
	return nil
}
