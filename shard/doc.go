// Package shard splits logical tables over several databases and tables,
// as ShardingSphere does: rules (YAML, ParseRules) name each logical
// table's data nodes with inline expressions (ds_${0..1}.t_order_${0..3}),
// a database strategy and a table strategy (independent of each other),
// each a sharding algorithm over one column or more — MOD, HASH_MOD,
// VOLUME_RANGE, BOUNDARY_RANGE, INTERVAL, INLINE, COMPLEX_INLINE,
// HINT_INLINE, and ID_SUFFIX, which reads the database or table suffix an
// idgen ID carries — plus binding tables (sharded alike, joined within a
// node pair) and broadcast tables (a full copy everywhere). Table.Route
// maps what a statement says about the sharding columns (values, ranges,
// hints) to the data nodes its rows can be in.
package shard
