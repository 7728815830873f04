package shard

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/idgen"
)

func TestExpand(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "ds_${0..1}.t_${[0, 2]}", want: []string{"ds_0.t_0", "ds_0.t_2", "ds_1.t_0", "ds_1.t_2"}},
		{in: "ds.t_$->{2..0}", want: []string{"ds.t_2", "ds.t_1", "ds.t_0"}},
		{in: "ds_${['a','b']}.t", want: []string{"ds_a.t", "ds_b.t"}},
		{in: "plain.table", want: []string{"plain.table"}},
		{in: "price_$5.t", want: []string{"price_$5.t"}},
		{in: "ds_${0..1.t", err: "without its closing }"},
		{in: "ds_${}.t", err: "empty"},
		{in: "ds_${a..b}.t", err: "want integers"},
		{in: "ds_${0..9999}.t_${0..9999}", err: "more than"},
	} {
		got, err := expand(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
		}
	}
}

func TestTemplate(t *testing.T) {
	vals := map[string]Value{"order_id": Int(37), "user_id": Int(-3), "region": Text("eu")}
	for _, c := range []struct{ in, want, err string }{
		{in: "t_order_${order_id % 16}", want: "t_order_5"},
		{in: "t_${(order_id + 3) / 10 % 4}_${user_id % 4}", want: "t_0_1"}, // a negative key's remainder is not negative
		{in: "t_${ORDER_ID * 2 - 70}", want: "t_4"},
		{in: "t_${region}", want: "t_eu"},
		{in: "t_${region % 2}", err: "not an integer"},
		{in: "t_${order_id % 0}", err: "division by zero"},
		{in: "t_${missing}", err: "no value for column missing"},
	} {
		tm, err := parseTemplate(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		got, err := tm.eval(vals)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %q %v, want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %q %v, want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"t_${order_id %}", "t_${(order_id}", "t_${order_id $ 2}"} {
		if _, err := parseTemplate(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func mustAlg(t *testing.T, typ string, p props) algorithm {
	t.Helper()
	a, err := newAlgorithm(typ, p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func names(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprint(prefix, i))
	}
	return out
}

func TestAlgorithms(t *testing.T) {
	tables := names("t_", 12)
	one := func(v Value) map[string]Value { return map[string]Value{"k": v} }
	mod := mustAlg(t, "MOD", props{"sharding-count": "12"})
	for v, want := range map[int64]string{0: "t_0", 11: "t_11", 25: "t_1", -1: "t_11"} {
		if got, err := mod.precise(tables, one(Int(v))); err != nil || got != want {
			t.Errorf("MOD %d: %s %v, want %s", v, got, err, want)
		}
	}
	if got, err := mod.precise(tables, one(Text("25"))); err != nil || got != "t_1" {
		t.Errorf("MOD of a quoted key: %s %v", got, err)
	}
	if _, err := mod.precise(tables, one(Text("abc"))); err == nil {
		t.Error("MOD of text that is no number routed")
	}
	if got, ok, _ := mod.ranged(tables, "k", Cond{Lo: &Bound{Int(10), true}, Hi: &Bound{Int(14), false}}); !ok || !slices.Equal(got, []string{"t_10", "t_11", "t_0", "t_1"}) {
		t.Errorf("MOD range [10, 14): %v %v", got, ok)
	}
	if _, ok, _ := mod.ranged(tables, "k", Cond{Lo: &Bound{Int(0), true}, Hi: &Bound{Int(100), true}}); ok {
		t.Error("MOD range wider than the count narrowed")
	}

	hash := mustAlg(t, "HASH_MOD", props{"sharding-count": "12"})
	a, _ := hash.precise(tables, one(Text("alice")))
	b, _ := hash.precise(tables, one(Text("alice")))
	if a == "" || a != b {
		t.Errorf("HASH_MOD not stable: %q %q", a, b)
	}
	spread := map[string]bool{}
	for i := range 200 {
		x, err := hash.precise(tables, one(Text(fmt.Sprint("user-", i))))
		if err != nil {
			t.Fatal(err)
		}
		spread[x] = true
	}
	if len(spread) != 12 {
		t.Errorf("HASH_MOD over 200 keys used %d of 12 tables", len(spread))
	}

	// VOLUME_RANGE 10..40 by 10: (-inf,10) [10,20) [20,30) [30,40) [40,+inf).
	vol := mustAlg(t, "VOLUME_RANGE", props{"range-lower": "10", "range-upper": "40", "sharding-volume": "10"})
	for v, want := range map[int64]string{-5: "t_0", 10: "t_1", 29: "t_2", 39: "t_3", 40: "t_4", 1000: "t_4"} {
		if got, err := vol.precise(tables, one(Int(v))); err != nil || got != want {
			t.Errorf("VOLUME_RANGE %d: %s %v, want %s", v, got, err, want)
		}
	}
	if got, ok, _ := vol.ranged(tables, "k", Cond{Lo: &Bound{Int(15), true}, Hi: &Bound{Int(30), false}}); !ok || !slices.Equal(got, []string{"t_1", "t_2"}) {
		t.Errorf("VOLUME_RANGE [15, 30): %v", got)
	}
	bnd := mustAlg(t, "BOUNDARY_RANGE", props{"sharding-ranges": "100, 1000"})
	if got, ok, _ := bnd.ranged(tables, "k", Cond{Lo: &Bound{Int(500), false}}); !ok || !slices.Equal(got, []string{"t_1", "t_2"}) {
		t.Errorf("BOUNDARY_RANGE > 500: %v", got)
	}

	months := []string{"t_202611", "t_202612", "t_202701", "t_202702"}
	iv := mustAlg(t, "INTERVAL", props{"datetime-lower": "2026-11-01 00:00:00", "datetime-upper": "2027-03-01 00:00:00",
		"sharding-suffix-pattern": "yyyyMM", "datetime-interval-unit": "MONTHS"})
	if got, err := iv.precise(months, one(Text("2026-12-31 23:59:59"))); err != nil || got != "t_202612" {
		t.Errorf("INTERVAL: %s %v", got, err)
	}
	if got, err := iv.precise(months, one(Time(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)))); err != nil || got != "t_202701" {
		t.Errorf("INTERVAL at a boundary: %s %v", got, err)
	}
	if _, err := iv.precise(months, one(Text("2027-03-01 00:00:00"))); err == nil {
		t.Error("INTERVAL routed a time past datetime-upper")
	}
	if got, ok, _ := iv.ranged(months, "k", Cond{Lo: &Bound{Text("2026-12-15"), true}, Hi: &Bound{Text("2027-01-10"), true}}); !ok || !slices.Equal(got, []string{"t_202612", "t_202701"}) {
		t.Errorf("INTERVAL range: %v %v", got, ok)
	}

	l := idgen.Seed()
	id, err := l.Compose(map[string]int64{idgen.FieldTime: 12345, idgen.FieldSeq: 7, "type": 1, "machine": 3, "db": 2, "table": 9})
	if err != nil {
		t.Fatal(err)
	}
	byTable := mustAlg(t, "ID_SUFFIX", props{"field": "table"})
	if got, err := byTable.precise(names("t_order_", 16), one(Int(id))); err != nil || got != "t_order_9" {
		t.Errorf("ID_SUFFIX table: %s %v", got, err)
	}
	if got, err := mustAlg(t, "ID_SUFFIX", props{"field": "db"}).precise(names("ds_", 4), one(Int(id))); err != nil || got != "ds_2" {
		t.Errorf("ID_SUFFIX db: %s %v", got, err)
	}

	for _, c := range []struct {
		typ string
		p   props
		err string
	}{
		{"MOD", props{}, "sharding-count is required"},
		{"MOD", props{"sharding-count": "x"}, "not an integer"},
		{"MOD", props{"sharding-count": "4", "extra": "1"}, "unknown property extra"},
		{"BOUNDARY_RANGE", props{"sharding-ranges": "10, 5"}, "increasing"},
		{"INLINE", props{"algorithm-expression": "t_${a % 2}_${b % 2}"}, "COMPLEX_INLINE"},
		{"HINT_INLINE", props{"algorithm-expression": "t_${order_id % 2}"}, "${value}"},
		{"ID_SUFFIX", props{"field": "nope"}, "no field"},
		{"INTERVAL", props{"datetime-lower": "2026-13-01 00:00:00", "sharding-suffix-pattern": "yyyyMM"}, "does not match"},
		{"NOPE", props{}, "unknown algorithm type"},
	} {
		if _, err := newAlgorithm(c.typ, c.p); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s %v: %v, want %q", c.typ, c.p, err, c.err)
		}
	}
}

const shopRules = `
dataSources:
  ds_0: mysql://root@127.0.0.1:3306/shop_0
  ds_1: mysql://root@127.0.0.1:3306/shop_1
defaultDataSource: ds_0
tables:
  t_order:
    actualDataNodes: ds_${0..1}.t_order_${0..3}
    databaseStrategy:
      standard: {shardingColumn: user_id, shardingAlgorithmName: db_mod}
    tableStrategy:
      standard: {shardingColumn: order_id, shardingAlgorithmName: t_inline}
  t_order_item:
    actualDataNodes: ds_${0..1}.t_order_item_${0..3}
    databaseStrategy:
      standard: {shardingColumn: user_id, shardingAlgorithmName: db_mod}
    tableStrategy:
      standard: {shardingColumn: order_id, shardingAlgorithmName: t_inline}
  t_log:
    actualDataNodes: ds_0.t_log_${[202611, 202612]}
    tableStrategy:
      standard: {shardingColumn: created, shardingAlgorithmName: by_month}
  t_pair:
    actualDataNodes: ds_0.t_pair_${0..1}_${0..1}
    tableStrategy:
      complex: {shardingColumns: "a, b", shardingAlgorithmName: pair}
  t_hinted:
    actualDataNodes: ds_${0..1}.t_hinted
    databaseStrategy:
      hint: {shardingAlgorithmName: by_hint}
bindingTables:
  - t_order, t_order_item
broadcastTables: [t_dict]
shardingAlgorithms:
  db_mod: {type: MOD, props: {sharding-count: 2}}
  t_inline: {type: INLINE, props: {algorithm-expression: "t_order_${order_id % 4}"}}
  by_month:
    type: INTERVAL
    props: {datetime-lower: "2026-11-01 00:00:00", datetime-upper: "2027-01-01 00:00:00", sharding-suffix-pattern: yyyyMM, datetime-interval-unit: MONTHS}
  pair: {type: COMPLEX_INLINE, props: {sharding-columns: "a,b", algorithm-expression: "t_pair_${a % 2}_${b % 2}"}}
  by_hint: {type: HINT_INLINE, props: {algorithm-expression: "ds_${value % 2}"}}
`

func TestRulesRoute(t *testing.T) {
	r, err := ParseRules([]byte(shopRules))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Bound("t_order", "T_ORDER_ITEM") || r.Bound("t_order", "t_log") || !r.Broadcast("t_dict") || r.DefaultDataSource() != "ds_0" {
		t.Fatal("binding, broadcast or default data source not as written")
	}
	order := r.Table("t_order")
	if len(order.Nodes) != 8 || order.Nodes[5] != (Node{"ds_1", "t_order_1"}) {
		t.Fatalf("t_order nodes: %v", order.Nodes)
	}
	route := func(tb *Table, conds map[string]Cond, hint *Hint) string {
		t.Helper()
		nodes, err := tb.Route(conds, hint)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, n := range nodes {
			s = append(s, n.String())
		}
		return strings.Join(s, " ")
	}
	vals := func(v ...int64) Cond {
		var c Cond
		for _, x := range v {
			c.Values = append(c.Values, Int(x))
		}
		return c
	}
	for _, c := range []struct {
		conds map[string]Cond
		want  string
	}{
		{map[string]Cond{"user_id": vals(3), "order_id": vals(6)}, "ds_1.t_order_2"},
		{map[string]Cond{"user_id": vals(3, 4), "order_id": vals(6)}, "ds_1.t_order_2 ds_0.t_order_2"},
		{map[string]Cond{"user_id": vals(4)}, "ds_0.t_order_0 ds_0.t_order_1 ds_0.t_order_2 ds_0.t_order_3"},
		{map[string]Cond{"order_id": vals(1, 5)}, "ds_0.t_order_1 ds_1.t_order_1"},
		{map[string]Cond{"user_id": {Lo: &Bound{Int(2), true}, Hi: &Bound{Int(2), true}}, "order_id": vals(0)}, "ds_0.t_order_0"},
	} {
		if got := route(order, c.conds, nil); got != c.want {
			t.Errorf("t_order %v: %s, want %s", c.conds, got, c.want)
		}
	}
	if got := route(order, nil, nil); strings.Count(got, " ")+1 != 8 {
		t.Errorf("no condition: %s, want all 8 nodes", got)
	}
	if _, err := order.Route(map[string]Cond{"order_id": {Lo: &Bound{Int(1), true}}}, nil); err == nil || !strings.Contains(err.Error(), "allow-range-query-with-inline-sharding") {
		t.Errorf("a range on an INLINE column: %v, want the refusal naming the property", err)
	}
	if got := route(r.Table("t_log"), map[string]Cond{"created": {Lo: &Bound{Text("2026-12-02"), true}}}, nil); got != "ds_0.t_log_202612" {
		t.Errorf("t_log from 2026-12-02: %s", got)
	}
	if got := route(r.Table("t_pair"), map[string]Cond{"a": vals(3), "b": vals(4, 5)}, nil); got != "ds_0.t_pair_1_0 ds_0.t_pair_1_1" {
		t.Errorf("t_pair: %s", got)
	}
	if got := route(r.Table("t_pair"), map[string]Cond{"a": vals(3)}, nil); strings.Count(got, " ")+1 != 4 {
		t.Errorf("t_pair with one of two columns: %s, want all 4", got)
	}
	if got := route(r.Table("t_hinted"), nil, &Hint{DataSource: []Value{Int(7)}}); got != "ds_1.t_hinted" {
		t.Errorf("t_hinted by hint 7: %s", got)
	}
	if got := route(r.Table("t_hinted"), nil, nil); got != "ds_0.t_hinted ds_1.t_hinted" {
		t.Errorf("t_hinted without a hint: %s", got)
	}
}

// Every problem in the rules is reported at once, each with its line.
func TestRulesErrorsNameTheirLines(t *testing.T) {
	bad := `dataSources:
  ds_0: mysql://root@127.0.0.1:3306/shop_0
  ds_1: postgres://nope
tables:
  t_order:
    actualDataNodes: ds_${0..2}.t_order_${0..1}
    databaseStrategy:
      standard: {shardingColumn: user_id, shardingAlgorithmName: missing}
    tableStrategy:
      standard: {shardingColumn: order_id, shardingAlgorithmName: bad_mod}
    colour: red
  t_item:
    actualDataNodes: ds_0.t_item_${0..1}
bindingTables:
  - t_order, t_item
broadcastTables: [t_order]
shardingAlgorithms:
  bad_mod: {type: MOD, props: {sharding-count: -1}}
defaultDataSource: ds_9
readwriteSplitting:
  ds_0:
    readDataSources:
      ds_1: mysql://root@127.0.0.1:3307/shop_0
      ds_0_r: redis://x
    loadBalancer: FASTEST
    maxReplicationLag: soon
  ds_7:
    readDataSources: {}
`
	_, err := ParseRules([]byte(bad))
	if !errors.Is(err, ErrRules) {
		t.Fatalf("%v, want ErrRules", err)
	}
	for _, want := range []string{
		`line 3: data source ds_1: "postgres://nope"`,
		`line 6: table t_order: data node ds_2.t_order_0: no data source "ds_2"`,
		`line 8: table t_order databaseStrategy: no sharding algorithm named "missing"`,
		`line 11: table t_order: unknown key "colour"`,
		`line 12: table t_item: data source ds_0 holds 2 of its tables but it has no tableStrategy`,
		`line 15: binding group: t_order and t_item are not sharded alike`,
		`line 16: broadcast table t_order is also a sharded table`,
		`line 18: algorithm bad_mod (MOD): property sharding-count: -1`,
		`line 19: defaultDataSource "ds_9" is not one of the data sources`,
		`line 23: read data source ds_1: the name is taken`,
		`line 24: read data source ds_0_r: "redis://x"`,
		`line 25: readwriteSplitting ds_0: loadBalancer "FASTEST": want ROUND_ROBIN or RANDOM`,
		`line 26: readwriteSplitting ds_0: maxReplicationLag "soon"`,
		`line 27: readwriteSplitting ds_7: "ds_7" is not one of the data sources`,
		`line 28: readwriteSplitting ds_7: readDataSources: at least one replica is required`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	// A data source URL's password never appears in an error.
	for _, c := range []struct{ url, want string }{
		{"postgres://app:s3cret-pw@db:5432/shop", `line 2: data source ds_0: "postgres://app:xxxxx@db:5432/shop"`},
		{"mysql://app:s3cret-pw@db:3306", `line 2: data source ds_0: "mysql://app:xxxxx@db:3306"`},
		{"mysql://app:s3cret-pw@db:33x6/shop", "line 2: data source ds_0: the URL does not parse"},
	} {
		_, err := ParseRules([]byte("dataSources:\n  ds_0: \"" + c.url + "\"\ntables:\n  t: {actualDataNodes: ds_0.t}\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want %q and no password", c.url, err, c.want)
		}
	}
	if _, err := ParseRules([]byte("dataSources: [\n")); !errors.Is(err, ErrRules) {
		t.Errorf("broken YAML: %v", err)
	}
	if _, err := ParseRules(nil); !errors.Is(err, ErrRules) {
		t.Errorf("empty rules: %v", err)
	}
}

func TestValueOf(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
		err  bool
	}{
		{int8(-3), "-3", false}, {uint32(7), "7", false}, {uint64(1 << 62), "4611686018427387904", false},
		{uint64(1 << 63), "", true}, {[]byte("k1"), "k1", false}, {nil, "NULL", false}, {3.5, "", true},
		{time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC), "2026-12-06 01:02:03", false},
	} {
		v, err := ValueOf(c.in)
		if (err != nil) != c.err || err == nil && v.String() != c.want {
			t.Errorf("ValueOf(%#v): %v %v, want %q (error %v)", c.in, v, err, c.want, c.err)
		}
	}
	if _, err := Text("2026-12-06T01:02:03Z").AsTime(); err != nil {
		t.Error(err)
	}
	if _, err := Text("yesterday").AsTime(); err == nil {
		t.Error("text that is no time read as one")
	}
	if n, err := compare(Text("10"), Int(9)); err != nil || n != 1 {
		t.Errorf("compare 10 with 9: %d %v", n, err)
	}
}
