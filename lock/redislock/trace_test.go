package redislock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tangram-dev/tangram/internal/redistest"
	"github.com/tangram-dev/tangram/lock/lease"
	"github.com/tangram-dev/tangram/lock/redislock"
	"github.com/tangram-dev/tangram/trace"
)

// TestLockSpans: through trace.Locker every lock call is a client span —
// the acquisition with its fencing token, a TryLock that finds the lock
// held (an answer, not an error), the release — under the caller's span.
func TestLockSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	rdb, prefix := redistest.KV(t), redistest.Prefix(t)
	c := redislock.New(rdb, redislock.Options{Prefix: prefix, TTL: 5 * time.Second})
	t.Cleanup(func() { c.Close() })
	other := redislock.New(rdb, redislock.Options{Prefix: prefix, TTL: 5 * time.Second})
	t.Cleanup(func() { other.Close() })

	ctx, parent := tp.Tracer("test").Start(context.Background(), "handle order")
	m := trace.Locker(tp, c.Mutex("orders/42"), "orders/42")
	l, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trace.Locker(tp, other.Mutex("orders/42"), "orders/42").TryLock(ctx); !errors.Is(err, lease.ErrNotAcquired) {
		t.Fatalf("TryLock of a held lock: %v", err)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	parent.End()

	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = s
	}
	attr := func(s sdktrace.ReadOnlySpan, k string) attribute.Value {
		for _, a := range s.Attributes() {
			if string(a.Key) == k {
				return a.Value
			}
		}
		return attribute.Value{}
	}
	acq, try, rel := byName["lock acquire orders/42"], byName["lock try orders/42"], byName["lock release orders/42"]
	if acq == nil || try == nil || rel == nil {
		t.Fatalf("spans %v", byName)
	}
	for _, s := range []sdktrace.ReadOnlySpan{acq, try, rel} {
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || attr(s, "lock.name").AsString() != "orders/42" {
			t.Errorf("%s: parent %s, attributes %v", s.Name(), s.Parent().SpanID(), s.Attributes())
		}
	}
	if attr(acq, "lock.fence").AsInt64() != int64(l.Fence) || !attr(acq, "lock.acquired").AsBool() || acq.Status().Code == codes.Error {
		t.Errorf("acquire: %v %v", acq.Attributes(), acq.Status())
	}
	if attr(try, "lock.acquired").AsBool() || try.Status().Code == codes.Error {
		t.Errorf("a TryLock of a held lock: %v %v (want acquired=false, no error)", try.Attributes(), try.Status())
	}
	// A release of a lock no longer held is an error span.
	if err := m.Unlock(ctx); err == nil {
		t.Fatal("a second unlock succeeded")
	}
	var failed sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "lock release orders/42" && s.Status().Code == codes.Error {
			failed = s
		}
	}
	if failed == nil {
		t.Error("the failed release has no error span")
	}
}
