package shard

import (
	"bytes"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pingcap/tidb/pkg/parser/ast"
	"github.com/pingcap/tidb/pkg/parser/format"
	"github.com/pingcap/tidb/pkg/parser/opcode"
	"github.com/pingcap/tidb/pkg/parser/test_driver"
)

// mergePlan is how the rows of a SELECT sent to several nodes combine
// into the answer one database would give: groups and aggregates
// combined, then the order restored, then the rows the LIMIT keeps.
type mergePlan struct {
	fields   []mergeField // the select list (nil: a wildcard — plain rows)
	aggs     bool         // some field is an aggregate
	group    []ref        // GROUP BY items
	order    []orderItem  // ORDER BY items
	distinct bool
	limit    *ast.Limit // the statement's own (nil: none)
	// limitMarkers are the arguments of the LIMIT's markers (they leave
	// the units' statements with it).
	limitMarkers []int
	// hidden are fields the units select besides the statement's own
	// (ORDER BY or GROUP BY items not selected, AVG's SUM and COUNT):
	// after its columns, dropped from the merged rows.
	hidden []*ast.SelectField
	// hiddenAgg is each hidden field's aggregate ("" none).
	hiddenAgg []string
	// groupExprs are the GROUP BY items as written.
	groupExprs []ast.ExprNode
	// Text compares by the data source's collation, which the merge
	// does not know: each text key is selected with its collation weight
	// too (WEIGHT_STRING, a hidden field; NULL for non-text values) and
	// compared by that. These are the weights' hidden fields (0: none)
	// of the ORDER BY items, the GROUP BY items and, for DISTINCT, the
	// fields.
	orderWeight, groupWeight, fieldWeight []int
}

type mergeField struct {
	name string // alias, or column name ("" for an expression without one)
	agg  string // count, sum, min, max, avg; "" a plain value
	// avg: the hidden SUM and COUNT fields it is computed from.
	avgSum, avgCount int
}

// ref is a column of the units' rows: a select-list field by position, a
// hidden field, or a name when the list is a wildcard (resolved against
// the result's columns).
type ref struct {
	pos    int // ≥ 0: the field
	hidden int // > 0: hidden field hidden-1
	name   string
}

type orderItem struct {
	ref
	desc bool
}

// hiddenPrefix names the hidden fields (no user column starts with it).
const hiddenPrefix = "__tg_"

func (m *mergePlan) addHidden(e ast.ExprNode, agg string) ref {
	m.hidden = append(m.hidden, &ast.SelectField{Expr: e, AsName: ast.NewCIStr(fmt.Sprintf("%s%d", hiddenPrefix, len(m.hidden)))})
	m.hiddenAgg = append(m.hiddenAgg, agg)
	return ref{pos: -1, hidden: len(m.hidden)}
}

// aggKind checks an aggregate can be combined across shards and returns
// its name.
func aggKind(x *ast.AggregateFuncExpr) (string, error) {
	fn := strings.ToLower(x.F)
	switch {
	case x.Distinct:
		return "", unsupported("%s(DISTINCT …) across shards", strings.ToUpper(fn))
	case fn != ast.AggFuncCount && fn != ast.AggFuncSum && fn != ast.AggFuncMin && fn != ast.AggFuncMax && fn != ast.AggFuncAvg:
		return "", unsupported("the aggregate %s across shards", strings.ToUpper(fn))
	}
	return fn, nil
}

