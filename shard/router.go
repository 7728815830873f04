package shard

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	"github.com/pingcap/tidb/pkg/parser/format"
	"github.com/pingcap/tidb/pkg/parser/opcode"
	"github.com/pingcap/tidb/pkg/parser/test_driver"
)

// ErrUnsupported marks SQL the router refuses because it cannot be sure
// of the answer across shards: the error names the construct. (A wrong
// answer is never an option.)
var ErrUnsupported = errors.New("shard: not supported")

// ErrSyntax marks a statement the parser could not read.
var ErrSyntax = errors.New("shard: syntax error")

// ErrUnknownTable marks a statement naming a table the rules do not
// place (and no defaultDataSource takes).
var ErrUnknownTable = errors.New("shard: unknown table")

func unsupported(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, a...))
}

// Unit is one statement for one data source.
type Unit struct {
	DataSource string `json:"data_source"`
	SQL        string `json:"sql"`
	Args       []any  `json:"args"`
}

// Routed is how one statement runs: its units, and whether their results
// are rows to merge (a query) or counts to add up.
type Routed struct {
	Units []Unit
	Query bool
	// Locking: a SELECT … FOR UPDATE or LOCK IN SHARE MODE (read from
	// the primary).
	Locking bool
	// merge (a query over several nodes) combines the units' rows;
	// offset and count are its LIMIT's window (count -1: none).
	merge         *mergePlan
	offset, count int64
	labels        []string
	// Keys are the keys generated for an INSERT's rows, in order (nil
	// when the statement gave them).
	Keys []int64
}

// Router plans statements (MySQL dialect, ? markers) over rules. Plans
// are cached by statement text; a Router is safe for concurrent use.
type Router struct {
	rules *Rules
	mu    sync.RWMutex
	cache map[string]*stmtPlan
}

// NewRouter returns a router over r.
func NewRouter(r *Rules) *Router { return &Router{rules: r, cache: map[string]*stmtPlan{}} }

var parsers = sync.Pool{New: func() any { return parser.New() }}

// maxPlans bounds the plan cache (statements are few; a churning text is
// not worth an LRU).
const maxPlans = 4096

// Route returns the units that run q with args.
func (r *Router) Route(q string, args []any) (*Routed, error) {
	p, err := r.plan(q)
	if err != nil {
		return nil, err
	}
	return p.route(args)
}

// Params checks q (parsed and planned, as Route would) and returns how
// many markers (?) it has: what a prepared statement reports.
func (r *Router) Params(q string) (int, error) {
	p, err := r.plan(q)
	if err != nil {
		return 0, err
	}
	return p.params, nil
}

func (r *Router) plan(q string) (*stmtPlan, error) {
	r.mu.RLock()
	p, ok := r.cache[q]
	r.mu.RUnlock()
	if ok {
		return p, nil
	}
	ps := parsers.Get().(*parser.Parser)
	stmts, _, err := ps.Parse(q, "", "")
	parsers.Put(ps)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	if len(stmts) != 1 {
		return nil, fmt.Errorf("shard: %d statements in one text: send them one at a time", len(stmts))
	}
	p, err = r.build(stmts[0])
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if len(r.cache) >= maxPlans {
		clear(r.cache)
	}
	r.cache[q] = p
	r.mu.Unlock()
	return p, nil
}

// stmtPlan is one parsed statement and what routing it needs.
type stmtPlan struct {
	r     *Rules
	stmt  ast.StmtNode
	query bool
	// table is the sharded table that decides the route (nil: the
	// statement touches no sharded table).
	table *Table
	// names are the statement's references to logical tables, rewritten
	// per node (bound tables follow table's node by position).
	names []*ast.TableName
	// where is the condition the route is read from.
	where ast.ExprNode
	// broadcast: every table is a broadcast table.
	broadcast bool
	// tableless: the statement names no table (SELECT 1, SELECT
	// @@version): any data source answers it.
	tableless bool
	// locking: SELECT … FOR UPDATE and its kin.
	locking bool
	// ddl: CREATE/ALTER/DROP/TRUNCATE TABLE, CREATE/DROP INDEX — sent to
	// every data node of the table.
	ddl bool
	// subWheres are the conditions of subqueries over sharded tables
	// that are not correlated on the sharding columns: each must route
	// to the statement's one node.
	subWheres []ast.ExprNode
	// unknown is the first table neither sharded nor broadcast.
	unknown string
	// insert: rows, each with the markers of its values.
	insert *ast.InsertStmt
	// markers: the statement's markers in text order (argument i is the
	// i-th).
	markers map[*test_driver.ParamMarkerExpr]int
	params  int
	// labels are a SELECT's column names as the text spelled them, by
	// column ("": the data source's name stands): MySQL names an
	// unaliased expression by its text, which a rewrite respells.
	labels []string
	// merge is how a SELECT's rows from several nodes combine (mergeErr:
	// why they cannot — a SELECT routed to one node runs anyway).
	merge    *mergePlan
	mergeErr error

	mu sync.Mutex // guards the AST while a rewrite restores it
	// texts caches the statement's text per node where it does not
	// depend on the arguments (no LIMIT rewritten from them): node (""
	// for an unsharded statement) → text.
	texts sync.Map
}

