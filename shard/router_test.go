package shard

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/idgen"
)

func TestRouter(t *testing.T) {
	r, err := ParseRules([]byte(shopRules))
	if err != nil {
		t.Fatal(err)
	}
	rt := NewRouter(r)
	show := func(rd *Routed) string {
		var s []string
		for _, u := range rd.Units {
			s = append(s, fmt.Sprintf("%s: %s %v", u.DataSource, u.SQL, u.Args))
		}
		return strings.Join(s, "\n")
	}
	for _, c := range []struct {
		q    string
		args []any
		want string
	}{
		{"SELECT * FROM t_order WHERE user_id = ? AND order_id = ?", []any{3, 6},
			"ds_1: SELECT * FROM `t_order_2` WHERE `user_id`=? AND `order_id`=? [3 6]"},
		{"select id from t_order where order_id in (1, 5)", nil,
			"ds_0: SELECT `id` FROM `t_order_1` WHERE `order_id` IN (1,5) []\nds_1: SELECT `id` FROM `t_order_1` WHERE `order_id` IN (1,5) []"},
		{"SELECT COUNT(*) FROM t_order WHERE user_id = 4 AND order_id = 2", nil,
			"ds_0: SELECT COUNT(1) FROM `t_order_2` WHERE `user_id`=4 AND `order_id`=2 []"},
		{"SELECT * FROM t_order WHERE user_id = 4 AND order_id = 2 ORDER BY id LIMIT 10", nil,
			"ds_0: SELECT * FROM `t_order_2` WHERE `user_id`=4 AND `order_id`=2 ORDER BY `id` LIMIT 10 []"},
		{"SELECT * FROM t_order WHERE (user_id = 7 AND order_id = 2) AND order_id BETWEEN 0 AND 3", nil,
			"ds_1: SELECT * FROM `t_order_2` WHERE (`user_id`=7 AND `order_id`=2) AND `order_id` BETWEEN 0 AND 3 []"},
		{"SELECT * FROM t_order o JOIN t_order_item i ON o.order_id = i.order_id WHERE o.user_id = ? AND o.order_id = ?", []any{3, 6},
			"ds_1: SELECT * FROM `t_order_2` AS `o` JOIN `t_order_item_2` AS `i` ON `o`.`order_id`=`i`.`order_id` WHERE `o`.`user_id`=? AND `o`.`order_id`=? [3 6]"},
		{"SELECT * FROM t_order JOIN t_dict USING (code) WHERE user_id = 2 AND order_id = 3", nil,
			"ds_0: SELECT * FROM `t_order_3` JOIN `t_dict` USING (`code`) WHERE `user_id`=2 AND `order_id`=3 []"},
		{"INSERT INTO t_order (user_id, order_id, amount) VALUES (?, ?, ?), (1, 2, ?), (?, ?, 30)", []any{4, 1, 10, 20, 6, 2},
			"ds_0: INSERT INTO `t_order_1` (`user_id`,`order_id`,`amount`) VALUES (?,?,?) [4 1 10]\n" +
				"ds_1: INSERT INTO `t_order_2` (`user_id`,`order_id`,`amount`) VALUES (1,2,?) [20]\n" +
				"ds_0: INSERT INTO `t_order_2` (`user_id`,`order_id`,`amount`) VALUES (?,?,30) [6 2]"},
		{"INSERT INTO t_order (user_id, order_id, amount) VALUES (?, ?, ?), (?, ?, ?)", []any{1, 1, 10, 3, 5, 20},
			"ds_1: INSERT INTO `t_order_1` (`user_id`,`order_id`,`amount`) VALUES (?,?,?),(?,?,?) [1 1 10 3 5 20]"},
		{"UPDATE t_order SET amount = amount + ? WHERE order_id = ?", []any{5, 7},
			"ds_0: UPDATE `t_order_3` SET `amount`=`amount`+? WHERE `order_id`=? [5 7]\nds_1: UPDATE `t_order_3` SET `amount`=`amount`+? WHERE `order_id`=? [5 7]"},
		{"DELETE FROM t_order WHERE user_id = '5' AND order_id = 0", nil,
			"ds_1: DELETE FROM `t_order_0` WHERE `user_id`='5' AND `order_id`=0 []"},
		{"INSERT INTO t_dict (code, name) VALUES ('a', 'A')", nil,
			"ds_0: INSERT INTO `t_dict` (`code`,`name`) VALUES ('a','A') []\nds_1: INSERT INTO `t_dict` (`code`,`name`) VALUES ('a','A') []"},
		{"SELECT name FROM t_dict WHERE code = 'a'", nil, "ds_0: SELECT `name` FROM `t_dict` WHERE `code`='a' []"},
		{"SELECT * FROM t_users WHERE id = ?", []any{1}, "ds_0: SELECT * FROM `t_users` WHERE `id`=? [1]"},
		// Over several nodes, each unit reads the rows up to the window's
		// end; the LIMIT's markers leave with it. Each ORDER BY and GROUP
		// BY item comes with its collation weight (text is ordered and
		// grouped by it; NULL for numbers).
		{"SELECT order_id FROM t_order WHERE user_id = ? ORDER BY order_id DESC LIMIT ?, ?", []any{2, 3, 4},
			"ds_0: SELECT `order_id`,WEIGHT_STRING(`order_id`) AS `__tg_0` FROM `t_order_0` WHERE `user_id`=? ORDER BY `order_id` DESC LIMIT 7 [2]\n" +
				"ds_0: SELECT `order_id`,WEIGHT_STRING(`order_id`) AS `__tg_0` FROM `t_order_1` WHERE `user_id`=? ORDER BY `order_id` DESC LIMIT 7 [2]\n" +
				"ds_0: SELECT `order_id`,WEIGHT_STRING(`order_id`) AS `__tg_0` FROM `t_order_2` WHERE `user_id`=? ORDER BY `order_id` DESC LIMIT 7 [2]\n" +
				"ds_0: SELECT `order_id`,WEIGHT_STRING(`order_id`) AS `__tg_0` FROM `t_order_3` WHERE `user_id`=? ORDER BY `order_id` DESC LIMIT 7 [2]"},
		// ORDER BY items not selected, and AVG's sum and count, are
		// selected as hidden fields.
		{"SELECT id FROM t_order WHERE order_id = 1 ORDER BY amount * 2 DESC", nil,
			"ds_0: SELECT `id`,`amount`*2 AS `__tg_0` FROM `t_order_1` WHERE `order_id`=1 ORDER BY `amount`*2 DESC []\n" +
				"ds_1: SELECT `id`,`amount`*2 AS `__tg_0` FROM `t_order_1` WHERE `order_id`=1 ORDER BY `amount`*2 DESC []"},
		{"SELECT AVG(amount) AS a FROM t_order WHERE order_id = 1", nil,
			"ds_0: SELECT AVG(`amount`) AS `a`,SUM(`amount`) AS `__tg_0`,COUNT(`amount`) AS `__tg_1` FROM `t_order_1` WHERE `order_id`=1 []\n" +
				"ds_1: SELECT AVG(`amount`) AS `a`,SUM(`amount`) AS `__tg_0`,COUNT(`amount`) AS `__tg_1` FROM `t_order_1` WHERE `order_id`=1 []"},
		// Groups merge before the limit: the units run without it.
		{"SELECT user_id, COUNT(*) AS n FROM t_order WHERE order_id IN (1, 2) GROUP BY user_id ORDER BY n LIMIT 1", nil,
			"ds_0: SELECT `user_id`,COUNT(1) AS `n`,WEIGHT_STRING(`user_id`) AS `__tg_0` FROM `t_order_1` WHERE `order_id` IN (1,2) GROUP BY `user_id` ORDER BY `n` []\n" +
				"ds_0: SELECT `user_id`,COUNT(1) AS `n`,WEIGHT_STRING(`user_id`) AS `__tg_0` FROM `t_order_2` WHERE `order_id` IN (1,2) GROUP BY `user_id` ORDER BY `n` []\n" +
				"ds_1: SELECT `user_id`,COUNT(1) AS `n`,WEIGHT_STRING(`user_id`) AS `__tg_0` FROM `t_order_1` WHERE `order_id` IN (1,2) GROUP BY `user_id` ORDER BY `n` []\n" +
				"ds_1: SELECT `user_id`,COUNT(1) AS `n`,WEIGHT_STRING(`user_id`) AS `__tg_0` FROM `t_order_2` WHERE `order_id` IN (1,2) GROUP BY `user_id` ORDER BY `n` []"},
	} {
		rd, err := rt.Route(c.q, c.args)
		if err != nil {
			t.Errorf("%s: %v", c.q, err)
			continue
		}
		if got := show(rd); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.q, got, c.want)
		}
	}
	// A prepared SELECT is described by its first node with LIMIT 0 and
	// NULL arguments (the LIMIT's markers leave with it).
	for _, c := range []struct{ q, want string }{
		{"SELECT order_id, COUNT(*) FROM t_order WHERE user_id = ? GROUP BY order_id ORDER BY order_id LIMIT ?, ?",
			"ds_0: SELECT `order_id`,COUNT(1) FROM `t_order_0` WHERE `user_id`=? GROUP BY `order_id` ORDER BY `order_id` LIMIT 0 [<nil>]"},
		{"SELECT 1 + ?", "ds_0: SELECT 1+? LIMIT 0 [<nil>]"},
	} {
		rd, err := rt.Describe(c.q)
		if err != nil {
			t.Fatalf("describe %s: %v", c.q, err)
		}
		if got := show(rd); got != c.want {
			t.Errorf("describe %s:\n got %s\nwant %s", c.q, got, c.want)
		}
	}
	for _, c := range []struct {
		q    string
		args []any
		want string
	}{
		{"SELECT DISTINCT id FROM t_order ORDER BY amount", nil, "DISTINCT with ORDER BY items not selected"},
		{"SELECT user_id, COUNT(*) FROM t_order GROUP BY user_id ORDER BY amount", nil, "neither grouped nor aggregated"},
		{"SELECT user_id, COUNT(*) FROM t_order GROUP BY user_id ORDER BY AVG(amount)", nil, "ORDER BY AVG"},
		{"SELECT id, * FROM t_order", nil, "SELECT * beside other fields"},
		{"SELECT COUNT(DISTINCT user_id) FROM t_order", nil, "COUNT(DISTINCT …) across shards"},
		{"SELECT user_id, COUNT(*) FROM t_order GROUP BY user_id HAVING COUNT(*) > 1", nil, "HAVING across shards"},
		{"SELECT user_id, COUNT(*) FROM t_order", nil, "plain fields beside aggregates"},
		{"SELECT * FROM t_order GROUP BY user_id", nil, "SELECT * with GROUP BY"},
		{"SELECT user_id, amount, COUNT(*) FROM t_order GROUP BY user_id", nil, "neither grouped nor aggregated"},
		{"SELECT COUNT(*) + 1 FROM t_order", nil, "an expression over an aggregate"},
		{"DELETE FROM t_order WHERE order_id = 1 LIMIT 1", nil, "DELETE … LIMIT across shards"},
		{"UPDATE t_order SET user_id = 1 WHERE order_id = 2", nil, "UPDATE of user_id, a sharding column"},
		{"SELECT * FROM t_order JOIN t_log ON t_order.id = t_log.id", nil, "not bound"},
		{"SELECT * FROM t_order JOIN t_users ON t_order.user_id = t_users.id", nil, "neither bound to it nor a broadcast table"},
		{"SELECT * FROM t_order WHERE order_id IN (SELECT order_id FROM t_order_item)", nil, "a subquery"},
		{"SELECT * FROM t_order UNION SELECT * FROM t_order_item", nil, "UNION"},
		{"INSERT INTO t_order (order_id, amount) VALUES (1, 2)", nil, "must give user_id"},
		{"INSERT INTO t_order VALUES (1, 2, 3)", nil, "without a column list"},
		{"INSERT INTO t_order (user_id, order_id) VALUES (1 + 1, 2)", nil, "an expression for its sharding column"},
		{"INSERT INTO t_order (user_id, order_id) SELECT user_id, order_id FROM t_order_item", nil, "INSERT … SELECT"},
		{"SELECT * FROM t_order WHERE order_id > 3", nil, "allow-range-query-with-inline-sharding"},
	} {
		_, err := rt.Route(c.q, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.q, err, c.want)
		}
	}
	if _, err := rt.Route("SELECT * FROM t_order WHERE user_id = ?", nil); err == nil || !strings.Contains(err.Error(), "1 markers and 0 arguments") {
		t.Errorf("missing arguments: %v", err)
	}
	if _, err := rt.Route("SELEC * FROM t_order", nil); err == nil || errors.Is(err, ErrUnsupported) {
		t.Errorf("a syntax error: %v", err)
	}
	if _, err := rt.Route("SELECT 1; SELECT 2", nil); err == nil {
		t.Error("two statements in one text routed")
	}
}

