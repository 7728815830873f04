package sqldriver_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/shardtest"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// open makes two MariaDB databases with t_account_0..1 each, writes
// rules sharding t_account by id over them (database id % 2, table id / 2
// % 2) and opens the sharded *sql.DB from the rules file.
func open(t *testing.T) (*sql.DB, []*sql.DB) {
	t.Helper()
	var ddl []string
	for j := range 2 {
		ddl = append(ddl, fmt.Sprintf("CREATE TABLE t_account_%d (id BIGINT PRIMARY KEY, owner VARCHAR(20) NOT NULL, balance BIGINT NOT NULL, opened DATETIME NOT NULL)", j))
	}
	pools, urls := shardtest.Databases(t, 2, ddl...)
	rules := fmt.Sprintf(`dataSources:
  ds_0: %s
  ds_1: %s
tables:
  t_account:
    actualDataNodes: ds_${0..1}.t_account_${0..1}
    databaseStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_id}}
    tableStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_half}}
shardingAlgorithms:
  by_id: {type: MOD, props: {sharding-count: 2}}
  by_half: {type: INLINE, props: {algorithm-expression: "t_account_${id / 2 %% 2}"}}
`, urls[0], urls[1])
	path := filepath.Join(t.TempDir(), "sharding.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("tangram-shard", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, pools
}

func count(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM t_account").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A *sql.DB over the driver is used like one database: writes spread by
// the rules, reads merged and scanned into Go types, prepared statements,
// transactions that commit or roll back on every database they touched.
func TestDriverOnMariaDB(t *testing.T) {
	db, pools := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opened := time.Date(2026, 12, 6, 8, 30, 0, 0, time.UTC)
	res, err := db.ExecContext(ctx, "INSERT INTO t_account (id, owner, balance, opened) VALUES (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?)",
		0, "ann", 100, opened, 1, "bob", 200, opened, 2, "cy", 300, opened, 3, "di", 400, opened)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 4 {
		t.Fatalf("inserted %d rows, want 4", n)
	}
	// One row in each physical table: id 0 → ds_0.t_account_0, 1 → ds_1.t_account_0,
	// 2 → ds_0.t_account_1, 3 → ds_1.t_account_1.
	for i, p := range pools {
		for j := range 2 {
			var id int64
			if err := p.QueryRow(fmt.Sprintf("SELECT id FROM t_account_%d", j)).Scan(&id); err != nil || id != int64(i+2*j) {
				t.Fatalf("ds_%d.t_account_%d holds %d (%v), want %d", i, j, id, err, i+2*j)
			}
		}
	}
	var owner string
	var balance int64
	var when time.Time
	if err := db.QueryRowContext(ctx, "SELECT owner, balance, opened FROM t_account WHERE id = ?", 3).Scan(&owner, &balance, &when); err != nil {
		t.Fatal(err)
	}
	if owner != "di" || balance != 400 || !when.Equal(opened) {
		t.Fatalf("account 3: %s %d %v", owner, balance, when)
	}
	var total, top int64
	if err := db.QueryRowContext(ctx, "SELECT SUM(balance), MAX(balance) FROM t_account").Scan(&total, &top); err != nil || total != 1000 || top != 400 {
		t.Fatalf("sum and max across shards: %d %d %v", total, top, err)
	}
	rows, err := db.QueryContext(ctx, "SELECT id, balance FROM t_account ORDER BY balance DESC LIMIT 1, 2")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id, b int64
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if fmt.Sprint(ids) != "[2 1]" {
		t.Fatalf("second and third richest: %v, want [2 1]", ids)
	}

	st, err := db.PrepareContext(ctx, "UPDATE t_account SET balance = balance + ? WHERE id = ?")
	if err != nil {
		t.Fatal(err)
	}
	for id := range 4 {
		if _, err := st.ExecContext(ctx, 10, id); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	if err := db.QueryRowContext(ctx, "SELECT SUM(balance) FROM t_account").Scan(&total); err != nil || total != 1040 {
		t.Fatalf("after the prepared updates: %d %v", total, err)
	}

	// A transaction over both databases: rolled back, nothing; committed,
	// both; its own reads see its writes.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO t_account (id, owner, balance, opened) VALUES (?, 'eve', 5, ?), (?, 'fay', 6, ?)", 4, opened, 5, opened); err != nil {
		t.Fatal(err)
	}
	var inside int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account").Scan(&inside); err != nil || inside != 6 {
		t.Fatalf("the transaction's own count: %d %v, want 6", inside, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db); n != 4 {
		t.Fatalf("after a rollback: %d accounts, want 4", n)
	}
	tx, err = db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO t_account (id, owner, balance, opened) VALUES (?, 'eve', 5, ?), (?, 'fay', 6, ?)", 4, opened, 5, opened); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db); n != 6 {
		t.Fatalf("after a commit: %d accounts, want 6", n)
	}

	// AVG across shards is the sums over the counts, with the database's
	// four more decimal places.
	var avg string
	if err := db.QueryRowContext(ctx, "SELECT AVG(balance) FROM t_account").Scan(&avg); err != nil || avg != "175.1667" {
		t.Fatalf("AVG across shards: %q %v, want 175.1667 (1051 / 6)", avg, err)
	}
	// SQL the router cannot answer exactly is an error naming it.
	if _, err := db.QueryContext(ctx, "SELECT COUNT(DISTINCT owner) FROM t_account"); !errors.Is(err, shard.ErrUnsupported) || !strings.Contains(err.Error(), "COUNT(DISTINCT") {
		t.Fatalf("COUNT(DISTINCT) across shards: %v", err)
	}
}

func TestBadRulesFile(t *testing.T) {
	if _, err := sql.Open("tangram-shard", filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing rules file opened")
	}
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("dataSources:\n  ds_0: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sql.Open("tangram-shard", path); !errors.Is(err, shard.ErrRules) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad rules: %v", err)
	}
}

