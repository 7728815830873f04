package shard_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/shardtest"
)

// shop creates two fresh MariaDB databases holding the physical tables
// of the rules below, and an executor over them.
func shop(t *testing.T) (*shard.Executor, map[string]*sql.DB) {
	t.Helper()
	return shopWith(t, shard.ExecutorConfig{MaxParallel: 4})
}

// shopWith is shop with an executor configured by cfg.
func shopWith(t *testing.T, cfg shard.ExecutorConfig) (*shard.Executor, map[string]*sql.DB) {
	t.Helper()
	var ddl []string
	for j := range 4 {
		ddl = append(ddl,
			fmt.Sprintf("CREATE TABLE t_order_%d (order_id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, amount INT NOT NULL)", j),
			fmt.Sprintf("CREATE TABLE t_order_item_%d (item_id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, user_id BIGINT NOT NULL, sku VARCHAR(20) NOT NULL)", j))
	}
	ddl = append(ddl, "CREATE TABLE t_dict (code VARCHAR(10) PRIMARY KEY, name VARCHAR(40) NOT NULL)")
	pools, urls := shardtest.Databases(t, 2, ddl...)
	ex, err := shard.NewExecutor(shopRules(t, urls), map[string]*sql.DB{"ds_0": pools[0], "ds_1": pools[1]}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ex, map[string]*sql.DB{"ds_0": pools[0], "ds_1": pools[1]}
}

// shopRules shards t_order and t_order_item over the two databases at
// urls: by user_id over the databases, by order_id over four tables in
// each.
func shopRules(t *testing.T, urls []string) *shard.Rules {
	t.Helper()
	r, err := shard.ParseRules([]byte(fmt.Sprintf(`dataSources:
  ds_0: %s
  ds_1: %s
defaultDataSource: ds_0
tables:
  t_order:
    actualDataNodes: ds_${0..1}.t_order_${0..3}
    databaseStrategy: {standard: {shardingColumn: user_id, shardingAlgorithmName: db_mod}}
    tableStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: t_mod}}
  t_order_item:
    actualDataNodes: ds_${0..1}.t_order_item_${0..3}
    databaseStrategy: {standard: {shardingColumn: user_id, shardingAlgorithmName: db_mod}}
    tableStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: t_mod}}
bindingTables: ["t_order, t_order_item"]
broadcastTables: [t_dict]
shardingAlgorithms:
  db_mod: {type: MOD, props: {sharding-count: 2}}
  t_mod: {type: MOD, props: {sharding-count: 4}}
`, urls[0], urls[1])))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type order struct{ id, user, amount int64 }

// Rows written through the executor land in the one physical table the
// rules name, and come back whole — by user, by order IDs across both
// databases, joined with the bound table — while writes across shards
// count every shard's rows and a broadcast write reaches every database.
func TestExecutorOnMariaDB(t *testing.T) {
	ex, dbs := shop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var orders []order
	var q strings.Builder
	var args []any
	q.WriteString("INSERT INTO t_order (order_id, user_id, amount) VALUES ")
	for i := range 40 {
		o := order{id: int64(1000 + i*7), user: int64(i % 5), amount: int64(10 + i)}
		orders = append(orders, o)
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?)")
		args = append(args, o.id, o.user, o.amount)
	}
	res, err := ex.Exec(ctx, q.String(), args...)
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsAffected != 40 || res.Units != 8 {
		t.Fatalf("insert of 40 rows: %+v, want 40 rows in 8 units", res)
	}
	// Each row is where the rules say, and only there.
	for _, o := range orders {
		ds, tb := fmt.Sprintf("ds_%d", o.user%2), fmt.Sprintf("t_order_%d", o.id%4)
		for name, db := range dbs {
			for j := range 4 {
				var n int
				if err := db.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM t_order_%d WHERE order_id = ?", j), o.id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				want := 0
				if name == ds && fmt.Sprintf("t_order_%d", j) == tb {
					want = 1
				}
				if n != want {
					t.Fatalf("order %d (user %d) found %d times in %s.t_order_%d, want %d", o.id, o.user, n, name, j, want)
				}
			}
		}
	}

	ids := func(rows *shard.Rows) []int64 {
		var out []int64
		for _, r := range rows.Values {
			out = append(out, r[0].(int64))
		}
		slices.Sort(out)
		return out
	}
	for user := range int64(5) {
		rows, err := ex.Query(ctx, "SELECT order_id, amount FROM t_order WHERE user_id = ?", user)
		if err != nil {
			t.Fatal(err)
		}
		var want []int64
		for _, o := range orders {
			if o.user == user {
				want = append(want, o.id)
			}
		}
		if got := ids(rows); !slices.Equal(got, want) {
			t.Fatalf("orders of user %d: %v, want %v", user, got, want)
		}
	}
	rows, err := ex.Query(ctx, "SELECT order_id FROM t_order WHERE order_id IN (?, ?, ?)", orders[1].id, orders[2].id, int64(99))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(rows); !slices.Equal(got, []int64{orders[1].id, orders[2].id}) {
		t.Fatalf("orders by IDs across databases: %v", got)
	}
	rows, err = ex.Query(ctx, "SELECT order_id FROM t_order")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows.Values) != 40 || rows.Columns[0] != "order_id" {
		t.Fatalf("every order: %d rows, columns %v", len(rows.Values), rows.Columns)
	}

	// A bound table joins within each node pair.
	for _, o := range orders[:6] {
		if _, err := ex.Exec(ctx, "INSERT INTO t_order_item (item_id, order_id, user_id, sku) VALUES (?, ?, ?, ?)", o.id*10, o.id, o.user, fmt.Sprint("sku-", o.id)); err != nil {
			t.Fatal(err)
		}
	}
	rows, err = ex.Query(ctx, "SELECT o.order_id, i.sku FROM t_order o JOIN t_order_item i ON o.order_id = i.order_id WHERE o.user_id = ?", orders[3].user)
	if err != nil {
		t.Fatal(err)
	}
	var joined []string
	for _, r := range rows.Values {
		joined = append(joined, fmt.Sprintf("%d:%s", r[0], r[1]))
	}
	slices.Sort(joined)
	var wantJoin []string
	for _, o := range orders[:6] {
		if o.user == orders[3].user {
			wantJoin = append(wantJoin, fmt.Sprintf("%d:sku-%d", o.id, o.id))
		}
	}
	slices.Sort(wantJoin)
	if !slices.Equal(joined, wantJoin) {
		t.Fatalf("join of bound tables: %v, want %v", joined, wantJoin)
	}

	// A write across shards counts all of them.
	res, err = ex.Exec(ctx, "UPDATE t_order SET amount = amount + 1 WHERE amount >= ?", 30)
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsAffected != 20 {
		t.Fatalf("update across shards: %d rows, want 20", res.RowsAffected)
	}
	// A broadcast write reaches every database; a read takes one.
	if _, err := ex.Exec(ctx, "INSERT INTO t_dict (code, name) VALUES (?, ?)", "cn", "China"); err != nil {
		t.Fatal(err)
	}
	for name, db := range dbs {
		var n string
		if err := db.QueryRowContext(ctx, "SELECT name FROM t_dict WHERE code = 'cn'").Scan(&n); err != nil || n != "China" {
			t.Fatalf("broadcast row in %s: %q %v", name, n, err)
		}
	}

	// A write that fails on one data source says where it did commit.
	if _, err := dbs["ds_1"].Exec("DROP TABLE t_order_3"); err != nil {
		t.Fatal(err)
	}
	_, err = ex.Exec(ctx, "DELETE FROM t_order WHERE order_id = ?", int64(1007))
	if err == nil || !strings.Contains(err.Error(), "ds_1") || !strings.Contains(err.Error(), "did commit on ds_0") {
		t.Fatalf("a delete failing on one data source: %v", err)
	}
}

