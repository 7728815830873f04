package shard_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/shardtest"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// t_order moves from two databases to four new ones while writers
// insert, update (amount = amount + 1: not idempotent) and delete rows
// through the driver: double writes, the copy and its verification, the
// switch of reads, then the new rules alone. No write fails, and the rows
// at the end are exactly the writers' — none lost, none twice, none
// stale.
func TestMigrateUnderWrites(t *testing.T) {
	var ddl []string
	for j := range 2 {
		ddl = append(ddl, fmt.Sprintf("CREATE TABLE t_order_%d (order_id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, amount BIGINT NOT NULL, note VARCHAR(40))", j))
	}
	_, urls := shardtest.Databases(t, 6, ddl...)
	v1 := fmt.Sprintf(`dataSources:
  ds_0: %s
  ds_1: %s
tables:
  t_order:
    actualDataNodes: ds_${0..1}.t_order_${0..1}
    databaseStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: db2}}
    tableStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: t2}}
shardingAlgorithms:
  db2: {type: MOD, props: {sharding-count: 2}}
  t2: {type: INLINE, props: {algorithm-expression: "t_order_${order_id / 2 %% 2}"}}
`, urls[0], urls[1])
	v2 := fmt.Sprintf(`dataSources:
  ds_2: %s
  ds_3: %s
  ds_4: %s
  ds_5: %s
tables:
  t_order:
    actualDataNodes: ds_${2..5}.t_order_${0..1}
    databaseStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: db4}}
    tableStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: t4}}
shardingAlgorithms:
  db4: {type: INLINE, props: {algorithm-expression: "ds_${order_id %% 4 + 2}"}}
  t4: {type: INLINE, props: {algorithm-expression: "t_order_${order_id / 4 %% 2}"}}
`, urls[2], urls[3], urls[4], urls[5])
	migrating := func(phase string) *shard.Rules {
		t.Helper()
		indented := "    " + strings.ReplaceAll(strings.TrimSpace(v2), "\n", "\n    ")
		r, err := shard.ParseRules([]byte(v1 + "migration:\n  phase: " + phase + "\n  to:\n" + indented + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	parse := func(doc string) *shard.Rules {
		r, err := shard.ParseRules([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	conn, err := sqldriver.NewConnector(parse(v1), sqldriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The writers' model: order → amount (absent: deleted).
	type model struct {
		mu   sync.Mutex
		rows map[int64]int64
	}
	m := &model{rows: map[int64]int64{}}
	for id := range int64(1000) {
		if _, err := db.ExecContext(ctx, "INSERT INTO t_order (order_id, user_id, amount, note) VALUES (?, ?, ?, ?)", id, id%17, 100, "seed"); err != nil {
			t.Fatal(err)
		}
		m.rows[id] = 100
	}
	var ops, fails atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			next := int64(100_000 * (w + 1))
			for n := 0; n < 100_000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				// Each writer touches its own orders (and the seed rows
				// id % 4 == w), so the model needs no ordering between
				// writers.
				var err error
				switch op := rng.IntN(10); {
				case op < 4:
					_, err = db.ExecContext(ctx, "INSERT INTO t_order (order_id, user_id, amount, note) VALUES (?, ?, ?, ?)", next, next%17, 1, "new")
					if err == nil {
						m.mu.Lock()
						m.rows[next] = 1
						m.mu.Unlock()
					}
					next++
				case op < 8:
					id := int64(rng.IntN(250)*4 + w)
					_, err = db.ExecContext(ctx, "UPDATE t_order SET amount = amount + 1 WHERE order_id = ?", id)
					if err == nil {
						m.mu.Lock()
						if _, ok := m.rows[id]; ok {
							m.rows[id]++
						}
						m.mu.Unlock()
					}
				default:
					id := int64(rng.IntN(250)*4 + w)
					if rng.IntN(4) == 0 {
						_, err = db.ExecContext(ctx, "DELETE FROM t_order WHERE order_id = ?", id)
						if err == nil {
							m.mu.Lock()
							delete(m.rows, id)
							m.mu.Unlock()
						}
					}
				}
				if err != nil {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				ops.Add(1)
			}
		}()
	}
	progressed := func(what string) {
		t.Helper()
		from := ops.Load()
		wait.For(t, 30*time.Second, what, func() bool { return ops.Load() >= from+200 })
	}
	progressed("writes on the old layout")

	// 1: double writes, reads from the old layout; copy and verify.
	mig := migrating(shard.PhaseDoubleWrite)
	if err := conn.Update(mig); err != nil {
		t.Fatal(err)
	}
	dbs, err := sqldriver.OpenDataSources(mig, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dbs {
		defer d.Close()
	}
	mg, err := shard.NewMigrator(mig, dbs)
	if err != nil {
		t.Fatal(err)
	}
	if got := mg.Tables(); len(got) != 1 || got[0] != "t_order" {
		t.Fatalf("tables moving: %v", got)
	}
	copied, err := mg.Copy(ctx, "t_order")
	if err != nil {
		t.Fatal(err)
	}
	diff, err := mg.Verify(ctx, "t_order", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("copied %d rows; first verify %+v", copied, diff)
	progressed("double writes")
	again, err := mg.Verify(ctx, "t_order", false)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Clean() {
		t.Fatalf("a second verify under double writes found %+v (the first %+v)", again, diff)
	}

	// 2: reads from the new layout; 3: the new rules alone.
	if err := conn.Update(migrating(shard.PhaseReadNew)); err != nil {
		t.Fatal(err)
	}
	progressed("reads from the new layout")
	if err := conn.Update(parse(v2)); err != nil {
		t.Fatal(err)
	}
	progressed("the new layout alone")
	close(stop)
	wg.Wait()
	if n := fails.Load(); n > 0 {
		t.Fatalf("%d of %d writes failed during the migration; the first: %v", n, ops.Load(), firstErr.Load())
	}
	rows, err := db.QueryContext(ctx, "SELECT order_id, amount FROM t_order")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[int64]bool{}
	for rows.Next() {
		var id, amount int64
		if err := rows.Scan(&id, &amount); err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("order %d twice", id)
		}
		seen[id] = true
		if want, ok := m.rows[id]; !ok || want != amount {
			t.Fatalf("order %d: amount %d, want %d (in the model: %v)", id, amount, want, ok)
		}
	}
	if len(seen) != len(m.rows) {
		t.Fatalf("%d orders in the new layout, %d written", len(seen), len(m.rows))
	}
	t.Logf("%d writes, %d orders at the end", ops.Load(), len(seen))
}