// buildMerge reads what combining sel's results across nodes takes, or
// refuses what cannot be combined exactly.
func (p *stmtPlan) buildMerge(sel *ast.SelectStmt) (*mergePlan, error) {
	m := &mergePlan{distinct: sel.Distinct, limit: sel.Limit}
	if sel.Having != nil {
		return nil, unsupported("HAVING across shards")
	}
	wild := false
	for _, f := range sel.Fields.Fields {
		if f.WildCard != nil {
			wild = true
			continue
		}
		mf := mergeField{name: f.AsName.L}
		switch x := f.Expr.(type) {
		case *ast.ColumnNameExpr:
			if mf.name == "" {
				mf.name = x.Name.Name.L
			}
		case *ast.AggregateFuncExpr:
			fn, err := aggKind(x)
			if err != nil {
				return nil, err
			}
			mf.agg = fn
			m.aggs = true
			if fn == ast.AggFuncAvg {
				// Each unit's average is of its own rows: the merged one
				// is the sums over the counts.
				mf.avgSum = m.addHidden(&ast.AggregateFuncExpr{F: ast.AggFuncSum, Args: x.Args}, ast.AggFuncSum).hidden - 1
				mf.avgCount = m.addHidden(&ast.AggregateFuncExpr{F: ast.AggFuncCount, Args: x.Args}, ast.AggFuncCount).hidden - 1
			}
		default:
			if containsAgg(f.Expr) {
				return nil, unsupported("an expression over an aggregate across shards (select the aggregate itself)")
			}
		}
		m.fields = append(m.fields, mf)
	}
	if wild {
		if m.aggs || sel.GroupBy != nil {
			return nil, unsupported("SELECT * with GROUP BY or aggregates across shards (name the columns)")
		}
		if len(m.fields) > 0 {
			return nil, unsupported("SELECT * beside other fields across shards")
		}
		m.fields = nil
	}
	// resolve finds an ORDER BY or GROUP BY item among the fields, or
	// selects it as a hidden field (derived).
	resolve := func(e ast.ExprNode, what string) (ref, error) {
		switch x := e.(type) {
		case *ast.PositionExpr:
			if x.P != nil {
				return ref{}, unsupported("a %s position given as a marker across shards", what)
			}
			if x.N < 1 || m.fields != nil && x.N > len(m.fields) {
				return ref{}, fmt.Errorf("shard: %s position %d: the select list has %d fields", what, x.N, len(m.fields))
			}
			return ref{pos: x.N - 1}, nil
		case *ast.ColumnNameExpr:
			name := x.Name.Name.L
			if m.fields == nil && x.Name.Table.L == "" {
				return ref{pos: -1, name: name}, nil
			}
			for i, f := range m.fields {
				if f.name == name && (f.agg == "" || what == "ORDER BY") && x.Name.Table.L == "" {
					return ref{pos: i}, nil
				}
			}
		case *ast.AggregateFuncExpr:
			if what != "ORDER BY" {
				return ref{}, unsupported("GROUP BY an aggregate")
			}
			fn, err := aggKind(x)
			if err != nil {
				return ref{}, err
			}
			if fn == ast.AggFuncAvg {
				return ref{}, unsupported("ORDER BY AVG(…) across shards (select it with an alias and order by the alias)")
			}
			if m.group == nil && !m.aggs {
				return ref{}, unsupported("ORDER BY an aggregate without GROUP BY")
			}
			return m.addHidden(x, fn), nil
		}
		if containsAgg(e) {
			return ref{}, unsupported("%s by an expression over an aggregate across shards (select it with an alias and %s by the alias)", what, what)
		}
		if what == "ORDER BY" && (m.group != nil || m.aggs) && !m.grouped(e) {
			return ref{}, unsupported("ORDER BY %s, neither grouped nor aggregated, across shards", exprText(e))
		}
		return m.addHidden(e, ""), nil
	}
	if sel.GroupBy != nil {
		for _, it := range sel.GroupBy.Items {
			r, err := resolve(it.Expr, "GROUP BY")
			if err != nil {
				return nil, err
			}
			m.group = append(m.group, r)
			m.groupExprs = append(m.groupExprs, it.Expr)
		}
		for i, f := range m.fields {
			if f.agg == "" && !slices.ContainsFunc(m.group, func(r ref) bool { return r.pos == i }) {
				return nil, unsupported("the field %q is neither grouped nor aggregated (across shards its value would be any row's)", f.name)
			}
		}
	} else if m.aggs {
		for _, f := range m.fields {
			if f.agg == "" {
				return nil, unsupported("plain fields beside aggregates without GROUP BY across shards")
			}
		}
	}
	if sel.OrderBy != nil {
		for _, it := range sel.OrderBy.Items {
			r, err := resolve(it.Expr, "ORDER BY")
			if err != nil {
				return nil, err
			}
			m.order = append(m.order, orderItem{ref: r, desc: it.Desc})
		}
	}
	if m.distinct && len(m.hidden) > 0 {
		return nil, unsupported("DISTINCT with ORDER BY items not selected across shards")
	}
	m.addWeights(sel)
	if sel.Limit != nil {
		sel.Limit.Accept(&visitor{enter: func(n ast.Node) {
			if mk, ok := n.(*test_driver.ParamMarkerExpr); ok {
				m.limitMarkers = append(m.limitMarkers, p.markers[mk])
			}
		}})
	}
	return m, nil
}

