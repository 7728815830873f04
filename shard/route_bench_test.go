package shard

import "testing"

// BenchmarkRoute is the router's cost per statement with a cached plan:
// a point select by id over one node, over 2×2 nodes by MOD and INLINE
// (bench/shard's layouts), and an insert.
func BenchmarkRoute(b *testing.B) {
	one, err := ParseRules([]byte("dataSources:\n  ds_0: mysql://r@h:1/d\ntables:\n  sbtest1:\n    actualDataNodes: ds_0.sbtest1\n"))
	if err != nil {
		b.Fatal(err)
	}
	sharded, err := ParseRules([]byte(`dataSources:
  ds_0: mysql://r@h:1/d0
  ds_1: mysql://r@h:1/d1
tables:
  sbtest1:
    actualDataNodes: ds_${0..1}.sbtest1_${0..1}
    databaseStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_id}}
    tableStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_half}}
shardingAlgorithms:
  by_id: {type: MOD, props: {sharding-count: 2}}
  by_half: {type: INLINE, props: {algorithm-expression: "sbtest1_${id / 2 % 2}", allow-range-query-with-inline-sharding: true}}
`))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		r    *Rules
		q    string
		args []any
	}{
		{"point-select/one-node", one, "SELECT c FROM sbtest1 WHERE id = ?", []any{int64(42)}},
		{"point-select/2x2", sharded, "SELECT c FROM sbtest1 WHERE id = ?", []any{int64(42)}},
		{"insert/2x2", sharded, "INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?)", []any{int64(42), int64(1), "c", "pad"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			rt := NewRouter(c.r)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rt.Route(c.q, c.args); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
