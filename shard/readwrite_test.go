package shard_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/shardtest"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// Reads outside a transaction go to the replica while it keeps up;
// writes, transactions and locking reads go to the primary; a replica
// that falls behind maxReplicationLag, or stops replicating, is skipped
// — a read right after a write then still finds the row.
func TestReadWriteSplitting(t *testing.T) {
	rep := shardtest.Replicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := rep.Primary.ExecContext(ctx, "CREATE TABLE t_user (id BIGINT PRIMARY KEY, name VARCHAR(20) NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	r, err := shard.ParseRules([]byte(fmt.Sprintf(`dataSources:
  ds_0: %s
tables:
  t_user:
    actualDataNodes: ds_0.t_user
readwriteSplitting:
  ds_0:
    readDataSources:
      ds_0_replica: %s
    maxReplicationLag: 1s
`, rep.PrimaryURL, rep.ReplicaURL)))
	if err != nil {
		t.Fatal(err)
	}
	dbs, err := sqldriver.OpenDataSources(r, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range dbs {
		defer db.Close()
	}
	ex, err := shard.NewExecutor(r, dbs, shard.ExecutorConfig{LagCheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	name := func(q string, id int) (string, error) {
		rows, err := ex.Query(ctx, q, id)
		if err != nil {
			return "", err
		}
		if len(rows.Values) == 0 {
			return "", sql.ErrNoRows
		}
		return fmt.Sprintf("%s", rows.Values[0][0]), nil
	}
	if _, err := ex.Exec(ctx, "INSERT INTO t_user (id, name) VALUES (?, ?)", 1, "ann"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the replica to be read from", func() bool {
		st := ex.Replicas()
		return len(st) == 1 && st[0].Usable
	})
	// A row only the replica has shows which database a read went to.
	wait.For(t, 30*time.Second, "row 1 on the replica", func() bool {
		var n int
		return rep.Replica.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_user WHERE id = 1").Scan(&n) == nil && n == 1
	})
	if _, err := rep.Replica.ExecContext(ctx, "INSERT INTO t_user (id, name) VALUES (100, 'replica-only')"); err != nil {
		t.Fatal(err)
	}
	if got, err := name("SELECT name FROM t_user WHERE id = ?", 100); err != nil || got != "replica-only" {
		t.Fatalf("a plain read: %q %v, want the replica's row", got, err)
	}
	if _, err := name("SELECT name FROM t_user WHERE id = ? FOR UPDATE", 100); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("a locking read: %v, want the primary (no such row)", err)
	}
	tx, err := ex.Begin(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, "SELECT name FROM t_user WHERE id = ?", 100)
	if err != nil || len(rows.Values) != 0 {
		t.Fatalf("a read in a transaction: %v %v, want the primary (no such row)", rows, err)
	}
	tx.Rollback()

	// The replica falls behind (applying events an hour late): skipped.
	for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 3600", "START SLAVE"} {
		if _, err := rep.Replica.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := ex.Exec(ctx, "INSERT INTO t_user (id, name) VALUES (?, ?)", 2, "bob"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the lagging replica to be skipped", func() bool {
		st := ex.Replicas()
		return !st[0].Usable && strings.Contains(st[0].Reason, "behind its primary")
	})
	if got, err := name("SELECT name FROM t_user WHERE id = ?", 2); err != nil || got != "bob" {
		t.Fatalf("a read after the write, replica lagging: %q %v, want bob from the primary", got, err)
	}

	// Replication stopped: skipped too.
	for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"} {
		if _, err := rep.Replica.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	wait.For(t, 30*time.Second, "the replica to catch up", func() bool { return ex.Replicas()[0].Usable })
	if _, err := rep.Replica.ExecContext(ctx, "STOP SLAVE SQL_THREAD"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the stopped replica to be skipped", func() bool {
		st := ex.Replicas()
		return !st[0].Usable && strings.Contains(st[0].Reason, "not replicating")
	})
	if _, err := name("SELECT name FROM t_user WHERE id = ?", 100); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("a read with the replica stopped: %v, want the primary (no such row)", err)
	}
}