// Orders inserted without their IDs get the seed's IDs, which carry the
// database and table suffix of their node: LastInsertId is the first,
// and each is found again by user and ID.
func TestGeneratedSeedIDsOnMariaDB(t *testing.T) {
	var ddl []string
	for j := range 4 {
		ddl = append(ddl, fmt.Sprintf("CREATE TABLE t_order_%d (order_id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, amount INT NOT NULL)", j))
	}
	_, urls := shardtest.Databases(t, 2, ddl...)
	r, err := shard.ParseRules([]byte(fmt.Sprintf(`dataSources:
  ds_0: %s
  ds_1: %s
tables:
  t_order:
    actualDataNodes: ds_${0..1}.t_order_${0..3}
    databaseStrategy: {standard: {shardingColumn: user_id, shardingAlgorithmName: db_mod}}
    tableStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: by_suffix}}
    keyGenerateStrategy: {column: order_id, keyGeneratorName: ids}
shardingAlgorithms:
  db_mod: {type: MOD, props: {sharding-count: 2}}
  by_suffix: {type: ID_SUFFIX, props: {layout: seed, field: table}}
keyGenerators:
  ids: {type: SEED, props: {machine: 1}}
`, urls[0], urls[1])))
	if err != nil {
		t.Fatal(err)
	}
	c, err := sqldriver.NewConnector(r, sqldriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []int64
	for i := range 10 {
		res, err := db.ExecContext(ctx, "INSERT INTO t_order (user_id, amount) VALUES (?, ?)", i%3, i)
		if err != nil {
			t.Fatal(err)
		}
		id, err := res.LastInsertId()
		if err != nil || id <= 0 {
			t.Fatalf("LastInsertId: %d %v", id, err)
		}
		ids = append(ids, id)
	}
	for i, id := range ids {
		var amount int
		if err := db.QueryRowContext(ctx, "SELECT amount FROM t_order WHERE user_id = ? AND order_id = ?", i%3, id).Scan(&amount); err != nil || amount != i {
			t.Fatalf("order %d of user %d: amount %d %v, want %d", id, i%3, amount, err, i)
		}
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_order").Scan(&n); err != nil || n != 10 {
		t.Fatalf("%d orders, %v", n, err)
	}
}