// The same queries over the sharded tables and over one database holding
// the same rows give the same answers: orders restored across shards,
// LIMIT windows, aggregates and groups combined, DISTINCT, empty sets.
func TestMergeMatchesOneDatabase(t *testing.T) {
	ex, _ := shop(t)
	refs, _ := shardtest.Databases(t, 1)
	ref := refs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ref.Exec("CREATE TABLE t_order (order_id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, amount INT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		args := []any{int64(500 + i*13), int64(i % 7), int64((i * 37) % 50)}
		if _, err := ex.Exec(ctx, "INSERT INTO t_order (order_id, user_id, amount) VALUES (?, ?, ?)", args...); err != nil {
			t.Fatal(err)
		}
		if _, err := ref.Exec("INSERT INTO t_order (order_id, user_id, amount) VALUES (?, ?, ?)", args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		q       string
		args    []any
		ordered bool
	}{
		{"SELECT order_id, amount FROM t_order ORDER BY amount DESC, order_id LIMIT 5", nil, true},
		{"SELECT order_id FROM t_order ORDER BY order_id LIMIT 3, 4", nil, true},
		{"SELECT order_id, amount FROM t_order WHERE user_id = ? ORDER BY order_id DESC LIMIT ?, ?", []any{3, 1, 3}, true},
		{"SELECT order_id FROM t_order ORDER BY 1 DESC LIMIT 100, 5", nil, true},
		{"SELECT COUNT(*), SUM(amount), MIN(amount), MAX(amount) FROM t_order", nil, true},
		{"SELECT COUNT(*), SUM(amount), MAX(order_id) FROM t_order WHERE amount > 1000", nil, true},
		{"SELECT user_id, COUNT(*), SUM(amount), MIN(order_id) FROM t_order GROUP BY user_id ORDER BY user_id", nil, true},
		{"SELECT user_id, SUM(amount) AS total FROM t_order GROUP BY user_id ORDER BY total DESC, user_id LIMIT 2", nil, true},
		{"SELECT DISTINCT user_id FROM t_order ORDER BY user_id", nil, true},
		{"SELECT DISTINCT amount FROM t_order WHERE user_id IN (?, ?) ORDER BY amount LIMIT 4", []any{1, 2}, true},
		{"SELECT * FROM t_order ORDER BY order_id LIMIT 10", nil, true},
		{"SELECT SUM(amount) FROM t_order WHERE user_id IN (1, 3)", nil, true},
		{"SELECT user_id, amount FROM t_order WHERE amount BETWEEN 10 AND 20", nil, false},
		{"SELECT amount, COUNT(*) FROM t_order GROUP BY amount", nil, false},
		{"SELECT order_id FROM t_order ORDER BY amount DESC, order_id LIMIT 7", nil, true},
		{"SELECT order_id FROM t_order ORDER BY amount % 7, order_id LIMIT 2, 5", nil, true},
		{"SELECT * FROM t_order ORDER BY amount * 3 - order_id LIMIT 4", nil, true},
		{"SELECT user_id, AVG(amount) FROM t_order GROUP BY user_id ORDER BY user_id", nil, true},
		{"SELECT AVG(amount), COUNT(*), AVG(order_id) FROM t_order", nil, true},
		{"SELECT AVG(amount) FROM t_order WHERE amount > 1000", nil, true},
		{"SELECT COUNT(*) FROM t_order GROUP BY user_id ORDER BY user_id", nil, true},
		{"SELECT user_id, COUNT(*) FROM t_order GROUP BY user_id ORDER BY SUM(amount) DESC, user_id LIMIT 3", nil, true},
		{"SELECT user_id, MAX(amount) AS top FROM t_order GROUP BY user_id ORDER BY MIN(order_id)", nil, true},
	} {
		got, err := ex.Query(ctx, c.q, c.args...)
		if err != nil {
			t.Errorf("%s: %v", c.q, err)
			continue
		}
		rows, err := ref.QueryContext(ctx, c.q, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		_, want, err := shardtest.Lines(rows)
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for _, r := range got.Values {
			have = append(have, shardtest.Line(r))
		}
		if !c.ordered {
			sort.Strings(want)
			sort.Strings(have)
		}
		if !slices.Equal(have, want) {
			t.Errorf("%s %v:\nsharded %v\n    one %v", c.q, c.args, have, want)
		}
	}
	// A broadcast table is read from one database (its text ordered
	// there).
	if _, err := ex.Query(ctx, "SELECT code FROM t_dict ORDER BY code"); err != nil {
		t.Errorf("a broadcast table reads from one database: %v", err)
	}
}