const seedRules = `
dataSources:
  ds_0: mysql://root@127.0.0.1:3306/shop_0
  ds_1: mysql://root@127.0.0.1:3306/shop_1
tables:
  t_order:
    actualDataNodes: ds_${0..1}.t_order_${0..3}
    databaseStrategy: {standard: {shardingColumn: user_id, shardingAlgorithmName: db_mod}}
    tableStrategy: {standard: {shardingColumn: order_id, shardingAlgorithmName: by_table_suffix}}
    keyGenerateStrategy: {column: order_id, keyGeneratorName: seed_ids}
  t_event:
    actualDataNodes: ds_0.t_event_${0..3}
    tableStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: t_mod}}
    keyGenerateStrategy: {column: id, keyGeneratorName: flakes}
shardingAlgorithms:
  db_mod: {type: MOD, props: {sharding-count: 2}}
  t_mod: {type: MOD, props: {sharding-count: 4}}
  by_table_suffix: {type: ID_SUFFIX, props: {layout: seed, field: table}}
keyGenerators:
  seed_ids: {type: SEED, props: {machine: 5, type: 2}}
  flakes: {type: SNOWFLAKE, props: {worker-id: 7}}
`

// An INSERT that leaves the key out gets one per row: the seed's IDs
// carry the database and table suffix of the node the row went to, so a
// query by the ID finds that node; snowflake IDs route like given ones.
func TestGeneratedKeys(t *testing.T) {
	r, err := ParseRules([]byte(seedRules))
	if err != nil {
		t.Fatal(err)
	}
	rt := NewRouter(r)
	rd, err := rt.Route("INSERT INTO t_order (user_id, amount) VALUES (?, 10), (4, ?), (3, 30)", []any{3, 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.Keys) != 3 {
		t.Fatalf("keys %v, want 3", rd.Keys)
	}
	seed := idgen.Seed()
	users := []int64{3, 4, 3}
	for i, k := range rd.Keys {
		db, _ := seed.Field(k, "db")
		tb, _ := seed.Field(k, "table")
		mach, _ := seed.Field(k, "machine")
		typ, _ := seed.Field(k, "type")
		if db != users[i]%2 || mach != 5 || typ != 2 {
			t.Fatalf("row %d key %d: db %d machine %d type %d; want db %d, machine 5, type 2", i, k, db, mach, typ, users[i]%2)
		}
		// The key's own suffixes name the node the row was written to.
		want := fmt.Sprintf("ds_%d: INSERT INTO `t_order_%d`", db, tb)
		found := false
		for _, u := range rd.Units {
			if strings.HasPrefix(fmt.Sprintf("%s: %s", u.DataSource, u.SQL), want) && strings.Contains(u.SQL, fmt.Sprint(k)) {
				found = true
			}
		}
		if !found {
			t.Fatalf("row %d key %d: no unit %q holding it in %+v", i, k, want, rd.Units)
		}
		q, err := rt.Route("SELECT * FROM t_order WHERE user_id = ? AND order_id = ?", []any{users[i], k})
		if err != nil || len(q.Units) != 1 || !strings.Contains(q.Units[0].SQL, fmt.Sprintf("t_order_%d`", tb)) || q.Units[0].DataSource != fmt.Sprintf("ds_%d", db) {
			t.Fatalf("query by key %d: %+v %v", k, q, err)
		}
	}
	// The rows of one user spread over its database's tables, in turn.
	t0, _ := seed.Field(rd.Keys[0], "table")
	t2, _ := seed.Field(rd.Keys[2], "table")
	if t0 == t2 {
		t.Errorf("two rows of user 3 both in table %d: the tables are taken in turn", t0)
	}
	if !strings.Contains(rd.Units[0].SQL, "(`user_id`,`amount`,`order_id`) VALUES (?,10,") {
		t.Errorf("the key column is added after the given ones: %s", rd.Units[0].SQL)
	}

	rd, err = rt.Route("INSERT INTO t_event (name) VALUES ('a'), ('b')", nil)
	if err != nil || len(rd.Keys) != 2 || rd.Keys[0] == rd.Keys[1] {
		t.Fatalf("snowflake keys: %+v %v", rd, err)
	}
	for _, u := range rd.Units {
		for _, k := range rd.Keys {
			if strings.Contains(u.SQL, fmt.Sprint(k)) && !strings.Contains(u.SQL, fmt.Sprintf("t_event_%d`", k%4)) {
				t.Fatalf("key %d not routed by MOD: %s", k, u.SQL)
			}
		}
	}
	// A key given is used as it is.
	rd, err = rt.Route("INSERT INTO t_event (id, name) VALUES (6, 'c')", nil)
	if err != nil || rd.Keys != nil || !strings.Contains(rd.Units[0].SQL, "t_event_2") {
		t.Fatalf("a given key: %+v %v", rd, err)
	}

	bad := strings.Replace(seedRules, "shardingAlgorithmName: by_table_suffix", "shardingAlgorithmName: t_mod", 1)
	if _, err := ParseRules([]byte(bad)); err == nil || !strings.Contains(err.Error(), "shard by order_id with ID_SUFFIX") {
		t.Errorf("a SEED key sharded by MOD: %v", err)
	}
	bad = strings.Replace(seedRules, "keyGeneratorName: flakes", "keyGeneratorName: nope", 1)
	if _, err := ParseRules([]byte(bad)); err == nil || !strings.Contains(err.Error(), `no key generator named "nope"`) {
		t.Errorf("an unknown key generator: %v", err)
	}
}
