package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tangram-dev/tangram/rpc/codec"
)

type echoReq struct {
	Text  string
	Sleep time.Duration
	Fail  Code
	Panic bool
}

type echoResp struct {
	Text string
	Peer string
	Meta map[string]string
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testServer starts a server with the echo methods on 127.0.0.1:0.
func testServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	must(t, Handle(s, "Echo/Echo", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		if r.Panic {
			panic("boom")
		}
		if r.Sleep > 0 {
			select {
			case <-time.After(r.Sleep):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if r.Fail != OK {
			return nil, Errorf(r.Fail, "asked to fail")
		}
		return &echoResp{Text: r.Text, Peer: addr, Meta: Incoming(ctx)}, nil
	}))
	must(t, Handle(s, "Echo/Bytes", func(ctx context.Context, r *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		return r, nil
	}))
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, addr
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func dial(t *testing.T, target string, opts ...DialOption) *Client {
	t.Helper()
	opts = append([]DialOption{WithLogger(quietLogger())}, opts...)
	c, err := Dial(context.Background(), target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestUnaryCodecs(t *testing.T) {
	_, addr := testServer(t, Config{})
	c := dial(t, addr)
	ctx := context.Background()
	for _, cd := range []codec.Codec{codec.Msgpack, codec.JSON} {
		resp, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Text: "hi " + cd.Name()}, Codec(cd))
		if err != nil || resp.Text != "hi "+cd.Name() {
			t.Fatalf("%s: %+v %v", cd.Name(), resp, err)
		}
	}
	big := strings.Repeat("x", 1024)
	out, err := Call[wrapperspb.BytesValue](ctx, c, "Echo/Bytes", wrapperspb.Bytes([]byte(big)))
	if err != nil || string(out.Value) != big {
		t.Fatalf("proto: %v", err)
	}
	// A protobuf request to a method whose request type is not a protobuf message.
	_, err = Call[echoResp](ctx, c, "Echo/Echo", wrapperspb.String("x"))
	if CodeOf(err) != InvalidArgument || !strings.Contains(err.Error(), "proto") {
		t.Fatalf("codec mismatch: %v", err)
	}
}

func TestErrors(t *testing.T) {
	_, addr := testServer(t, Config{})
	c := dial(t, addr)
	ctx := context.Background()
	_, err := Call[echoResp](ctx, c, "Echo/Nope", &echoReq{})
	if CodeOf(err) != Unimplemented || !strings.Contains(err.Error(), "Echo/Nope") {
		t.Fatalf("unknown method: %v", err)
	}
	_, err = Call[echoResp](ctx, c, "Nope/Echo", &echoReq{})
	if CodeOf(err) != Unimplemented || !strings.Contains(err.Error(), "unknown service Nope") {
		t.Fatalf("unknown service: %v", err)
	}
	_, err = Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Fail: PermissionDenied})
	if !errors.Is(err, &Error{Code: PermissionDenied}) {
		t.Fatalf("typed error: %v", err)
	}
	_, err = Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Panic: true})
	if CodeOf(err) != Internal || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panic: %v", err)
	}
	// The server survives the panic.
	if _, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Text: "ok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Call[echoResp](ctx, c, "bad", &echoReq{}); CodeOf(err) != InvalidArgument {
		t.Fatalf("bad name: %v", err)
	}
}