// addWeights selects the collation weight of each ORDER BY and GROUP
// BY item and, under DISTINCT, of each field: what text values are
// ordered and grouped by. Aggregates (combined here, not weighed) and
// expressions with markers (whose arguments are given once) get none:
// text there stays refused.
func (m *mergePlan) addWeights(sel *ast.SelectStmt) {
	exprOf := func(r ref) ast.ExprNode {
		switch {
		case r.hidden > 0:
			if m.hiddenAgg[r.hidden-1] != "" {
				return nil
			}
			return m.hidden[r.hidden-1].Expr
		case r.pos >= 0:
			if m.fields == nil || r.pos >= len(sel.Fields.Fields) || m.fields[r.pos].agg != "" {
				return nil
			}
			return sel.Fields.Fields[r.pos].Expr
		}
		return &ast.ColumnNameExpr{Name: &ast.ColumnName{Name: ast.NewCIStr(r.name)}}
	}
	seen := map[string]int{} // an expression's weight, selected once
	weigh := func(r ref) int {
		e := exprOf(r)
		if e == nil || containsAgg(e) || containsMarker(e) || numeric(e) {
			return 0
		}
		key := exprText(e)
		if h, ok := seen[key]; ok {
			return h
		}
		h := m.addHidden(&ast.FuncCallExpr{FnName: ast.NewCIStr(ast.WeightString), Args: []ast.ExprNode{e}}, "").hidden
		seen[key] = h
		return h
	}
	for _, o := range m.order {
		m.orderWeight = append(m.orderWeight, weigh(o.ref))
	}
	for _, g := range m.group {
		m.groupWeight = append(m.groupWeight, weigh(g))
	}
	if m.distinct && m.fields != nil {
		for i := range m.fields {
			m.fieldWeight = append(m.fieldWeight, weigh(ref{pos: i}))
		}
	}
}

// numeric reports whether e is arithmetic, whose value is never text.
func numeric(e ast.ExprNode) bool {
	switch x := e.(type) {
	case *ast.BinaryOperationExpr:
		switch x.Op {
		case opcode.Plus, opcode.Minus, opcode.Mul, opcode.Div, opcode.IntDiv, opcode.Mod:
			return true
		}
	case *ast.UnaryOperationExpr:
		return x.Op == opcode.Minus
	case *ast.ParenthesesExpr:
		return numeric(x.Expr)
	}
	return false
}

func containsMarker(e ast.Node) bool {
	found := false
	e.Accept(&visitor{enter: func(n ast.Node) {
		if _, ok := n.(*test_driver.ParamMarkerExpr); ok {
			found = true
		}
	}})
	return found
}

// grouped reports whether e is one of the GROUP BY items (as written).
func (m *mergePlan) grouped(e ast.ExprNode) bool {
	t := exprText(e)
	for _, g := range m.groupExprs {
		if exprText(g) == t {
			return true
		}
	}
	return false
}

func exprText(e ast.Node) string {
	var sb strings.Builder
	if err := e.Restore(format.NewRestoreCtx(format.DefaultRestoreFlags, &sb)); err != nil {
		return fmt.Sprintf("%T", e)
	}
	return sb.String()
}

func containsAgg(e ast.Node) bool {
	found := false
	e.Accept(&visitor{enter: func(n ast.Node) {
		if _, ok := n.(*ast.AggregateFuncExpr); ok {
			found = true
		}
	}})
	return found
}

