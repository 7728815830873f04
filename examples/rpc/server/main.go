// Command server serves the Greeter service of examples/rpc/greet.
//
//	go run ./examples/rpc/server -addr 127.0.0.1:7101 -name one
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tangram-dev/tangram/examples/rpc/greet"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/trace"
)

type greeter struct{ name string }

var hbInterval = 5 * time.Second

func (g greeter) SayHello(ctx context.Context, req *greet.HelloRequest) (*greet.HelloReply, error) {
	if req.Name == "" {
		return nil, rpc.Errorf(rpc.InvalidArgument, "name is empty")
	}
	return &greet.HelloReply{Message: "hello " + req.Name, Server: g.name}, nil
}

func (g greeter) Audit(ctx context.Context, req *greet.AuditLine) error {
	slog.Info("audit", "text", req.Text, "caller", rpc.Incoming(ctx)[rpc.MetaCaller])
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:7101", "listen address")
	name := flag.String("name", "", "server name put in replies (default: the address)")
	reg := flag.String("registry", "", "register in the registry at these RPC addresses (comma-separated); empty: don't")
	zone := flag.String("zone", "", "zone to register in")
	heartbeat := flag.Duration("heartbeat", 5*time.Second, "registry heartbeat interval")
	flag.StringVar(&traceTo, "trace", trace.DefaultEndpoint, "send spans to this OTLP/HTTP endpoint (a tangram server's collector); off: none")
	flag.Parse()
	hbInterval = *heartbeat
	if *name == "" {
		*name = *addr
	}
	if err := run(*addr, *name, *reg, *zone); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

var traceTo string

// tracing returns the provider for the process's spans (nil when -trace
// is off) and how to flush them on the way out.
func tracing(service string) (*trace.Provider, func(), error) {
	if traceTo == "off" {
		return nil, func() {}, nil
	}
	cfg := trace.EnvConfig()
	cfg.Service, cfg.Endpoint, cfg.BatchTimeout = service, traceTo, 200*time.Millisecond
	p, err := trace.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return p, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}, nil
}

func run(addr, name, reg, zone string) error {
	ics := []rpc.ServerInterceptor{rpc.ServerLogging(slog.Default())}
	tp, flush, err := tracing("greeter")
	if err != nil {
		return err
	}
	defer flush()
	if tp != nil {
		// A server span per call, joined to the caller's trace.
		ics = append([]rpc.ServerInterceptor{rpc.ServerTracing(tp.TracerProvider())}, ics...)
	}
	srv, err := rpc.NewServer(rpc.Config{Interceptors: ics})
	if err != nil {
		return err
	}
	if err := greet.RegisterGreeter(srv, greeter{name: name}); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("serving Greeter on %s as %q\n", ln.Addr(), name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if reg != "" {
		// Register at start; Close (deferred) deregisters on the way out,
		// before the server drains, so clients stop picking this instance.
		rc, err := registry.NewClient(ctx, registry.ClientConfig{Servers: strings.Split(reg, ","), Token: os.Getenv("TANGRAM_TOKEN"),
			HeartbeatInterval: hbInterval})
		if err != nil {
			return err
		}
		defer rc.Close()
		host, port, _ := net.SplitHostPort(ln.Addr().String())
		p, _ := strconv.ParseUint(port, 10, 16)
		if _, err := rc.Register(ctx, registry.Instance{Key: registry.Key{Service: "greeter"}, Host: host, Port: uint16(p),
			Weight: 100, Zone: zone, Enabled: true, Ephemeral: true, Metadata: map[string]string{"name": name}}); err != nil {
			return err
		}
		fmt.Printf("registered as greeter %s:%d\n", host, p)
		go func() { <-ctx.Done(); rc.Close() }()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Println("draining")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	return err
}
