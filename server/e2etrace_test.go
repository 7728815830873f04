package server_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/sqldriver"
)

type placeReq struct{ Order string }
type placeReply struct{ Queued string }

// TestOneRequestOneTrace: one HTTP request through three services — a
// gateway (HTTP → RPC), orders (RPC → a message) and billing (the message
// → SQL), each with its own SDK exporting over OTLP to the server's
// collector — is one trace with every span where it belongs, and the
// dependency map has gateway → orders → billing.
func TestOneRequestOneTrace(t *testing.T) {
	h := servertest.Start(t)
	ep := "http://" + h.Srv.OTLPAddr() + "/v1/traces"
	provider := func(svc string) *trace.Provider {
		p, err := trace.New(trace.Config{Service: svc, Endpoint: ep, BatchTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	gw, orders, billing := provider("gateway"), provider("orders"), provider("billing")
	ctx := context.Background()

	// billing: consumes "orders", writes a row.
	db, err := sqldriver.Open("sqlite", "file:"+t.TempDir()+"/billing.db", sqldriver.Config{TracerProvider: billing.TracerProvider(), System: "sqlite", Namespace: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE invoices (order_id TEXT)"); err != nil {
		t.Fatal(err)
	}
	bc, err := mq.NewClient(ctx, mq.Config{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, TracerProvider: billing.TracerProvider()})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	if err := bc.CreateTopic(ctx, "orders", 1, false); err != nil {
		t.Fatal(err)
	}
	billed := make(chan string, 1)
	cs, err := bc.NewConsumer(mq.ConsumerConfig{Group: "billing", LongPoll: time.Second, Heartbeat: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Subscribe("orders", nil, func(ctx context.Context, m *mq.Message) error {
		_, err := db.ExecContext(ctx, "INSERT INTO invoices (order_id) VALUES (?)", string(m.Body))
		billed <- string(m.Body)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	// orders: an RPC service that queues the order.
	oc, err := mq.NewClient(ctx, mq.Config{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken, TracerProvider: orders.TracerProvider()})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	prod, err := oc.NewProducer(mq.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	srv, err := rpc.NewServer(rpc.Config{Interceptors: []rpc.ServerInterceptor{rpc.ServerTracing(orders.TracerProvider())}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rpc.Handle(srv, "Orders/Place", func(ctx context.Context, r *placeReq) (*placeReply, error) {
		res, err := prod.Send(ctx, &mq.Message{Topic: "orders", Body: []byte(r.Order)})
		if err != nil {
			return nil, err
		}
		return &placeReply{Queued: res.MsgID}, nil
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	// gateway: HTTP in, RPC out.
	rc, err := rpc.Dial(ctx, ln.Addr().String(), rpc.WithInterceptors(rpc.ClientTracing(gw.TracerProvider())))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /checkout/{order}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := rpc.Call[placeReply](r.Context(), rc, "Orders/Place", &placeReq{Order: r.PathValue("order")}); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	web := httptest.NewServer(trace.HTTPHandler(gw.TracerProvider(), mux, nil))
	defer web.Close()

	resp, err := http.Post(web.URL+"/checkout/o-17", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("checkout: %d", resp.StatusCode)
	}
	if got := wait.Receive(t, 15*time.Second, "the order billed", billed); got != "o-17" {
		t.Fatalf("billed %q", got)
	}
	for _, p := range []*trace.Provider{gw, orders, billing} {
		if err := p.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Find the request's trace, then check every span's place in it.
	admin := trace.NewAdmin(h.URL, h.Token)
	var tr trace.TraceReply
	wait.For(t, 15*time.Second, "the whole trace", func() bool {
		found, err := admin.Search(ctx, trace.Query{Service: "gateway", Operation: "POST /checkout/{order}"})
		if err != nil || len(found.Traces) != 1 {
			return false
		}
		tr, err = admin.Trace(ctx, found.Traces[0].TraceID)
		return err == nil && len(tr.Spans) >= 6 // http, rpc client and server, send, process, insert
	})
	by := map[string]trace.Span{}
	for _, s := range tr.Spans {
		by[s.Service+" "+s.Kind+" "+s.Name] = s
	}
	httpSpan := by["gateway server POST /checkout/{order}"]
	rpcClient := by["gateway client Orders/Place"]
	rpcServer := by["orders server Orders/Place"]
	send := by["orders producer send orders"]
	process := by["billing consumer process orders"]
	insert := by["billing client INSERT billing"]
	chain := []struct {
		name          string
		child, parent trace.Span
	}{{"rpc client ← http", rpcClient, httpSpan}, {"rpc server ← rpc client", rpcServer, rpcClient}, {"send ← rpc server", send, rpcServer},
		{"process ← send", process, send}, {"insert ← process", insert, process}}
	for _, c := range chain {
		if c.child.SpanID == "" || c.parent.SpanID == "" || c.child.ParentID != c.parent.SpanID {
			t.Errorf("%s: child %q parent %q", c.name, c.child.ParentID, c.parent.SpanID)
		}
	}
	if len(process.Links) != 1 || process.Links[0].SpanID != send.SpanID {
		t.Errorf("the consumer's span links to %+v, want the producer's span %s", process.Links, send.SpanID)
	}
	if t.Failed() {
		for _, s := range tr.Spans {
			t.Logf("%s %s %s %s ← %s", s.Service, s.Kind, s.Name, s.SpanID, s.ParentID)
		}
	}
	deps, err := admin.Dependencies(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	edges := map[string]bool{}
	for _, e := range deps.Edges {
		edges[e.From+"→"+e.To] = true
	}
	if !edges["gateway→orders"] || !edges["orders→billing"] {
		t.Errorf("dependency map %v: want gateway→orders and orders→billing", edges)
	}
}