// window is the LIMIT's offset and count (count -1: none).
func (m *mergePlan) window(p *stmtPlan, args []any) (offset, count int64, err error) {
	count = -1
	if m.limit == nil {
		return 0, -1, nil
	}
	num := func(e ast.ExprNode) (int64, error) {
		v, ok, err := p.value(e, args)
		if err != nil || !ok {
			return 0, fmt.Errorf("shard: LIMIT: want a number: %v", err)
		}
		n, err := v.Int64()
		if err != nil || n < 0 {
			return 0, fmt.Errorf("shard: LIMIT %s: want a number ≥ 0", v)
		}
		return n, nil
	}
	if m.limit.Offset != nil {
		if offset, err = num(m.limit.Offset); err != nil {
			return 0, 0, err
		}
	}
	if count, err = num(m.limit.Count); err != nil {
		return 0, 0, err
	}
	return offset, count, nil
}

// unitLimit is the LIMIT each unit runs with: none when rows combine
// (groups, aggregates) before the limit applies, else the rows up to the
// window's end (offset + count) from the start.
func (m *mergePlan) unitLimit(offset, count int64) *ast.Limit {
	if m.limit == nil || m.aggs || m.group != nil {
		return nil
	}
	return &ast.Limit{Count: ast.NewValueExpr(offset+count, "", "")}
}

// colKind is how a result column's values compare.
type colKind uint8

const (
	kindNumber colKind = iota
	kindTemporal
	kindBinary
	kindText // compared by the database's collation: not here
)

func kindOf(dbType string) colKind {
	t := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(dbType), "UNSIGNED "))
	switch t {
	case "TINYINT", "SMALLINT", "MEDIUMINT", "INT", "INTEGER", "BIGINT", "DECIMAL", "NUMERIC", "FLOAT", "DOUBLE", "REAL", "YEAR", "BIT", "BOOL", "BOOLEAN":
		return kindNumber
	case "DATE", "DATETIME", "TIMESTAMP":
		return kindTemporal
	case "BINARY", "VARBINARY", "BLOB", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB":
		return kindBinary
	}
	return kindText
}

// compareVals orders two values of a column of kind k as MariaDB does
// (NULL first).
func compareVals(a, b any, k colKind) (int, error) {
	switch {
	case a == nil && b == nil:
		return 0, nil
	case a == nil:
		return -1, nil
	case b == nil:
		return 1, nil
	}
	switch k {
	case kindNumber:
		x, err := toRat(a)
		if err != nil {
			return 0, err
		}
		y, err := toRat(b)
		if err != nil {
			return 0, err
		}
		return x.Cmp(y), nil
	case kindTemporal:
		if ta, ok := a.(time.Time); ok {
			if tb, ok := b.(time.Time); ok {
				return ta.Compare(tb), nil
			}
		}
		return strings.Compare(text(a), text(b)), nil // fixed-width text forms
	case kindBinary:
		return bytes.Compare([]byte(text(a)), []byte(text(b))), nil
	}
	return 0, unsupported("ordering, grouping or comparing a text column across shards (its order is the database collation's)")
}

func text(v any) string {
	switch x := v.(type) {
	case []byte:
		return string(x)
	case string:
		return x
	case time.Time:
		return x.Format("2006-01-02 15:04:05.999999")
	}
	return fmt.Sprint(v)
}

func toRat(v any) (*big.Rat, error) {
	switch x := v.(type) {
	case int64:
		return new(big.Rat).SetInt64(x), nil
	case uint64:
		return new(big.Rat).SetUint64(x), nil
	case float64:
		r := new(big.Rat)
		if r.SetFloat64(x) == nil {
			return nil, fmt.Errorf("shard: %v is not a finite number", x)
		}
		return r, nil
	case float32:
		return toRat(float64(x))
	}
	r, ok := new(big.Rat).SetString(strings.TrimSpace(text(v)))
	if !ok {
		return nil, fmt.Errorf("shard: %q is not a number", text(v))
	}
	return r, nil
}

