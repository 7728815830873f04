package trace

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/span"
	"github.com/tangram-dev/tangram/lock/lease"
)

// Locker returns l — a lock of either backend (lock.Client's server
// locks, lock/redislock's Redis locks, a Redlock) — recording a client
// span for each call: "lock acquire <name>" for Lock (its wait included),
// "lock try <name>", "lock release <name>", "lock extend <name>", each
// with lock.name, an acquisition with its fencing token (lock.fence),
// lock.acquired and lock.wait_ms. A TryLock that finds the lock held is
// no failure (lock.acquired=false); a lost lease is. With a nil tp it
// returns l. (A wrapper rather than an option of the lock clients: the
// OpenTelemetry packages stay out of programs that do not trace.)
func Locker(tp oteltrace.TracerProvider, l lease.Locker, name string) lease.Locker {
	t := span.New(tp, "github.com/tangram-dev/tangram/lock")
	if !t.On() {
		return l
	}
	return &traced{l: l, t: t, attrs: []attribute.KeyValue{attribute.String("lock.name", name)}, name: name}
}

type traced struct {
	l     lease.Locker
	t     span.Tracer
	attrs []attribute.KeyValue
	name  string
}

func (tl *traced) acquire(ctx context.Context, op string, f func(context.Context) (*lease.Lease, error)) (*lease.Lease, error) {
	ctx, s := tl.t.Start(ctx, "lock "+op+" "+tl.name, oteltrace.SpanKindClient, tl.attrs...)
	start := time.Now()
	l, err := f(ctx)
	s.SetAttributes(attribute.Bool("lock.acquired", err == nil), attribute.Int64("lock.wait_ms", time.Since(start).Milliseconds()))
	if l != nil {
		s.SetAttributes(attribute.Int64("lock.fence", int64(l.Fence)))
	}
	failed := err
	if errors.Is(err, lease.ErrNotAcquired) {
		failed = nil // held by another owner: an answer, not a failure
	}
	span.End(s, failed)
	return l, err
}

func (tl *traced) Lock(ctx context.Context) (*lease.Lease, error) {
	return tl.acquire(ctx, "acquire", tl.l.Lock)
}

func (tl *traced) TryLock(ctx context.Context) (*lease.Lease, error) {
	return tl.acquire(ctx, "try", tl.l.TryLock)
}

func (tl *traced) Unlock(ctx context.Context) error {
	ctx, s := tl.t.Start(ctx, "lock release "+tl.name, oteltrace.SpanKindClient, tl.attrs...)
	err := tl.l.Unlock(ctx)
	span.End(s, err)
	return err
}

func (tl *traced) Extend(ctx context.Context) error {
	ctx, s := tl.t.Start(ctx, "lock extend "+tl.name, oteltrace.SpanKindClient, tl.attrs...)
	err := tl.l.Extend(ctx)
	span.End(s, err)
	return err
}
