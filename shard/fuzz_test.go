package shard

import (
	"strings"
	"testing"
	"time"
)

// Rules come from people and from the config center: any text is
// refused with an error or read, never a panic, and rules that parse
// route without one.
func FuzzParseRules(f *testing.F) {
	f.Add([]byte(shopRules))
	f.Add([]byte("dataSources: {ds_0: 'mysql://r@h:1/d'}\ntables: {t: {actualDataNodes: 'ds_0.t_${0..1}', tableStrategy: {standard: {shardingColumn: k, shardingAlgorithmName: m}}}}\nshardingAlgorithms: {m: {type: MOD, props: {sharding-count: 2}}}"))
	f.Add([]byte("tables: [1, 2]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRules(data)
		if err != nil {
			return
		}
		for _, name := range r.Tables() {
			tb := r.Table(name)
			for _, conds := range []map[string]Cond{
				nil,
				{"k": {Values: []Value{Int(-7), Text("x"), Time(time.Unix(0, 0))}}},
				{"k": {Lo: &Bound{Int(1), true}, Hi: &Bound{Int(9), false}}},
			} {
				_, _ = tb.Route(conds, &Hint{DataSource: []Value{Int(3)}, Table: []Value{Text("q")}})
			}
		}
	})
}

// An algorithm's expression, whatever its text: parsed or refused, and
// evaluated without a panic.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"t_${order_id % 16}", "t_${(a+3)/10%4}_${-b}", "t_$->{x * 2 - 1}", "${", "t_${1/0}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := expand(s); err != nil {
			_ = err
		}
		tm, err := parseTemplate(s)
		if err != nil {
			return
		}
		vals := map[string]Value{}
		for _, c := range tm.columns() {
			vals[c] = Int(-9223372036854775808)
		}
		_, _ = tm.eval(vals)
	})
}

// Any statement text, with any arguments: routed or refused with an
// error, never a panic.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{
		"SELECT * FROM t_order WHERE user_id = ? AND order_id IN (?, 3)",
		"INSERT INTO t_order (user_id, order_id, amount) VALUES (?, ?, ?), (1, 2, ?)",
		"UPDATE t_order SET amount = ? WHERE order_id BETWEEN ? AND 9",
		"DELETE FROM t_pair WHERE a = 1 AND b IN (2, 3)",
		"SELECT * FROM t_order o JOIN t_order_item i ON o.order_id = i.order_id WHERE o.user_id = ?",
		"SELECT * FROM t_log WHERE created >= ?",
	} {
		f.Add(s, int64(3), "7")
	}
	r, err := ParseRules([]byte(shopRules))
	if err != nil {
		f.Fatal(err)
	}
	rt := NewRouter(r)
	f.Fuzz(func(t *testing.T, q string, a int64, b string) {
		args := make([]any, strings.Count(q, "?"))
		for i := range args {
			if i%2 == 0 {
				args[i] = a
			} else {
				args[i] = b
			}
		}
		_, _ = rt.Route(q, args)
	})
}