// merge combines parts (their rows concatenated in rows) as mergePlan
// says. kinds are the result columns' kinds.
func (m *mergePlan) merge(rows *Rows, kinds []colKind, offset, count int64) error {
	vis := len(rows.Columns) - len(m.hidden) // the statement's own columns
	if vis < 0 {
		return fmt.Errorf("shard: %d result columns, fewer than the %d the router added", len(rows.Columns), len(m.hidden))
	}
	resolve := func(r ref) (int, error) {
		if r.hidden > 0 {
			return vis + r.hidden - 1, nil
		}
		if r.pos >= 0 {
			if r.pos >= len(rows.Columns) {
				return 0, fmt.Errorf("shard: position %d beyond the %d result columns", r.pos+1, len(rows.Columns))
			}
			return r.pos, nil
		}
		for i, c := range rows.Columns {
			if strings.EqualFold(c, r.name) {
				return i, nil
			}
		}
		return 0, unsupported("ORDER BY %s across shards: it must be in the select list", r.name)
	}
	// weights: a text column's collation weight column.
	weights := map[int]int{}
	weigh := func(col, hidden int) {
		if hidden > 0 {
			weights[col] = vis + hidden - 1
		}
	}
	for i, w := range m.fieldWeight {
		weigh(i, w)
	}
	if m.aggs || m.group != nil {
		var keys []int
		for j, g := range m.group {
			i, err := resolve(g)
			if err != nil {
				return err
			}
			keys = append(keys, i)
			weigh(i, m.groupWeight[j])
		}
		aggOf := make([]string, len(rows.Columns))
		for i, f := range m.fields {
			aggOf[i] = f.agg
		}
		copy(aggOf[vis:], m.hiddenAgg)
		out, err := m.combine(rows.Values, keys, kinds, weights, aggOf)
		if err != nil {
			return err
		}
		for i, f := range m.fields {
			if f.agg != ast.AggFuncAvg {
				continue
			}
			for _, r := range out {
				if r[i], err = average(r[vis+f.avgSum], r[vis+f.avgCount], r[i]); err != nil {
					return err
				}
			}
		}
		rows.Values = out
	}
	if m.distinct {
		all := make([]int, len(rows.Columns))
		for i := range all {
			all[i] = i
		}
		seen := map[string]bool{}
		out := rows.Values[:0]
		for _, r := range rows.Values {
			k, err := groupKey(r, all, kinds, weights)
			if err != nil {
				return err
			}
			if !seen[k] {
				seen[k] = true
				out = append(out, r)
			}
		}
		rows.Values = out
	}
	if len(m.order) > 0 {
		idx := make([]int, len(m.order))
		ks := make([]colKind, len(m.order))
		for j, o := range m.order {
			i, err := resolve(o.ref)
			if err != nil {
				return err
			}
			idx[j], ks[j] = i, kinds[i]
			if kinds[i] == kindText {
				// Ordered by its collation weight.
				if w := m.orderWeight[j]; w > 0 {
					idx[j], ks[j] = vis+w-1, kindBinary
				} else {
					return unsupported("ORDER BY the text %s across shards (an aggregate or an expression with markers: its order is the database collation's)", rows.Columns[i])
				}
			}
		}
		var cmpErr error
		slices.SortStableFunc(rows.Values, func(a, b []any) int {
			for j, i := range idx {
				c, err := compareVals(a[i], b[i], ks[j])
				if err != nil {
					cmpErr = err
					return 0
				}
				if m.order[j].desc {
					c = -c
				}
				if c != 0 {
					return c
				}
			}
			return 0
		})
		if cmpErr != nil {
			return cmpErr
		}
	}
	if count >= 0 {
		n := int64(len(rows.Values))
		lo := min(offset, n)
		hi := min(lo+count, n)
		rows.Values = rows.Values[lo:hi]
	}
	if len(m.hidden) > 0 {
		rows.Columns = rows.Columns[:vis]
		if len(rows.Types) > vis {
			rows.Types = rows.Types[:vis]
		}
		for i, r := range rows.Values {
			rows.Values[i] = r[:vis]
		}
	}
	return nil
}