func (r *Router) build(stmt ast.StmtNode) (*stmtPlan, error) {
	p := &stmtPlan{r: r.rules, stmt: stmt}
	var offs []*test_driver.ParamMarkerExpr
	var names []*ast.TableName
	var sub bool
	var subs []ast.Node // the subqueries' statements
	stmt.Accept(&visitor{enter: func(n ast.Node) {
		switch x := n.(type) {
		case *test_driver.ParamMarkerExpr:
			offs = append(offs, x)
		case *ast.TableName:
			names = append(names, x)
		case *ast.SubqueryExpr:
			sub = true
			subs = append(subs, x.Query)
		case *ast.ExistsSubqueryExpr:
			sub = true
		}
	}})
	slices.SortFunc(offs, func(a, b *test_driver.ParamMarkerExpr) int { return a.Offset - b.Offset })
	p.markers = make(map[*test_driver.ParamMarkerExpr]int, len(offs))
	for i, m := range offs {
		p.markers[m] = i
	}
	p.params = len(offs)

	switch st := stmt.(type) {
	case *ast.SelectStmt:
		p.query = true
		if st.With != nil {
			return nil, unsupported("a WITH clause")
		}
		p.where = st.Where
		p.locking = st.LockInfo != nil && st.LockInfo.LockType != ast.SelectLockNone
		p.labels = labels(st)
	case *ast.InsertStmt:
		switch {
		case st.Select != nil:
			return nil, unsupported("INSERT … SELECT")
		case st.Setlist:
			return nil, unsupported("INSERT … SET (use a column list and VALUES)")
		}
		p.insert = st
	case *ast.UpdateStmt:
		if st.With != nil {
			return nil, unsupported("a WITH clause")
		}
		p.where = st.Where
	case *ast.DeleteStmt:
		if st.With != nil {
			return nil, unsupported("a WITH clause")
		}
		if st.IsMultiTable {
			return nil, unsupported("DELETE from several tables")
		}
		p.where = st.Where
	case *ast.CreateTableStmt:
		switch {
		case st.ReferTable != nil:
			return nil, unsupported("CREATE TABLE … LIKE (give the columns)")
		case st.Select != nil:
			return nil, unsupported("CREATE TABLE … SELECT")
		}
		for _, c := range st.Constraints {
			if c.Tp == ast.ConstraintForeignKey {
				return nil, unsupported("a FOREIGN KEY in a sharded schema (each shard's rows refer within it only)")
			}
		}
		p.ddl = true
	case *ast.DropTableStmt:
		if len(st.Tables) != 1 || st.IsView {
			return nil, unsupported("DROP of several tables, or of a view, in one statement (drop them one at a time)")
		}
		p.ddl = true
	case *ast.TruncateTableStmt, *ast.CreateIndexStmt, *ast.DropIndexStmt:
		p.ddl = true
	case *ast.AlterTableStmt:
		for _, sp := range st.Specs {
			switch sp.Tp {
			case ast.AlterTableRenameTable:
				return nil, unsupported("ALTER TABLE … RENAME (the logical name is the rules')")
			case ast.AlterTableAddConstraint:
				if sp.Constraint != nil && sp.Constraint.Tp == ast.ConstraintForeignKey {
					return nil, unsupported("a FOREIGN KEY in a sharded schema (each shard's rows refer within it only)")
				}
			}
		}
		p.ddl = true
	case *ast.SetOprStmt:
		return nil, unsupported("UNION, EXCEPT and INTERSECT")
	default:
		return nil, unsupported("the statement %s", stmtName(stmt))
	}

	var sharded []*ast.TableName
	broadcastOnly := len(names) > 0
	for _, tn := range names {
		name := tn.Name.L
		switch {
		case p.r.Table(name) != nil:
			sharded = append(sharded, tn)
			broadcastOnly = false
			// A logical table's schema (sharding_db.t_order) is the
			// rules': each node's table is in its data source's.
			tn.Schema = ast.CIStr{}
		case p.r.Broadcast(name):
			tn.Schema = ast.CIStr{}
		default:
			broadcastOnly = false
			if p.unknown == "" {
				p.unknown = tn.Name.O
			}
		}
	}
	p.broadcast = broadcastOnly
	p.tableless = len(names) == 0
	if len(sharded) == 0 {
		return p, nil
	}
	first := p.r.Table(sharded[0].Name.L)
	if sub {
		if err := p.planSubqueries(subs, first); err != nil {
			return nil, err
		}
	}
	for _, tn := range sharded[1:] {
		if tn.Name.L != first.Name && !p.r.Bound(first.Name, tn.Name.L) {
			return nil, unsupported("a join of %s and %s, which are not bound (declare them in bindingTables if they are sharded alike)", first.Name, tn.Name.L)
		}
	}
	for _, tn := range names {
		if p.r.Table(tn.Name.L) == nil && !p.r.Broadcast(tn.Name.L) {
			return nil, unsupported("a join of the sharded table %s with %s, which is neither bound to it nor a broadcast table", first.Name, tn.Name.O)
		}
	}
	p.table, p.names = first, sharded
	if sel, ok := stmt.(*ast.SelectStmt); ok {
		p.merge, p.mergeErr = p.buildMerge(sel)
	}
	if st, ok := stmt.(*ast.UpdateStmt); ok {
		for _, a := range st.List {
			c := a.Column.Name.L
			if slices.Contains(first.shardingColumns(), c) {
				return nil, unsupported("UPDATE of %s, a sharding column of %s (the row would belong elsewhere: delete and insert it)", c, first.Name)
			}
		}
	}
	return p, nil
}