func TestDeadlineCancelsHandlerAndLateReplyDropped(t *testing.T) {
	var handlerErr atomic.Value
	s, addr := testServer(t, Config{})
	must(t, Handle(s, "Slow/Wait", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		<-ctx.Done()
		handlerErr.Store(ctx.Err())
		return nil, ctx.Err()
	}))
	// A handler that ignores its context and answers late.
	must(t, Handle(s, "Slow/Ignore", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		time.Sleep(r.Sleep) // sleep-ok: a handler that takes its time and ignores ctx
		return &echoResp{Text: "late"}, nil
	}))
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Call[echoResp](ctx, c, "Slow/Wait", &echoReq{})
	if CodeOf(err) != DeadlineExceeded {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	wait.For(t, 5*time.Second, "the condition", func() bool { return handlerErr.Load() != nil })
	if !errors.Is(handlerErr.Load().(error), context.DeadlineExceeded) {
		t.Fatalf("handler context: %v", handlerErr.Load())
	}
	_, err = Call[echoResp](context.Background(), c, "Slow/Ignore", &echoReq{Sleep: 150 * time.Millisecond}, Timeout(30*time.Millisecond))
	if CodeOf(err) != DeadlineExceeded {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	wait.For(t, 5*time.Second, "the condition", func() bool { return c.LateReplies() == 1 })
}

// lateTimerCtx is a context whose deadline has passed but whose timer
// has not fired yet: Err is still nil (the moment between the two).
type lateTimerCtx struct{ context.Context }

func (lateTimerCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestPassedDeadlineBeforeTimerIsDeadlineExceeded: a call (and its dial) made when its
// deadline has passed, before its context's timer fired, fails with
// DeadlineExceeded — it was reported as Canceled, which callers treat as
// their own cancellation.
func TestPassedDeadlineBeforeTimerIsDeadlineExceeded(t *testing.T) {
	_, addr := testServer(t, Config{})
	c := dial(t, addr)
	ctx := lateTimerCtx{context.Background()}
	_, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Text: "x"})
	if CodeOf(err) != DeadlineExceeded {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	// The dial it cut short says nothing about the server: still in rotation.
	if up, ok := c.Endpoints()[addr]; !ok || !up {
		t.Fatalf("endpoint taken out of rotation by the caller's deadline: %v", c.Endpoints())
	}
	if e := ctxError(context.Background()); e.Code != Canceled {
		t.Fatalf("no deadline: want Canceled, got %v", e)
	}
}

func TestMultiplexedOutOfOrder(t *testing.T) {
	_, addr := testServer(t, Config{})
	c := dial(t, addr)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text := strings.Repeat("a", i)
			resp, err := Call[echoResp](context.Background(), c, "Echo/Echo",
				&echoReq{Text: text, Sleep: time.Duration(200-i) * 100 * time.Microsecond})
			if err == nil && resp.Text != text {
				err = errors.New("wrong reply")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestAsyncOnewayAndMetadata(t *testing.T) {
	s, addr := testServer(t, Config{})
	got := make(chan string, 1)
	must(t, Handle(s, "Log/Write", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		got <- r.Text + "|" + Incoming(ctx)[MetaXID]
		return nil, nil
	}))
	c := dial(t, addr)
	ctx := WithOutgoing(context.Background(), MetaXID, "xid-1")
	must(t, c.Oneway(ctx, "Log/Write", &echoReq{Text: "fire"}))
	select {
	case v := <-got:
		if v != "fire|xid-1" {
			t.Fatal(v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("oneway call not handled")
	}
	f := Go[echoResp](ctx, c, "Echo/Echo", &echoReq{Text: "async"})
	resp, err := f.Wait()
	if err != nil || resp.Text != "async" || resp.Meta[MetaXID] != "xid-1" {
		t.Fatalf("%+v %v", resp, err)
	}
	cb := make(chan string, 1)
	CallFunc(ctx, c, "Echo/Echo", &echoReq{Text: "callback"}, func(r *echoResp, err error) {
		if err != nil {
			cb <- err.Error()
			return
		}
		cb <- r.Text
	})
	if v := <-cb; v != "callback" {
		t.Fatal(v)
	}
}

type greeter struct{}

type HelloReq struct{ Name string }
type HelloResp struct{ Greeting string }

func (greeter) SayHello(ctx context.Context, r *HelloReq) (*HelloResp, error) {
	return &HelloResp{Greeting: "hello " + r.Name}, nil
}
func (greeter) NotAnRPC(x int) int { return x }

func TestReflectionRegister(t *testing.T) {
	s, addr := testServer(t, Config{})
	must(t, s.Register("Greeter", greeter{}))
	if err := s.Register("Bad", struct{}{}); err == nil {
		t.Fatal("want an error for a type without RPC methods")
	}
	c := dial(t, addr)
	resp, err := Call[HelloResp](context.Background(), c, "Greeter/SayHello", &HelloReq{Name: "seed"})
	if err != nil || resp.Greeting != "hello seed" {
		t.Fatalf("%+v %v", resp, err)
	}
}

func TestConcurrencyLimits(t *testing.T) {
	s, addr := testServer(t, Config{})
	release := make(chan struct{})
	must(t, Handle(s, "Lim/One", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		<-release
		return &echoResp{}, nil
	}, MaxConcurrency(1)))
	c := dial(t, addr, WithRetry(RetryPolicy{MaxAttempts: 1}))
	f := Go[echoResp](context.Background(), c, "Lim/One", &echoReq{})
	wait.For(t, 5*time.Second, "the condition", func() bool { return s.InFlight() == 1 })
	_, err := Call[echoResp](context.Background(), c, "Lim/One", &echoReq{})
	if CodeOf(err) != ResourceExhausted {
		t.Fatalf("want ResourceExhausted, got %v", err)
	}
	close(release)
	if _, err := f.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestServerInFlightLimit(t *testing.T) {
	s, addr := testServer(t, Config{MaxInFlight: 2})
	release := make(chan struct{})
	must(t, Handle(s, "Lim/Block", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		<-release
		return &echoResp{}, nil
	}))
	c := dial(t, addr, WithRetry(RetryPolicy{MaxAttempts: 1}))
	f1 := Go[echoResp](context.Background(), c, "Lim/Block", &echoReq{})
	f2 := Go[echoResp](context.Background(), c, "Lim/Block", &echoReq{})
	wait.For(t, 5*time.Second, "the condition", func() bool { return s.InFlight() == 2 })
	_, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{})
	if CodeOf(err) != ResourceExhausted {
		t.Fatalf("want ResourceExhausted, got %v", err)
	}
	close(release)
	f1.Wait()
	f2.Wait()
}

func TestCompression(t *testing.T) {
	_, addr := testServer(t, Config{CompressAbove: 100})
	c := dial(t, addr, WithCompression(100))
	text := strings.Repeat("compress me ", 1000)
	resp, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{Text: text})
	if err != nil || resp.Text != text {
		t.Fatalf("%v", err)
	}
}

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }

