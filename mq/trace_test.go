package mq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestProducerAndConsumerSpans: with a TracerProvider the producer records
// a span per send (a child of the caller's) and the consumer one per
// message handled — a child of the producer's span across the broker, and
// linked to it; a failed handling is an error span.
func TestProducerAndConsumerSpans(t *testing.T) {
	e := newEnv(t)
	e.addBroker("b1", nil)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	ctx := ctxT(t, 30*time.Second)
	c, err := mq.NewClient(ctx, mq.Config{Servers: []string{e.h.Srv.RPCAddr()}, Token: servertest.AdminToken, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.CreateTopic(ctx, "orders", 1, false); err != nil {
		t.Fatal(err)
	}
	handled := make(chan string, 4)
	startConsumer(t, c, mq.ConsumerConfig{Group: "billing", MaxRetry: 1}, "orders", nil, func(ctx context.Context, m *mq.Message) error {
		handled <- string(m.Body)
		if string(m.Body) == "bad" && m.Reconsumed == 0 {
			return errors.New("card declined")
		}
		return nil
	})
	p := e.producer(c, mq.ProducerConfig{})
	rctx, root := tp.Tracer("test").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	if _, err := p.Send(rctx, &mq.Message{Topic: "orders", Body: []byte("good")}); err != nil {
		t.Fatal(err)
	}
	root.End()
	if got := wait.Receive(t, 10*time.Second, "the message handled", handled); got != "good" {
		t.Fatalf("handled %q", got)
	}
	if _, err := p.Send(ctx, &mq.Message{Topic: "orders", Body: []byte("bad")}); err != nil {
		t.Fatal(err)
	}
	wait.Receive(t, 10*time.Second, "the bad message handled", handled)
	var spans []tracetest.SpanStub
	wait.For(t, 10*time.Second, "the consumer spans", func() bool {
		spans = exp.GetSpans()
		n := 0
		for _, s := range spans {
			if s.SpanKind == trace.SpanKindConsumer {
				n++
			}
		}
		return n >= 2
	})
	var send, process, failed *tracetest.SpanStub
	for i, s := range spans {
		switch {
		case s.Name == "send orders" && s.Parent.SpanID() == root.SpanContext().SpanID():
			send = &spans[i]
		case s.Name == "process orders" && s.Status.Code == codes.Error:
			failed = &spans[i]
		case s.Name == "process orders" && s.SpanContext.TraceID() == root.SpanContext().TraceID():
			process = &spans[i]
		}
	}
	if send == nil || process == nil || failed == nil {
		t.Fatalf("want a send span under the request, its process span and a failed one; got %v", names(spans))
	}
	if send.SpanKind != trace.SpanKindProducer || process.Parent.SpanID() != send.SpanContext.SpanID() {
		t.Errorf("process span's parent %s, want the send span %s", process.Parent.SpanID(), send.SpanContext.SpanID())
	}
	if len(process.Links) != 1 || process.Links[0].SpanContext.SpanID() != send.SpanContext.SpanID() {
		t.Errorf("process span links %v: want the send span", process.Links)
	}
	attrs := map[string]string{}
	for _, kv := range process.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["messaging.consumer.group.name"] != "billing" || attrs["messaging.destination.name"] != "orders" || attrs["messaging.message.id"] == "" {
		t.Errorf("process attributes %v", attrs)
	}
	if failed.Status.Description != "card declined" {
		t.Errorf("failed span status %v", failed.Status)
	}
}

func names(spans []tracetest.SpanStub) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name+"/"+s.SpanKind.String())
	}
	return out
}