// labels returns the names a SELECT's columns must have where a
// rewrite would change them: unaliased expressions other than columns
// and literals, up to the first wildcard (whose width is the table's).
func labels(st *ast.SelectStmt) []string {
	if st.Fields == nil {
		return nil
	}
	var out []string
	some := false
	for _, f := range st.Fields.Fields {
		if f.WildCard != nil {
			break
		}
		l := ""
		switch f.Expr.(type) {
		case *ast.ColumnNameExpr, *test_driver.ValueExpr, *test_driver.ParamMarkerExpr:
		default:
			if f.AsName.L == "" {
				l = strings.TrimSpace(f.Text())
				some = some || l != ""
			}
		}
		out = append(out, l)
	}
	if !some {
		return nil
	}
	return out
}

// relabel names columns as the statement's text did.
func (rd *Routed) relabel(cols []string) {
	for i, l := range rd.labels {
		if l != "" && i < len(cols) {
			cols[i] = l
		}
	}
}

// planSubqueries checks the subqueries of a statement over the sharded
// table t (all its sharded tables are t or bound to it, checked after).
// A subquery over broadcast or unsharded tables only runs anywhere. One
// over a sharded table is exact when it is correlated with the outer
// query on every sharding column (rows meet within a node pair), or when
// the statement and the subquery route to the same single node: those
// conditions are kept for route.
func (p *stmtPlan) planSubqueries(subs []ast.Node, t *Table) error {
	for _, q := range subs {
		sel, ok := q.(*ast.SelectStmt)
		if !ok {
			return unsupported("a UNION inside a subquery over a sharded table")
		}
		shardedHere := false
		sel.Accept(&visitor{enter: func(n ast.Node) {
			if tn, ok := n.(*ast.TableName); ok && p.r.Table(tn.Name.L) != nil {
				shardedHere = true
			}
		}})
		if !shardedHere {
			continue
		}
		if correlatedOn(sel.Where, t.shardingColumns()) {
			continue
		}
		if sel.Where == nil {
			return unsupported("a subquery over a sharded table without a condition on %s (it would need every node's rows)", strings.Join(t.shardingColumns(), ", "))
		}
		p.subWheres = append(p.subWheres, sel.Where)
	}
	return nil
}