// average is sum / count as the database gives AVG: NULL over no rows; a
// decimal with four more digits than the sum (div_precision_increment);
// a double when the units' averages were doubles (like is one of them).
func average(sum, count, like any) (any, error) {
	if sum == nil || count == nil {
		return nil, nil
	}
	n, err := toRat(count)
	if err != nil {
		return nil, err
	}
	if n.Sign() == 0 {
		return nil, nil
	}
	x, err := toRat(sum)
	if err != nil {
		return nil, err
	}
	q := new(big.Rat).Quo(x, n)
	if _, ok := like.(float64); ok {
		f, _ := q.Float64()
		return f, nil
	}
	if _, ok := sum.(float64); ok {
		f, _ := q.Float64()
		return f, nil
	}
	return []byte(q.FloatString(scale(sum) + 4)), nil
}

// groupKey is a row's key over cols: equal values give equal keys (a
// number by its exact value, whatever its form; text by its collation
// weight, in the column weights gives).
func groupKey(r []any, cols []int, kinds []colKind, weights map[int]int) (string, error) {
	var b strings.Builder
	for _, i := range cols {
		v := r[i]
		switch {
		case v == nil:
			b.WriteString("N;")
			continue
		case kinds[i] == kindText:
			w, ok := weights[i]
			if !ok || r[w] == nil {
				return "", unsupported("grouping or DISTINCT on a text aggregate or an expression with markers across shards (equality is the database collation's)")
			}
			s := text(r[w])
			b.WriteString("w" + strconv.Itoa(len(s)) + ":" + s)
		case kinds[i] == kindNumber:
			x, err := toRat(v)
			if err != nil {
				return "", err
			}
			b.WriteString("n" + x.RatString())
		default:
			s := text(v)
			b.WriteString("v" + strconv.Itoa(len(s)) + ":" + s)
		}
		b.WriteByte(';')
	}
	return b.String(), nil
}

// combine merges rows of the same group: COUNT and SUM add up, MIN and
// MAX compare; a group's other fields are its key's.
func (m *mergePlan) combine(in [][]any, keys []int, kinds []colKind, weights map[int]int, aggOf []string) ([][]any, error) {
	var order []string
	groups := map[string][]any{}
	for _, r := range in {
		k, err := groupKey(r, keys, kinds, weights)
		if err != nil {
			return nil, err
		}
		g, ok := groups[k]
		if !ok {
			groups[k] = slices.Clone(r)
			order = append(order, k)
			continue
		}
		for i, agg := range aggOf {
			if i >= len(r) {
				break
			}
			v, err := combineAgg(agg, g[i], r[i], kinds[i])
			if err != nil {
				return nil, err
			}
			g[i] = v
		}
	}
	out := make([][]any, 0, len(order))
	for _, k := range order {
		out = append(out, groups[k])
	}
	if len(out) == 0 && m.group == nil {
		// Aggregates over no rows at all: one row (COUNT 0, others NULL),
		// as one database answers.
		row := make([]any, len(aggOf))
		for i, agg := range aggOf {
			if agg == ast.AggFuncCount {
				row[i] = int64(0)
			}
		}
		out = append(out, row)
	}
	return out, nil
}

func combineAgg(agg string, a, b any, k colKind) (any, error) {
	switch agg {
	case ast.AggFuncCount, ast.AggFuncSum:
		if a == nil {
			return b, nil
		}
		if b == nil {
			return a, nil
		}
		x, err := toRat(a)
		if err != nil {
			return nil, err
		}
		y, err := toRat(b)
		if err != nil {
			return nil, err
		}
		s := new(big.Rat).Add(x, y)
		if s.IsInt() && s.Num().IsInt64() {
			if _, isInt := a.(int64); isInt || agg == ast.AggFuncCount {
				return s.Num().Int64(), nil
			}
		}
		return []byte(s.FloatString(max(scale(a), scale(b)))), nil
	case ast.AggFuncMin, ast.AggFuncMax:
		if a == nil {
			return b, nil
		}
		if b == nil {
			return a, nil
		}
		c, err := compareVals(a, b, k)
		if err != nil {
			return nil, err
		}
		if agg == ast.AggFuncMin && c > 0 || agg == ast.AggFuncMax && c < 0 {
			return b, nil
		}
		return a, nil
	}
	return a, nil
}

// scale is the digits after the point of a decimal's text form.
func scale(v any) int {
	s := text(v)
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}
