package ruleconfig_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/shard/ruleconfig"
	"github.com/tangram-dev/tangram/shard/shardtest"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// A driver on rules kept in the config center follows each release: a
// new layout takes effect without a restart, a release that does not
// parse is refused and the rules before it stay.
func TestDriverFollowsReleases(t *testing.T) {
	pools, urls := shardtest.Databases(t, 3, "CREATE TABLE t_user (id BIGINT PRIMARY KEY, name VARCHAR(20) NOT NULL)")
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	co := config.Coord{Env: "dev", App: "shop", Cluster: config.DefaultCluster, NS: "sharding.yaml"}
	release := func(doc string) {
		t.Helper()
		shardtest.PublishRules(t, h.URL, h.Token, co.App, co.NS, doc)
	}
	// v1: users split by id over ds_0 and ds_1.
	release(fmt.Sprintf(`dataSources:
  ds_0: %s
  ds_1: %s
tables:
  t_user:
    actualDataNodes: ds_${0..1}.t_user
    databaseStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: mod}}
shardingAlgorithms:
  mod: {type: MOD, props: {sharding-count: 2}}
`, urls[0], urls[1]))

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
	insert := func(id int) {
		t.Helper()
		if _, err := db.ExecContext(ctx, "INSERT INTO t_user (id, name) VALUES (?, ?)", id, fmt.Sprint("u", id)); err != nil {
			t.Fatal(err)
		}
	}
	where := func(id int) int {
		t.Helper()
		found := -1
		for i, p := range pools {
			var n int
			if err := p.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_user WHERE id = ?", id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				found = i
			}
		}
		return found
	}
	insert(1)
	insert(2)
	if where(1) != 1 || where(2) != 0 {
		t.Fatalf("v1: user 1 in ds_%d, user 2 in ds_%d; want ds_1 and ds_0", where(1), where(2))
	}

	// v2: new users all go to the third database.
	published := time.Now()
	release(fmt.Sprintf(`dataSources:
  ds_2: %s
tables:
  t_user:
    actualDataNodes: ds_2.t_user
`, urls[2]))
	wait.For(t, 10*time.Second, "the v2 rules applied", func() bool { return w.Applied() == 1 })
	t.Logf("v2 applied %v after the publish", time.Since(published).Round(time.Millisecond))
	insert(3)
	if where(3) != 2 {
		t.Fatalf("v2: user 3 in ds_%d, want ds_2", where(3))
	}
	if got := conn.Executor().Rules().DataSourceNames(); strings.Join(got, ",") != "ds_2" {
		t.Fatalf("the connector's data sources after v2: %v", got)
	}

	// A release that does not parse: refused, with its line; v2 stays.
	release("dataSources:\n  ds_2: " + urls[2] + "\ntables:\n  t_user:\n    actualDataNodes: ds_9.t_user\n")
	wait.For(t, 10*time.Second, "the bad release refused", func() bool { return w.Err() != nil })
	if err := w.Err(); !strings.Contains(err.Error(), "line") || !strings.Contains(err.Error(), "kept the rules before") {
		t.Fatalf("the refusal: %v", err)
	}
	insert(4)
	if where(4) != 2 || w.Applied() != 1 {
		t.Fatalf("after the bad release: user 4 in ds_%d, %d applied; want ds_2 and 1", where(4), w.Applied())
	}
}
