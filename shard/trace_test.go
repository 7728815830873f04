package shard_test

import (
	"context"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tangram-dev/tangram/shard"
)

// TestStatementSpans: a traced executor on MariaDB records a logical
// statement as a span with a client span per unit under it, each on its
// data source with the rewritten statement — a write to four tables on
// two databases is five spans; a read of one user's orders reaches one.
func TestStatementSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ex, _ := shopWith(t, shard.ExecutorConfig{TracerProvider: tp})
	t.Cleanup(func() { ex.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Users 0 and 1 (both databases), orders 1..4 (every table index).
	if _, err := ex.Exec(ctx, "INSERT INTO t_order (order_id, user_id, amount) VALUES (?, ?, 1), (?, ?, 2), (?, ?, 3), (?, ?, 4)",
		1, 0, 2, 1, 3, 0, 4, 1); err != nil {
		t.Fatal(err)
	}
	cur, err := ex.Cursor(ctx, "SELECT amount FROM t_order WHERE user_id = ? AND order_id = ?", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	cur.Close()

	spans := rec.Ended()
	byID := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID().String()] = s
	}
	attr := func(s sdktrace.ReadOnlySpan, k string) string {
		for _, a := range s.Attributes() {
			if string(a.Key) == k {
				return a.Value.Emit()
			}
		}
		return ""
	}
	units := map[string][]string{} // logical span name → "ds: statement" of its units
	var logical []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if strings.HasPrefix(s.Name(), "shard ") {
			logical = append(logical, s)
			continue
		}
		p := byID[s.Parent().SpanID().String()]
		if p == nil {
			t.Errorf("unit span %s has no logical parent", s.Name())
			continue
		}
		units[p.Name()] = append(units[p.Name()], attr(s, "db.namespace")+": "+attr(s, "db.query.text"))
		if s.Name() != attr(s, "db.operation.name")+" "+attr(s, "db.namespace") {
			t.Errorf("unit span named %q", s.Name())
		}
	}
	if len(logical) != 2 || logical[0].Name() != "shard INSERT" || logical[1].Name() != "shard SELECT" {
		t.Fatalf("logical spans %v", logical)
	}
	if got := attr(logical[0], "shard.units"); got != "4" || len(units["shard INSERT"]) != 4 {
		t.Errorf("the insert: shard.units %s, unit spans %v; want 4 (one per table)", got, units["shard INSERT"])
	}
	seen := map[string]bool{}
	for _, u := range units["shard INSERT"] {
		ds, stmt, _ := strings.Cut(u, ": ")
		seen[ds] = true
		if (ds != "ds_0" && ds != "ds_1") || !strings.HasPrefix(stmt, "INSERT INTO") || !strings.Contains(stmt, "t_order_") {
			t.Errorf("insert unit %q", u)
		}
	}
	if !seen["ds_0"] || !seen["ds_1"] {
		t.Errorf("the insert reached %v, want both databases", seen)
	}
	if got := units["shard SELECT"]; len(got) != 1 || !strings.HasPrefix(got[0], "ds_1: ") || !strings.Contains(got[0], "t_order_2") {
		t.Errorf("the select's units %v, want one on ds_1 reading t_order_2", got)
	}
	if attr(logical[1], "db.query.text") != "SELECT amount FROM t_order WHERE user_id = ? AND order_id = ?" {
		t.Errorf("the logical statement %q", attr(logical[1], "db.query.text"))
	}
}