// correlatedOn reports whether where's AND-chain equates, for every
// column of cols, two references to that column (inner = outer.col).
func correlatedOn(where ast.ExprNode, cols []string) bool {
	if where == nil || len(cols) == 0 {
		return false
	}
	found := map[string]bool{}
	var walk func(e ast.ExprNode)
	walk = func(e ast.ExprNode) {
		switch x := e.(type) {
		case *ast.ParenthesesExpr:
			walk(x.Expr)
		case *ast.BinaryOperationExpr:
			switch x.Op {
			case opcode.LogicAnd:
				walk(x.L)
				walk(x.R)
			case opcode.EQ:
				l, lok := x.L.(*ast.ColumnNameExpr)
				r, rok := x.R.(*ast.ColumnNameExpr)
				if lok && rok && l.Name.Name.L == r.Name.Name.L && l.Name.Table.L != r.Name.Table.L {
					found[l.Name.Name.L] = true
				}
			}
		}
	}
	walk(where)
	for _, c := range cols {
		if !found[c] {
			return false
		}
	}
	return true
}

// stmtName is a statement's kind in words: *ast.CreateDatabaseStmt is
// CREATE DATABASE.
func stmtName(stmt ast.StmtNode) string {
	n := strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%T", stmt), "*ast."), "Stmt")
	var b strings.Builder
	for i, r := range n {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// checkSplittable refuses an UPDATE or DELETE with LIMIT over several
// nodes: each would apply the limit of its own.
func checkSplittable(stmt ast.StmtNode) error {
	switch st := stmt.(type) {
	case *ast.UpdateStmt:
		if st.Limit != nil {
			return unsupported("UPDATE … LIMIT across shards")
		}
	case *ast.DeleteStmt:
		if st.Limit != nil {
			return unsupported("DELETE … LIMIT across shards")
		}
	}
	return nil
}

func (t *Table) shardingColumns() []string {
	var out []string
	for _, s := range []*strategy{t.db, t.tbl} {
		if s != nil {
			out = append(out, s.columns...)
		}
	}
	return out
}

// Describe returns a SELECT's statement for one node (the table's
// first, or where its route goes) with LIMIT 0 and a NULL for each of
// its markers: what a data source answers with the result's columns and
// no rows — a prepared statement's metadata before it runs. Its labels
// name the columns as the statement spells them.
func (r *Router) Describe(q string) (*Routed, error) {
	p, err := r.plan(q)
	if err != nil {
		return nil, err
	}
	sel, ok := p.stmt.(*ast.SelectStmt)
	if !ok {
		return nil, fmt.Errorf("shard: describe: not a SELECT")
	}
	var ds string
	var node *Node
	switch {
	case p.table != nil:
		node = &p.table.Nodes[0]
		ds = node.DataSource
	case p.broadcast || p.tableless && p.r.DefaultDataSource() == "":
		ds = p.r.DataSourceNames()[0]
	case p.r.DefaultDataSource() == "":
		return nil, fmt.Errorf("%w %s: it is not in the rules, and they name no defaultDataSource", ErrUnknownTable, p.unknown)
	default:
		ds = p.r.DefaultDataSource()
	}
	// Read the LIMIT under the plan's lock: a concurrent restoreWith
	// swaps it for a moment.
	inLimit := 0
	p.mu.Lock()
	if sel.Limit != nil {
		inLimit = len(markersIn(sel.Limit))
	}
	p.mu.Unlock()
	text, err := p.restoreWith(node, restoreOpts{limit: &sel.Limit, to: &ast.Limit{Count: ast.NewValueExpr(0, "", "")}})
	if err != nil {
		return nil, err
	}
	return &Routed{Query: true, labels: p.labels, Units: []Unit{{DataSource: ds, SQL: text, Args: make([]any, p.params-inLimit)}}}, nil
}

// markersIn returns the markers under n.
func markersIn(n ast.Node) []*test_driver.ParamMarkerExpr {
	var out []*test_driver.ParamMarkerExpr
	n.Accept(&visitor{enter: func(x ast.Node) {
		if m, ok := x.(*test_driver.ParamMarkerExpr); ok {
			out = append(out, m)
		}
	}})
	return out
}

// route computes the units for one execution.
func (p *stmtPlan) route(args []any) (*Routed, error) {
	if len(args) != p.params {
		return nil, fmt.Errorf("shard: the statement has %d markers and %d arguments", p.params, len(args))
	}
	out := &Routed{Query: p.query, Locking: p.locking, labels: p.labels}
	if p.table == nil {
		text, err := p.cached("", func() (string, error) { return p.restore(nil, nil) })
		if err != nil {
			return nil, err
		}
		switch {
		case p.broadcast && !p.query:
			for _, ds := range p.r.DataSourceNames() {
				out.Units = append(out.Units, Unit{DataSource: ds, SQL: text, Args: args})
			}
		case p.broadcast:
			out.Units = []Unit{{DataSource: p.r.DataSourceNames()[0], SQL: text, Args: args}}
		case p.tableless && p.r.DefaultDataSource() == "":
			out.Units = []Unit{{DataSource: p.r.DataSourceNames()[0], SQL: text, Args: args}}
		default:
			if p.r.DefaultDataSource() == "" {
				return nil, fmt.Errorf("%w %s: it is not in the rules, and they name no defaultDataSource", ErrUnknownTable, p.unknown)
			}
			out.Units = []Unit{{DataSource: p.r.DefaultDataSource(), SQL: text, Args: args}}
		}
		return out, nil
	}
	if p.insert != nil {
		return p.routeInsert(args)
	}
	conds, err := p.conditions(args)
	if err != nil {
		return nil, err
	}
	nodes, err := p.table.Route(conds, nil)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 && p.query {
		// No row can match (an empty range): one node still answers,
		// with the result's columns (and COUNT's 0).
		nodes = p.table.Nodes[:1]
	}
	for _, w := range p.subWheres {
		sc, err := p.conditionsOf(w, args)
		if err != nil {
			return nil, err
		}
		sn, err := p.table.Route(sc, nil)
		if err != nil {
			return nil, err
		}
		if len(nodes) != 1 || len(sn) != 1 || sn[0] != nodes[0] {
			where := fmt.Sprintf("the statement reaches %d nodes, its subquery %d", len(nodes), len(sn))
			if len(nodes) == 1 && len(sn) == 1 {
				where = fmt.Sprintf("the statement reaches %s, its subquery %s", nodes[0], sn[0])
			}
			return nil, unsupported("a subquery over a sharded table across shards (%s): give both the same sharding values, or correlate the subquery on %s", where, strings.Join(p.table.shardingColumns(), ", "))
		}
	}
	unitArgs := args
	var limit **ast.Limit
	var unitLimit *ast.Limit
	var fields *[]*ast.SelectField // the units' select list, with the hidden fields
	var extra []*ast.SelectField
	if len(nodes) > 1 {
		if sel, ok := p.stmt.(*ast.SelectStmt); ok {
			if p.mergeErr != nil {
				return nil, p.mergeErr
			}
			out.merge = p.merge
			if out.offset, out.count, err = p.merge.window(p, args); err != nil {
				return nil, err
			}
			if len(p.merge.hidden) > 0 {
				fields, extra = &sel.Fields.Fields, p.merge.hidden
			}
			if p.merge.limit != nil {
				// The units run without the statement's LIMIT, or with
				// the rows up to the window's end; its markers' arguments
				// go with it.
				limit, unitLimit = &sel.Limit, p.merge.unitLimit(out.offset, out.count)
				unitArgs = make([]any, 0, len(args))
				for i, a := range args {
					if !slices.Contains(p.merge.limitMarkers, i) {
						unitArgs = append(unitArgs, a)
					}
				}
			}
		} else if err := checkSplittable(p.stmt); err != nil {
			return nil, err
		}
	}
	for _, n := range nodes {
		restore := func() (string, error) {
			return p.restoreWith(&n, restoreOpts{limit: limit, to: unitLimit, fields: fields, extra: extra})
		}
		var text string
		if limit == nil {
			// The text depends on the node alone (and on whether the
			// merge's hidden fields are added: on the node count).
			key := n.DataSource + "." + n.Table
			if fields != nil {
				key += "+"
			}
			text, err = p.cached(key, restore)
		} else {
			text, err = restore()
		}
		if err != nil {
			return nil, err
		}
		out.Units = append(out.Units, Unit{DataSource: n.DataSource, SQL: text, Args: unitArgs})
	}
	return out, nil
}

// routeInsert sends each row to its node: one INSERT per node, with that
// node's rows in their order.
func (p *stmtPlan) routeInsert(args []any) (*Routed, error) {
	st := p.insert
	cols := make([]string, len(st.Columns))
	for i, c := range st.Columns {
		cols[i] = c.Name.L
	}
	if len(cols) == 0 {
		return nil, unsupported("INSERT into the sharded table %s without a column list", p.table.Name)
	}
	var order []Node
	rows := map[Node][]int{}
	keyCol := p.table.KeyColumn()
	generate := keyCol != "" && !slices.Contains(cols, keyCol)
	var keys []int64
	for i, row := range st.Lists {
		if len(row) != len(cols) {
			return nil, fmt.Errorf("shard: INSERT row %d has %d values for %d columns", i+1, len(row), len(cols))
		}
		conds := map[string]Cond{}
		if generate && !p.table.key.seed {
			id, err := p.table.key.generate(nil)
			if err != nil {
				return nil, fmt.Errorf("shard: %s key: %w", p.table.Name, err)
			}
			keys = append(keys, id)
			conds[keyCol] = Cond{Values: []Value{Int(id)}}
		}
		for _, c := range p.table.shardingColumns() {
			if _, given := conds[c]; given || generate && c == keyCol {
				continue
			}
			j := slices.Index(cols, c)
			if j < 0 {
				return nil, fmt.Errorf("shard: INSERT into %s must give %s (a sharding column)", p.table.Name, c)
			}
			v, ok, err := p.value(row[j], args)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, unsupported("INSERT into %s with an expression for its sharding column %s (give a value)", p.table.Name, c)
			}
			conds[c] = Cond{Values: []Value{v}}
		}
		var nodes []Node
		var err error
		if generate && p.table.key.seed {
			n, err := p.table.seedNode(conds)
			if err != nil {
				return nil, err
			}
			id, err := p.table.key.generate(&n)
			if err != nil {
				return nil, err
			}
			keys = append(keys, id)
			nodes = []Node{n}
		} else if nodes, err = p.table.Route(conds, nil); err != nil {
			return nil, err
		}
		if len(nodes) != 1 {
			return nil, fmt.Errorf("shard: INSERT row %d of %s routes to %d nodes, want one", i+1, p.table.Name, len(nodes))
		}
		if _, seen := rows[nodes[0]]; !seen {
			order = append(order, nodes[0])
		}
		rows[nodes[0]] = append(rows[nodes[0]], i)
	}
	out := &Routed{Keys: keys}
	for _, n := range order {
		o := restoreOpts{rows: rows[n]}
		if generate {
			o.keyCol, o.keys = keyCol, keys
		}
		text, err := p.restoreWith(&n, o)
		if err != nil {
			return nil, err
		}
		var a []any
		if len(order) == 1 {
			a = args
		} else {
			for _, i := range rows[n] {
				a = append(a, p.rowArgs(st.Lists[i], args)...)
			}
			// Markers outside VALUES (ON DUPLICATE KEY UPDATE) follow.
			a = append(a, p.tailArgs(args)...)
		}
		out.Units = append(out.Units, Unit{DataSource: n.DataSource, SQL: text, Args: a})
	}
	return out, nil
}

func (p *stmtPlan) rowArgs(row []ast.ExprNode, args []any) []any {
	var idx []int
	for _, e := range row {
		e.Accept(&visitor{enter: func(n ast.Node) {
			if m, ok := n.(*test_driver.ParamMarkerExpr); ok {
				idx = append(idx, p.markers[m])
			}
		}})
	}
	slices.Sort(idx)
	out := make([]any, len(idx))
	for i, j := range idx {
		out[i] = args[j]
	}
	return out
}

// tailArgs are the arguments of an INSERT's markers after its VALUES.
func (p *stmtPlan) tailArgs(args []any) []any {
	var idx []int
	for _, a := range p.insert.OnDuplicate {
		a.Accept(&visitor{enter: func(n ast.Node) {
			if m, ok := n.(*test_driver.ParamMarkerExpr); ok {
				idx = append(idx, p.markers[m])
			}
		}})
	}
	slices.Sort(idx)
	out := make([]any, len(idx))
	for i, j := range idx {
		out[i] = args[j]
	}
	return out
}

// restore writes the statement for node n (nil: as it is), with only the
// rows listed (INSERT; nil: all).
func (p *stmtPlan) restore(n *Node, rows []int) (string, error) {
	return p.restoreWith(n, restoreOpts{rows: rows})
}

// cached returns the text under key, restoring it once.
func (p *stmtPlan) cached(key string, restore func() (string, error)) (string, error) {
	if t, ok := p.texts.Load(key); ok {
		return t.(string), nil
	}
	t, err := restore()
	if err != nil {
		return "", err
	}
	p.texts.Store(key, t)
	return t, nil
}

// restoreOpts change a statement for one unit besides its table names.
type restoreOpts struct {
	rows   []int               // an INSERT's rows to keep (nil: all)
	limit  **ast.Limit         // when set: the LIMIT, replaced by to
	to     *ast.Limit          //
	fields *[]*ast.SelectField // when set: the select list, with extra after it
	extra  []*ast.SelectField
	keyCol string  // an INSERT's generated key column ("" none)
	keys   []int64 // its value for each row of the statement
}

// restoreWith is restore changed as o says.
func (p *stmtPlan) restoreWith(n *Node, o restoreOpts) (string, error) {
	rows := o.rows
	p.mu.Lock()
	defer p.mu.Unlock()
	if o.fields != nil {
		fields, saved := o.fields, *o.fields
		*fields = append(slices.Clip(saved), o.extra...)
		defer func() { *fields = saved }()
	}
	if o.limit != nil {
		limit, saved := o.limit, *o.limit
		*limit = o.to
		defer func() { *limit = saved }()
	}
	if o.keyCol != "" && p.insert != nil {
		st := p.insert
		cols, lists := st.Columns, st.Lists
		st.Columns = append(slices.Clip(cols), &ast.ColumnName{Name: ast.NewCIStr(o.keyCol)})
		st.Lists = make([][]ast.ExprNode, len(lists))
		for i, r := range lists {
			st.Lists[i] = append(slices.Clip(r), ast.NewValueExpr(o.keys[i], "", ""))
		}
		defer func() { st.Columns, st.Lists = cols, lists }()
	}
	if n != nil {
		saved := make([]ast.CIStr, len(p.names))
		for i, tn := range p.names {
			saved[i] = tn.Name
			tn.Name = ast.NewCIStr(p.physical(tn.Name.L, *n))
		}
		defer func() {
			for i, tn := range p.names {
				tn.Name = saved[i]
			}
		}()
	}
	if rows != nil && p.insert != nil && len(rows) != len(p.insert.Lists) {
		all := p.insert.Lists
		sub := make([][]ast.ExprNode, len(rows))
		for i, r := range rows {
			sub[i] = all[r]
		}
		p.insert.Lists = sub
		defer func() { p.insert.Lists = all }()
	}
	var sb strings.Builder
	if err := p.stmt.Restore(format.NewRestoreCtx(format.DefaultRestoreFlags|format.RestoreStringWithoutCharset, &sb)); err != nil {
		return "", fmt.Errorf("shard: restore: %w", err)
	}
	return sb.String(), nil
}

// physical is the table of logical table name at node n of the plan's
// table: the node itself, or a bound table's node at the same position.
func (p *stmtPlan) physical(name string, n Node) string {
	if name == p.table.Name {
		return n.Table
	}
	bt := p.r.Table(name)
	i := slices.Index(p.table.tables[n.DataSource], n.Table)
	if bt == nil || i < 0 || i >= len(bt.tables[n.DataSource]) {
		return name
	}
	return bt.tables[n.DataSource][i]
}

// conditions reads the route's conditions from the WHERE clause: the
// conjuncts that compare a sharding column of the table with a value
// (=, IN, BETWEEN, <, <=, >, >=). Anything under an OR, a NOT or a
// function is ignored — the route only widens.
func (p *stmtPlan) conditions(args []any) (map[string]Cond, error) {
	return p.conditionsOf(p.where, args)
}

// conditionsOf reads the sharding columns' conditions of where.
func (p *stmtPlan) conditionsOf(where ast.ExprNode, args []any) (map[string]Cond, error) {
	conds := map[string]Cond{}
	if where == nil {
		return conds, nil
	}
	cols := p.table.shardingColumns()
	var walk func(e ast.ExprNode) error
	add := func(col string, c Cond) {
		prev, ok := conds[col]
		if !ok {
			conds[col] = c
			return
		}
		// Both hold: keep the narrower (values beat a range).
		if len(prev.Values) == 0 && len(c.Values) > 0 {
			conds[col] = c
		} else if len(prev.Values) > 0 && len(c.Values) > 0 {
			var both []Value
			for _, v := range prev.Values {
				for _, w := range c.Values {
					if n, err := compare(v, w); err == nil && n == 0 {
						both = append(both, v)
						break
					}
				}
			}
			conds[col] = Cond{Values: both}
			if len(both) == 0 {
				// No row can match: any single target answers (empty).
				conds[col] = Cond{Values: prev.Values[:1]}
			}
		} else if len(prev.Values) == 0 && len(c.Values) == 0 {
			if c.Lo != nil && (prev.Lo == nil || tighter(c.Lo, prev.Lo, 1)) {
				prev.Lo = c.Lo
			}
			if c.Hi != nil && (prev.Hi == nil || tighter(c.Hi, prev.Hi, -1)) {
				prev.Hi = c.Hi
			}
			conds[col] = prev
		}
	}
	col := func(e ast.ExprNode) string {
		if c, ok := e.(*ast.ColumnNameExpr); ok && slices.Contains(cols, c.Name.Name.L) {
			return c.Name.Name.L
		}
		return ""
	}
	walk = func(e ast.ExprNode) error {
		switch x := e.(type) {
		case *ast.ParenthesesExpr:
			return walk(x.Expr)
		case *ast.BinaryOperationExpr:
			switch x.Op {
			case opcode.LogicAnd:
				if err := walk(x.L); err != nil {
					return err
				}
				return walk(x.R)
			case opcode.EQ, opcode.LT, opcode.LE, opcode.GT, opcode.GE:
				op, l, r := x.Op, x.L, x.R
				c := col(l)
				if c == "" {
					if c = col(r); c == "" {
						return nil
					}
					l, r = r, l
					op = map[opcode.Op]opcode.Op{opcode.EQ: opcode.EQ, opcode.LT: opcode.GT, opcode.LE: opcode.GE, opcode.GT: opcode.LT, opcode.GE: opcode.LE}[op]
				}
				v, ok, err := p.value(r, args)
				if err != nil || !ok {
					return err
				}
				switch op {
				case opcode.EQ:
					add(c, Cond{Values: []Value{v}})
				case opcode.LT, opcode.LE:
					add(c, Cond{Hi: &Bound{V: v, Inclusive: op == opcode.LE}})
				default:
					add(c, Cond{Lo: &Bound{V: v, Inclusive: op == opcode.GE}})
				}
			}
		case *ast.PatternInExpr:
			c := col(x.Expr)
			if c == "" || x.Not || x.Sel != nil {
				return nil
			}
			var vals []Value
			for _, it := range x.List {
				v, ok, err := p.value(it, args)
				if err != nil {
					return err
				}
				if !ok {
					return nil
				}
				vals = append(vals, v)
			}
			add(c, Cond{Values: vals})
		case *ast.BetweenExpr:
			c := col(x.Expr)
			if c == "" || x.Not {
				return nil
			}
			lo, ok1, err := p.value(x.Left, args)
			if err != nil {
				return err
			}
			hi, ok2, err := p.value(x.Right, args)
			if err != nil {
				return err
			}
			if ok1 && ok2 {
				add(c, Cond{Lo: &Bound{V: lo, Inclusive: true}, Hi: &Bound{V: hi, Inclusive: true}})
			}
		}
		return nil
	}
	if err := walk(where); err != nil {
		return nil, err
	}
	return conds, nil
}

// tighter reports whether bound a is tighter than b: for a lower bound
// (dir 1) the greater, for an upper bound (dir -1) the smaller.
func tighter(a, b *Bound, dir int) bool {
	n, err := compare(a.V, b.V)
	if err != nil {
		return false
	}
	return n*dir > 0 || n == 0 && !a.Inclusive && b.Inclusive
}

// value is the value of a literal or a marker (ok false: an expression).
func (p *stmtPlan) value(e ast.ExprNode, args []any) (Value, bool, error) {
	switch x := e.(type) {
	case *test_driver.ParamMarkerExpr:
		v, err := ValueOf(args[p.markers[x]])
		if err != nil {
			return Value{}, false, err
		}
		return v, true, nil
	case *test_driver.ValueExpr:
		switch y := x.GetValue().(type) {
		case int64, string, []byte, uint64:
			v, err := ValueOf(y)
			return v, err == nil, err
		case fmt.Stringer:
			return Text(y.String()), true, nil
		}
	}
	return Value{}, false, nil
}

// visitor calls enter on every node.
type visitor struct{ enter func(ast.Node) }

func (v *visitor) Enter(n ast.Node) (ast.Node, bool) { v.enter(n); return n, false }
func (v *visitor) Leave(n ast.Node) (ast.Node, bool) { return n, true }