// An oversized request is refused on the client, before it could cost the
// connection the other calls share; an oversized response becomes an error.
func TestFrameLimitsPerCall(t *testing.T) {
	s, addr := testServer(t, Config{MaxFrameSize: 256 << 10})
	must(t, Handle(s, "Big/Out", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		return &echoResp{Text: strings.Repeat("x", 300<<10)}, nil
	}))
	c := dial(t, addr, WithMaxFrameSize(256<<10))
	_, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{Text: strings.Repeat("y", 300<<10)})
	if CodeOf(err) != ResourceExhausted || !strings.Contains(err.Error(), "frame limit") {
		t.Fatalf("big request: %v", err)
	}
	_, err = Call[echoResp](context.Background(), c, "Big/Out", &echoReq{})
	if CodeOf(err) != ResourceExhausted || !strings.Contains(err.Error(), "Big/Out") {
		t.Fatalf("big response: %v", err)
	}
	if _, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{Text: "small"}); err != nil {
		t.Fatalf("the connection should be intact: %v", err)
	}
}

// A server with a Fallback forwards calls it has no handler for, undecoded,
// through InvokeRaw — a one-hop proxy in a dozen lines.
func TestFallbackAndInvokeRaw(t *testing.T) {
	_, backend := testServer(t, Config{})
	bc := dial(t, backend)
	front, err := NewServer(Config{Logger: quietLogger(), Fallback: func(ctx context.Context, method string, codecID uint8, body []byte) ([]byte, error) {
		var kv []string
		for k, v := range Incoming(ctx) {
			kv = append(kv, k, v)
		}
		return bc.InvokeRaw(WithOutgoing(ctx, kv...), method, codecID, body)
	}})
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go front.Serve(ln)
	defer front.Close()
	c := dial(t, ln.Addr().String())
	ctx := WithOutgoing(context.Background(), MetaXID, "x-1")
	r, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Text: "via proxy"}, Codec(codec.JSON))
	if err != nil || r.Text != "via proxy" || r.Peer != backend || r.Meta[MetaXID] != "x-1" {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := Call[echoResp](ctx, c, "Echo/Nope", &echoReq{}); CodeOf(err) != Unimplemented {
		t.Fatalf("backend's error through the proxy: %v", err)
	}
}
