package cache_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tangram-dev/tangram/cache"
	"github.com/tangram-dev/tangram/internal/redistest"
)

// TestFillSpans: with a TracerProvider a miss is a "cache fill" span — a
// load under it when the remote tier misses too, a remote hit without one
// — a local hit is no span, and a Delete is one.
func TestFillSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	rdb, ns := redistest.KV(t), redistest.Prefix(t)
	load := func(ctx context.Context, key string) (string, error) {
		if key == "ghost" {
			return "", cache.ErrNotFound
		}
		return "v-" + key, nil
	}
	a := newCache(t, cache.Config[string]{Name: ns, Remote: rdb, Codec: cache.String{}, Load: load, TracerProvider: tp})
	b := newCache(t, cache.Config[string]{Name: ns, Remote: rdb, Codec: cache.String{}, Load: load, TracerProvider: tp})
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	for range 3 { // a load, then two local hits
		if v, err := a.Get(ctx, "k1"); err != nil || v != "v-k1" {
			t.Fatalf("a.Get: %q %v", v, err)
		}
	}
	if v, err := b.Get(ctx, "k1"); err != nil || v != "v-k1" { // from the remote tier
		t.Fatalf("b.Get: %q %v", v, err)
	}
	if _, err := a.Get(ctx, "ghost"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("a.Get(ghost): %v", err)
	}
	if err := a.Delete(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	parent.End()

	attr := func(s sdktrace.ReadOnlySpan, k string) attribute.Value {
		for _, a := range s.Attributes() {
			if string(a.Key) == k {
				return a.Value
			}
		}
		return attribute.Value{}
	}
	var fills, loads, deletes []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "cache fill " + ns:
			fills = append(fills, s)
		case "cache load " + ns:
			loads = append(loads, s)
		case "cache delete " + ns:
			deletes = append(deletes, s)
		}
	}
	// a's own fill may come back to it as an invalidation push before it
	// knows to ignore it (then its next Get fills again, from the remote
	// tier): 3 or 4 fills.
	if len(fills) < 3 || len(fills) > 4 || len(loads) != 2 || len(deletes) != 1 {
		t.Fatalf("%d fills, %d loads, %d deletes; want 3 or 4 (a's k1, b's k1, ghost), 2 (k1 once, ghost), 1", len(fills), len(loads), len(deletes))
	}
	results := map[string]int{}
	for _, f := range fills {
		results[attr(f, "cache.result").AsString()]++
		if f.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("a fill is not under the request")
		}
	}
	if results["loaded"] != 2 || results["remote_hit"] != len(fills)-2 {
		t.Errorf("fill results %v, want 2 loaded (k1, ghost) and the rest remote hits", results)
	}
	notFound := 0
	for _, l := range loads {
		if l.Status().Code == codes.Error {
			t.Errorf("load span %s: status %v (a not-found is an answer)", l.Name(), l.Status())
		}
		if attr(l, "cache.not_found").AsBool() {
			notFound++
		}
	}
	if notFound != 1 {
		t.Errorf("%d loads marked not found, want 1 (ghost)", notFound)
	}
	if attr(deletes[0], "cache.keys").AsInt64() != 1 {
		t.Errorf("delete attributes %v", deletes[0].Attributes())
	}
	// Local hits are no spans: fifty reads of a filled key add at most
	// the fill itself and one after a push.
	before := len(rec.Ended())
	for range 50 {
		if _, err := b.Get(context.Background(), "k2"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(rec.Ended()) - before; n < 1 || n > 4 {
		t.Errorf("50 reads of one key made %d spans, want its fill (and load) only", n)
	}
}
