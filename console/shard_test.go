package console_test

import (
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/shard/shardtest"
)

// The sharding pages find the namespaces holding rules, show their
// tables, replicas and migration, hide data source passwords, and say
// when a release does not parse.
func TestConsoleShard(t *testing.T) {
	h := servertest.Start(t)
	publish := func(ns, doc string) { shardtest.PublishRules(t, h.URL, h.Token, "shop", ns, doc) }
	publish("sharding.yaml", `dataSources:
  ds_0: mysql://app:s3cret@10.0.0.1:3306/shop_0
  ds_1: mysql://app:s3cret@10.0.0.2:3306/shop_1
tables:
  t_order:
    actualDataNodes: ds_0.t_order
readwriteSplitting:
  ds_0:
    readDataSources: {ds_0_r: "mysql://app:s3cret@10.0.0.3:3306/shop_0"}
    maxReplicationLag: 2s
migration:
  phase: DOUBLE_WRITE
  to:
    dataSources:
      ds_0: mysql://app:s3cret@10.0.0.1:3306/shop_0
      ds_1: mysql://app:s3cret@10.0.0.2:3306/shop_1
    tables:
      t_order:
        actualDataNodes: ds_${0..1}.t_order_new
        databaseStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: m}}
    shardingAlgorithms:
      m: {type: MOD, props: {sharding-count: 2}}
`)
	publish("other.yaml", "server:\n  port: 80\n")
	_, get := adminSession(t, h)
	list := get("/shard")
	if !strings.Contains(list, `href="/shard/dev/shop/default/sharding.yaml"`) || strings.Contains(list, "other.yaml") || !strings.Contains(list, "DOUBLE_WRITE") {
		t.Fatalf("the sharding list:\n%.3000s", list)
	}
	page := get("/shard/dev/shop/default/sharding.yaml")
	for _, want := range []string{"ds_0.t_order", "ds_0.t_order_new ds_1.t_order_new", "Migration in phase DOUBLE_WRITE", "ds_0_r", "2s", "app:******@10.0.0.1"} {
		if !strings.Contains(page, want) {
			t.Errorf("the rules page lacks %q", want)
		}
	}
	if strings.Contains(page[:strings.Index(page, `id="shard-doc"`)], "s3cret") {
		t.Error("the data source list shows a password")
	}
	// A release that does not parse is named as such.
	publish("sharding.yaml", "dataSources:\n  ds_0: mysql://r@h:1/d\ntables:\n  t: {actualDataNodes: ds_9.t}\n")
	if page := get("/shard/dev/shop/default/sharding.yaml"); !strings.Contains(page, `id="shard-error"`) || !strings.Contains(page, "line 4") {
		t.Fatalf("a bad release:\n%.3000s", page)
	}
}
