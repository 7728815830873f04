package rpcmetrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/rpc"
)

type req struct {
	Fail int `msgpack:"fail"`
}
type resp struct{}

func serve(t *testing.T, cfg rpc.Config) (*rpc.Server, net.Listener) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := rpc.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ln
}

func dial(t *testing.T, addr string, opts ...rpc.DialOption) *rpc.Client {
	t.Helper()
	c, err := rpc.Dial(context.Background(), addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestUnary(t *testing.T) {
	m, err := New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s, ln := serve(t, rpc.Config{Interceptors: []rpc.ServerInterceptor{m.ServerInterceptor()}})
	release := make(chan struct{})
	if err := rpc.Handle(s, "Echo/Echo", func(ctx context.Context, r *req) (*resp, error) {
		if r.Fail != 0 {
			return nil, rpc.Errorf(rpc.Code(r.Fail), "asked to fail")
		}
		return &resp{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := rpc.Handle(s, "Slow/Ignore", func(ctx context.Context, r *req) (*resp, error) {
		<-release // ignores ctx: answers after the caller gave up
		return &resp{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	c := dial(t, ln.Addr().String(), m.DialOptions()...)
	ctx := context.Background()
	if _, err := rpc.Call[resp](ctx, c, "Echo/Echo", &req{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc.Call[resp](ctx, c, "Echo/Echo", &req{Fail: int(rpc.Unauthenticated)}); rpc.CodeOf(err) != rpc.Unauthenticated {
		t.Fatalf("want Unauthenticated, got %v", err)
	}
	if _, err := rpc.Call[resp](ctx, c, "Slow/Ignore", &req{}, rpc.Timeout(20*time.Millisecond)); rpc.CodeOf(err) != rpc.DeadlineExceeded {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	close(release)
	wait.For(t, 5*time.Second, "the late reply to be counted", func() bool { return testutil.ToFloat64(m.lateReplies) == 1 })
	for _, tc := range []struct {
		c    *prometheus.CounterVec
		l    []string
		want float64
	}{
		{m.serverTotal, []string{"Echo/Echo", "OK"}, 1},
		{m.serverTotal, []string{"Echo/Echo", "Unauthenticated"}, 1},
		{m.clientTotal, []string{"Echo/Echo", "OK"}, 1},
		{m.clientTotal, []string{"Echo/Echo", "Unauthenticated"}, 1},
		{m.clientTotal, []string{"Slow/Ignore", "DeadlineExceeded"}, 1},
	} {
		if v := testutil.ToFloat64(tc.c.WithLabelValues(tc.l...)); v != tc.want {
			t.Errorf("%v = %v, want %v", tc.l, v, tc.want)
		}
	}
}

type num struct {
	N int `msgpack:"n"`
}

func TestStream(t *testing.T) {
	m, err := New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s, ln := serve(t, rpc.Config{StreamInterceptors: []rpc.StreamServerInterceptor{m.StreamServerInterceptor()}})
	if err := rpc.HandleStream(s, "S/Two", func(ss *rpc.ServerStream[num, num]) error {
		ss.Send(&num{N: 1})
		ss.Send(&num{N: 2})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	c := dial(t, ln.Addr().String())
	st, err := rpc.NewStream[num, num](context.Background(), c, "S/Two")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := st.Recv(); err != nil {
			break
		}
	}
	wait.For(t, 5*time.Second, "the stream to be counted", func() bool {
		return testutil.ToFloat64(m.serverTotal.WithLabelValues("S/Two", "OK")) == 1
	})
}
