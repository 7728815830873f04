package shard_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/shard/shardtest"
)

// queryGen writes random SELECTs over t_order (order_id, user_id,
// amount, tag) from a grammar: filters, DISTINCT, GROUP BY with the
// aggregates the merge combines, ORDER BY (text included), LIMIT with an
// offset. Every ordered query ends its ORDER BY with a unique key (or
// the whole group), so one database's answer is the only right one.
type queryGen struct{ r *rand.Rand }

func (g queryGen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g queryGen) where() string {
	var conds []string
	for range g.r.IntN(3) {
		switch g.r.IntN(5) {
		case 0:
			conds = append(conds, fmt.Sprintf("amount %s %d", g.pick("<", ">", "<=", ">=", "=", "<>"), g.r.IntN(50)))
		case 1:
			conds = append(conds, fmt.Sprintf("user_id IN (%d, %d)", g.r.IntN(7), g.r.IntN(7)))
		case 2:
			conds = append(conds, fmt.Sprintf("order_id BETWEEN %d AND %d", 500+g.r.IntN(400), 800+g.r.IntN(600)))
		case 3:
			conds = append(conds, fmt.Sprintf("tag %s '%s'", g.pick("=", "<", ">="), g.pick("apple", "Apple", "banana", "cherry", "b")))
		default:
			conds = append(conds, fmt.Sprintf("user_id = %d", g.r.IntN(7)))
		}
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, g.pick(" AND ", " OR "))
}

func (g queryGen) limit() string {
	switch g.r.IntN(3) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf(" LIMIT %d", g.r.IntN(12))
	}
	return fmt.Sprintf(" LIMIT %d, %d", g.r.IntN(20), g.r.IntN(12))
}

func (g queryGen) query() (string, bool) {
	dir := func() string { return g.pick("", " DESC") }
	switch g.r.IntN(4) {
	case 0: // plain rows
		cols := g.pick("order_id, user_id, amount, tag", "order_id, amount", "tag, order_id", "*")
		order := fmt.Sprintf(" ORDER BY %s%s, order_id%s", g.pick("amount", "user_id", "tag", "order_id"), dir(), dir())
		return "SELECT " + cols + " FROM t_order" + g.where() + order + g.limit(), true
	case 1: // groups
		key := g.pick("user_id", "tag", "amount % 5")
		alias := map[string]string{"user_id": "user_id", "tag": "tag", "amount % 5": "m"}[key]
		sel := key
		if alias == "m" {
			sel = key + " AS m"
		}
		aggs := []string{"COUNT(*)", "SUM(amount)", "MIN(order_id)", "MAX(amount)", "AVG(amount)"}
		g.r.Shuffle(len(aggs), func(i, j int) { aggs[i], aggs[j] = aggs[j], aggs[i] })
		q := fmt.Sprintf("SELECT %s, %s FROM t_order%s GROUP BY %s", sel, strings.Join(aggs[:1+g.r.IntN(4)], ", "), g.where(), alias)
		if g.r.IntN(2) == 0 {
			return q + fmt.Sprintf(" ORDER BY %s%s", alias, dir()) + g.limit(), true
		}
		return q, false
	case 2: // aggregates alone
		aggs := []string{"COUNT(*)", "SUM(amount)", "MIN(amount)", "MAX(order_id)", "AVG(amount)", "COUNT(tag)"}
		g.r.Shuffle(len(aggs), func(i, j int) { aggs[i], aggs[j] = aggs[j], aggs[i] })
		return "SELECT " + strings.Join(aggs[:1+g.r.IntN(5)], ", ") + " FROM t_order" + g.where(), true
	}
	col := g.pick("user_id", "tag", "amount")
	return fmt.Sprintf("SELECT DISTINCT %s FROM t_order%s ORDER BY %s%s", col, g.where(), col, dir()) + g.limit(), true
}

// Random queries from the grammar give on the sharded tables what they
// give on one database holding the same random rows.
func TestRandomQueriesMatchOneDatabase(t *testing.T) {
	ex, _ := shop(t)
	refs, _ := shardtest.Databases(t, 1, "CREATE TABLE t_order (order_id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, amount INT NOT NULL, tag VARCHAR(10))")
	ref := refs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, q := range []string{"ALTER TABLE t_order ADD COLUMN tag VARCHAR(10)"} {
		if _, err := ex.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	tags := []any{"apple", "Apple", "APPLE", "banana", "Banana", "cherry", "b", nil}
	for i := range 300 {
		args := []any{int64(500 + i*3 + r.IntN(3)), int64(r.IntN(7)), int64(r.IntN(50)), tags[r.IntN(len(tags))]}
		const ins = "INSERT INTO t_order (order_id, user_id, amount, tag) VALUES (?, ?, ?, ?)"
		if _, err := ex.Exec(ctx, ins, args...); err != nil {
			t.Fatal(err)
		}
		if _, err := ref.ExecContext(ctx, ins, args...); err != nil {
			t.Fatal(err)
		}
	}
	g := queryGen{r}
	for range 250 {
		q, ordered := g.query()
		got, err := ex.Query(ctx, q)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		rows, err := ref.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("one database: %s: %v", q, err)
		}
		cols, want, err := shardtest.Lines(rows)
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for _, row := range got.Values {
			have = append(have, shardtest.Line(row))
		}
		if strings.Contains(q, "GROUP BY tag") || strings.Contains(q, "DISTINCT tag") {
			// A group of collation-equal texts shows any one of them
			// (apple or APPLE): one database picks as it likes too.
			for i := range want {
				want[i] = strings.ToLower(want[i])
			}
			for i := range have {
				have[i] = strings.ToLower(have[i])
			}
		}
		if !ordered {
			slices.Sort(want)
			slices.Sort(have)
		}
		if !slices.Equal(have, want) || strings.Join(got.Columns, "|") != strings.Join(cols, "|") {
			t.Errorf("%s (seed %d):\nsharded %v %v\n    one %v %v", q, seed, got.Columns, have, cols, want)
		}
	}
}
