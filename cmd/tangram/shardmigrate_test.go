package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/shard/ruleconfig"
	"github.com/tangram-dev/tangram/shard/shardtest"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// tangram shard migrate moves t_order from two databases to two new ones
// through the config center while a driver instance that follows the
// namespace keeps writing: start, read-new, a rollback, read-new again,
// finish. No write fails; the rows at the end are the writer's.
func TestShardMigrateCLI(t *testing.T) {
	_, urls := shardtest.Databases(t, 4, "CREATE TABLE t_order (order_id BIGINT PRIMARY KEY, amount BIGINT NOT NULL)")
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	co := config.Coord{Env: "dev", App: "shop", Cluster: config.DefaultCluster, NS: "sharding.yaml"}
	layout := func(a, b int) string {
		return fmt.Sprintf(`dataSources:
  ds_%d: %s
  ds_%d: %s
tables:
  t_order:
    actualDataNodes: ds_%d.t_order, ds_%d.t_order
    databaseStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: by_id}}
shardingAlgorithms:
  by_id: {type: INLINE, props: {algorithm-expression: "ds_${order_id %% 2 + %d}"}}
`, a, urls[a], b, urls[b], a, b, a)
	}
	shardtest.PublishRules(t, h.URL, h.Token, co.App, co.NS, layout(0, 1))
	v2 := filepath.Join(t.TempDir(), "v2.yaml")
	if err := os.WriteFile(v2, []byte(layout(2, 3)), 0o600); err != nil {
		t.Fatal(err)
	}

	// The application: a driver on the namespace, writing.
	c, err := config.NewClient(ctx, config.ClientConfig{Servers: []string{h.URL}, Token: h.Token, Env: "dev", App: "shop",
		Namespaces: []string{co.NS}, CacheDir: t.TempDir(), WatchTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, w, err := ruleconfig.Connector(c, co.NS, sqldriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	var mu sync.Mutex
	want := map[int64]int64{}
	var ops, fails atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for id := int64(0); ; id++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := db.ExecContext(ctx, "INSERT INTO t_order (order_id, amount) VALUES (?, 1)", id)
			if err == nil && id > 0 {
				_, err = db.ExecContext(ctx, "UPDATE t_order SET amount = amount + 1 WHERE order_id = ?", id/2)
			}
			if err != nil {
				fails.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				continue
			}
			mu.Lock()
			want[id] = 1
			if id > 0 {
				want[id/2]++
			}
			mu.Unlock()
			ops.Add(1)
		}
	}()
	progressed := func() {
		from := ops.Load()
		wait.For(t, 30*time.Second, "writes", func() bool { return ops.Load() >= from+50 })
	}
	migrate := func(args ...string) string {
		t.Helper()
		base := []string{"shard", "migrate", "--app", "shop", "--namespace", co.NS, "--settle", "100ms", "--wait", "30s"}
		return run(t, h, append(base, args...)...)
	}
	progressed()
	out := migrate("--step", "start", "--to", v2)
	if !strings.Contains(out, "the layouts agree") {
		t.Fatalf("start:\n%s", out)
	}
	progressed()
	migrate("--step", "read-new")
	progressed()
	migrate("--step", "rollback") // reads from the old layout again
	if got := run(t, h, "shard", "migrate", "--app", "shop", "--namespace", co.NS, "--step", "status", "-o", "json"); !strings.Contains(got, `"phase": "DOUBLE_WRITE"`) {
		t.Fatalf("status after the rollback: %s", got)
	}
	progressed()
	migrate("--step", "read-new")
	progressed()
	migrate("--step", "finish")
	progressed()
	close(stop)
	<-done
	if n := fails.Load(); n > 0 {
		t.Fatalf("%d writes failed during the migration; the first: %v", n, firstErr.Load())
	}
	if got := conn.Executor().Rules().DataSourceNames(); strings.Join(got, ",") != "ds_2,ds_3" || w.Err() != nil {
		t.Fatalf("the application's data sources at the end: %v (%v)", got, w.Err())
	}
	rows, err := db.QueryContext(ctx, "SELECT order_id, amount FROM t_order")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id, amount int64
		if err := rows.Scan(&id, &amount); err != nil {
			t.Fatal(err)
		}
		if want[id] != amount {
			t.Fatalf("order %d: %d, want %d", id, amount, want[id])
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("%d orders in the new layout, %d written", n, len(want))
	}
}
