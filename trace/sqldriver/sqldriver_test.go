package sqldriver_test

import (
	"context"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"
	_ "modernc.org/sqlite"

	"github.com/tangram-dev/tangram/trace/sqldriver"
)

// TestStatementsAreSpans: on SQLite and on PostgreSQL, statements run
// under a span are its children (direct, prepared, in a transaction),
// with the SQL and the operation; a failing one is an error span;
// statements outside a trace record nothing.
func TestStatementsAreSpans(t *testing.T) {
	for _, c := range []struct{ name, driver, dsn, system string }{
		{"sqlite", "sqlite", "file:" + t.TempDir() + "/t.db", "sqlite"},
		{"postgres", "pgx", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgresql"},
	} {
		t.Run(c.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			defer tp.Shutdown(context.Background())
			db, err := sqldriver.Open(c.driver, c.dsn, sqldriver.Config{TracerProvider: tp, System: c.system, Namespace: "test"})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			bg := context.Background()
			if _, err := db.ExecContext(bg, "DROP TABLE IF EXISTS sqldriver_orders"); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(bg, "CREATE TABLE sqldriver_orders (id INTEGER PRIMARY KEY, amount INTEGER)"); err != nil {
				t.Fatal(err)
			}
			if n := len(exp.GetSpans()); n != 0 {
				t.Fatalf("%d spans from statements outside a trace", n)
			}
			ctx, root := tp.Tracer("test").Start(bg, "POST /orders")
			if _, err := db.ExecContext(ctx, "INSERT INTO sqldriver_orders (id, amount) VALUES ($1, $2)", 1, 42); err != nil {
				t.Fatal(err)
			}
			var amount int
			if err := db.QueryRowContext(ctx, "SELECT amount FROM sqldriver_orders WHERE id = $1", 1).Scan(&amount); err != nil || amount != 42 {
				t.Fatalf("select: %d, %v", amount, err)
			}
			st, err := db.PrepareContext(ctx, "UPDATE sqldriver_orders SET amount = amount + 1 WHERE id = $1")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.ExecContext(ctx, 1); err != nil {
				t.Fatal(err)
			}
			st.Close()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM sqldriver_orders WHERE id = $1", 1); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, "INSERT INTO no_such_table VALUES (1)"); err == nil {
				t.Fatal("an insert into a missing table worked")
			}
			root.End()
			byOp := map[string]tracetest.SpanStub{}
			for _, s := range exp.GetSpans() {
				if s.SpanKind != oteltrace.SpanKindClient {
					continue
				}
				if s.Parent.SpanID() != root.SpanContext().SpanID() {
					t.Errorf("%s: parent %s, want the request's span", s.Name, s.Parent.SpanID())
				}
				attrs := map[string]string{}
				for _, kv := range s.Attributes {
					attrs[string(kv.Key)] = kv.Value.Emit()
				}
				if attrs["db.system.name"] != c.system || attrs["db.namespace"] != "test" || attrs["db.query.text"] == "" {
					t.Errorf("%s: attributes %v", s.Name, attrs)
				}
				op := attrs["db.operation.name"]
				if s.Status.Code == codes.Error {
					op = "failed " + op
				}
				byOp[op] = s
			}
			for _, op := range []string{"INSERT", "SELECT", "UPDATE", "DELETE", "failed INSERT"} {
				if _, ok := byOp[op]; !ok {
					t.Errorf("no %s span among %v", op, byOp)
				}
			}
			if s := byOp["SELECT"]; s.Name != "SELECT test" {
				t.Errorf("span name %q", s.Name)
			}
		})
	}
}
