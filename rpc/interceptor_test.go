package rpc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestTracingJoinsTraces(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	_, addr := testServer(t, Config{Interceptors: []ServerInterceptor{ServerTracing(tp)}})
	c := dial(t, addr, WithInterceptors(ClientTracing(tp)))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "parent")
	resp, err := Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Text: "t"})
	must(t, err)
	parent.End()
	if !strings.HasPrefix(resp.Meta[MetaTraceParent], "00-"+parent.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent %q not in the parent's trace", resp.Meta[MetaTraceParent])
	}
	_, err = Call[echoResp](ctx, c, "Echo/Echo", &echoReq{Fail: NotFound})
	if CodeOf(err) != NotFound {
		t.Fatal(err)
	}
	spans := rec.Ended()
	kinds := map[trace.SpanKind]int{}
	for _, s := range spans {
		if s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Fatalf("span %s in another trace", s.Name())
		}
		kinds[s.SpanKind()]++
	}
	if kinds[trace.SpanKindClient] != 2 || kinds[trace.SpanKindServer] != 2 {
		t.Fatalf("span kinds %v", kinds)
	}
	var failed int
	for _, s := range spans {
		if s.Status().Code == 1 /* codes.Error */ {
			failed++
		}
	}
	if failed != 2 {
		t.Fatalf("%d error spans, want 2 (client and server)", failed)
	}
}

func TestAuthAndCallerPropagation(t *testing.T) {
	type who struct{}
	auth := ServerAuth(func(ctx context.Context, token string) (context.Context, error) {
		if token != "s3cret" {
			return nil, errors.New("unknown token")
		}
		return context.WithValue(ctx, who{}, "svc-a"), nil
	})
	s, addr := testServer(t, Config{Interceptors: []ServerInterceptor{auth}})
	must(t, Handle(s, "Who/Am", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		in := Incoming(ctx)
		return &echoResp{Text: ctx.Value(who{}).(string) + "|" + in[MetaCaller] + "|" + in[MetaXID]}, nil
	}))
	anon := dial(t, addr)
	if _, err := Call[echoResp](context.Background(), anon, "Who/Am", &echoReq{}); CodeOf(err) != Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	bad := dial(t, addr, WithInterceptors(ClientToken("wrong")))
	if _, err := Call[echoResp](context.Background(), bad, "Who/Am", &echoReq{}); CodeOf(err) != Unauthenticated || !strings.Contains(err.Error(), "unknown token") {
		t.Fatalf("bad token: %v", err)
	}
	good := dial(t, addr, WithInterceptors(ClientToken("s3cret"), ClientCaller("svc-a")))
	// A handler's context carries tangram-xid; ClientCaller forwards it.
	handlerCtx := withIncoming(context.Background(), Metadata{MetaXID: "gx-9"})
	r, err := Call[echoResp](handlerCtx, good, "Who/Am", &echoReq{})
	if err != nil || r.Text != "svc-a|svc-a|gx-9" {
		t.Fatalf("%+v %v", r, err)
	}
	// A oneway call goes through the client interceptors too: its token
	// and caller reach the server, and interceptors see it as oneway.
	got := make(chan string, 1)
	must(t, Handle(s, "Who/Note", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		got <- ctx.Value(who{}).(string) + "|" + Incoming(ctx)[MetaCaller]
		return &echoResp{}, nil
	}))
	var sawOneway bool
	spy := func(ctx context.Context, info *CallInfo, req, resp any, next Invoker) error {
		sawOneway = info.Oneway && resp == nil
		return next(ctx, info, req, resp)
	}
	ow := dial(t, addr, WithInterceptors(spy, ClientToken("s3cret"), ClientCaller("svc-b")))
	if err := ow.Oneway(context.Background(), "Who/Note", &echoReq{}); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "svc-a|svc-b" || !sawOneway {
		t.Fatalf("oneway: handler saw %q, interceptor saw oneway %v", v, sawOneway)
	}
}

func TestStreamTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	s, addr := testServer(t, Config{StreamInterceptors: []StreamServerInterceptor{StreamServerTracing(tp)}})
	must(t, HandleStream(s, "S/Two", func(ss *ServerStream[num, num]) error {
		ss.Send(&num{N: 1})
		ss.Send(&num{N: 2})
		return nil
	}))
	c := dial(t, addr, WithStreamInterceptors(StreamClientTracing(tp)))
	st, err := NewStream[num, num](context.Background(), c, "S/Two")
	must(t, err)
	for {
		if _, err := st.Recv(); err != nil {
			break
		}
	}
	wait.For(t, 5*time.Second, "the condition", func() bool { return len(rec.Ended()) == 2 })
	spans := rec.Ended()
	if spans[0].SpanContext().TraceID() != spans[1].SpanContext().TraceID() {
		t.Fatal("client and server stream spans in different traces")
	}
}
