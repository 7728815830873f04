package shard

import (
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
