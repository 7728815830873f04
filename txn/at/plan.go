package at

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	"github.com/pingcap/tidb/pkg/parser/format"
	"github.com/pingcap/tidb/pkg/parser/test_driver"
)

// kind is what a statement does, as far as undo images go.
type kind uint8

const (
	passThrough     kind = iota // not a write: runs as it is
	update                      // UPDATE of one table
	del                         // DELETE from one table
	insert                      // INSERT … VALUES into one table
	selectForUpdate             // SELECT … FOR UPDATE of one table
)

func (k kind) String() string {
	return [...]string{"other", "update", "delete", "insert", "select for update"}[k]
}

// plan is what AT mode needs to know of one statement text: its table,
// its condition (restored as SQL with ? markers, and which arguments
// those markers are) and, for an INSERT, its columns and values.
type plan struct {
	kind  kind
	table string // lower-case name without schema: the lock key's prefix
	// schema and name locate the table's primary key; tableSQL names it
	// in undo statements.
	schema, name, tableSQL string
	// from is the table reference restored for image queries (with its
	// schema and alias), qual what to qualify columns with there.
	from, qual string
	where      string // the condition ("" none)
	whereArgs  []int  // the statement's argument of each marker in where
	tail       string // ORDER BY … LIMIT … of a MySQL UPDATE or DELETE
	tailArgs   []int
	setCols    []string // update: the columns assigned (as the database names them)
	cols       []string // insert: the column list
	rows       [][]operand
	params     int // markers in the statement
}

// operand is one value of an inserted row: an argument, a literal, or an
// expression AT mode cannot evaluate (its column cannot identify the row).
type operand struct {
	arg  int // ≥ 0: the statement's argument
	lit  any // a literal, when arg < 0 and known
	expr bool
}

// errUnsupported names a construct AT mode refuses (rather than record a
// wrong undo image).
var errUnsupported = errors.New("not supported in AT mode")

func unsupported(format string, a ...any) error {
	return fmt.Errorf("txn/at: %s: %w", fmt.Sprintf(format, a...), errUnsupported)
}

// firstWord returns a statement's first keyword, lower-cased, skipping
// blanks and comments: most statements are classified without parsing.
func firstWord(q string) string {
	for {
		q = strings.TrimLeft(q, " \t\r\n(")
		switch {
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q, "*/")
			if i < 0 {
				return ""
			}
			q = q[i+2:]
			continue
		case strings.HasPrefix(q, "--"), strings.HasPrefix(q, "#"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
			continue
		}
		break
	}
	end := strings.IndexFunc(q, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') })
	if end < 0 {
		end = len(q)
	}
	return strings.ToLower(q[:end])
}

// mayWrite reports whether q needs a plan: a DML statement, or a SELECT
// that locks (FOR UPDATE).
func mayWrite(q string) bool {
	switch firstWord(q) {
	case "insert", "update", "delete", "replace", "with", "merge":
		return true
	case "select":
		return containsFold(q, "for update")
	}
	return false
}

func containsFold(s, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if strings.EqualFold(s[i:i+n], sub) {
			return true
		}
	}
	return false
}

var parsers = sync.Pool{New: func() any { return parser.New() }}

// planner parses and caches plans by statement text. PostgreSQL's $n
// markers are read as ? (in the order they appear) and mapped back to
// their arguments.
type planner struct {
	pg    bool
	mu    sync.RWMutex
	cache map[string]*plan
	max   int
}

func newPlanner(pg bool) *planner {
	return &planner{pg: pg, cache: make(map[string]*plan), max: 4096}
}

// get returns q's plan (passThrough for statements that write nothing).
func (p *planner) get(q string) (*plan, error) {
	if !mayWrite(q) {
		return &plan{kind: passThrough}, nil
	}
	p.mu.RLock()
	pl, ok := p.cache[q]
	p.mu.RUnlock()
	if ok {
		return pl, nil
	}
	pl, err := p.parse(q)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if len(p.cache) >= p.max {
		clear(p.cache) // statements are few; one that churns is not worth an LRU
	}
	p.cache[q] = pl
	p.mu.Unlock()
	return pl, nil
}

func (p *planner) parse(q string) (*plan, error) {
	text, argOf := q, []int(nil)
	if p.pg {
		var err error
		if text, argOf, err = dollarToMarks(q); err != nil {
			return nil, err
		}
	}
	ps := parsers.Get().(*parser.Parser)
	stmt, err := ps.ParseOneStmt(text, "", "")
	parsers.Put(ps)
	if err != nil {
		return nil, fmt.Errorf("txn/at: parse the statement for its undo images: %w", err)
	}
	b := &builder{pg: p.pg, argOf: argOf}
	b.order(stmt)
	pl, err := b.build(stmt)
	if err != nil {
		return nil, err
	}
	pl.params = len(b.offsets)
	return pl, nil
}

// dollarToMarks turns $1…$n outside quotes into ?, returning the
// argument index of each ? in order.
func dollarToMarks(q string) (string, []int, error) {
	var out strings.Builder
	var argOf []int
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch c {
		case '\'', '"':
			j := i + 1
			for j < len(q) && !(q[j] == c && (j+1 >= len(q) || q[j+1] != c)) {
				if q[j] == c { // doubled quote
					j++
				}
				j++
			}
			if j >= len(q) {
				return "", nil, fmt.Errorf("txn/at: unterminated quote at byte %d", i)
			}
			out.WriteString(q[i : j+1])
			i = j
			continue
		case '$':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			if j > i+1 {
				n, err := strconv.Atoi(q[i+1 : j])
				if err != nil || n < 1 {
					return "", nil, fmt.Errorf("txn/at: placeholder %s: want $1 or above", q[i:j])
				}
				argOf = append(argOf, n-1)
				out.WriteByte('?')
				i = j - 1
				continue
			}
		}
		out.WriteByte(c)
	}
	return out.String(), argOf, nil
}

// builder turns one parsed statement into a plan.
type builder struct {
	pg      bool
	argOf   []int       // PostgreSQL: marker order → argument
	offsets map[int]int // marker offset in the text → its order
}

// order numbers every marker of the statement by its position.
func (b *builder) order(n ast.Node) {
	var offs []int
	n.Accept(&visitor{enter: func(n ast.Node) {
		if m, ok := n.(*test_driver.ParamMarkerExpr); ok {
			offs = append(offs, m.Offset)
		}
	}})
	slices.Sort(offs)
	b.offsets = make(map[int]int, len(offs))
	for i, o := range offs {
		b.offsets[o] = i
	}
}

// args lists the statement arguments of the markers under n, in the
// order they appear in the text.
func (b *builder) args(n ast.Node) []int {
	var offs []int
	n.Accept(&visitor{enter: func(n ast.Node) {
		if m, ok := n.(*test_driver.ParamMarkerExpr); ok {
			offs = append(offs, m.Offset)
		}
	}})
	slices.Sort(offs)
	out := make([]int, len(offs))
	for i, o := range offs {
		out[i] = b.arg(b.offsets[o])
	}
	return out
}

func (b *builder) arg(order int) int {
	if b.argOf != nil {
		if order < len(b.argOf) {
			return b.argOf[order]
		}
		return -1
	}
	return order
}

func (b *builder) flags() format.RestoreFlags {
	if b.pg {
		return format.RestoreStringSingleQuotes | format.RestoreKeyWordUppercase | format.RestoreNameLowercase | format.RestoreNameDoubleQuotes |
			format.RestoreStringWithoutCharset
	}
	return format.DefaultRestoreFlags | format.RestoreStringWithoutCharset
}

func (b *builder) restore(n ast.Node) (string, error) {
	if n == nil {
		return "", nil
	}
	var sb strings.Builder
	if err := n.Restore(format.NewRestoreCtx(b.flags(), &sb)); err != nil {
		return "", fmt.Errorf("txn/at: restore: %w", err)
	}
	return sb.String(), nil
}

// name is a column or table name as the database knows it: PostgreSQL
// folds unquoted names to lower case.
func (b *builder) name(c ast.CIStr) string {
	if b.pg {
		return c.L
	}
	return c.O
}

// single returns the one table a statement's table references name.
func (b *builder) single(refs *ast.TableRefsClause, what string) (*ast.TableSource, *ast.TableName, error) {
	if refs == nil || refs.TableRefs == nil || refs.TableRefs.Right != nil {
		return nil, nil, unsupported("%s of several tables (a join)", what)
	}
	ts, ok := refs.TableRefs.Left.(*ast.TableSource)
	if !ok {
		return nil, nil, unsupported("%s of a nested join", what)
	}
	tn, ok := ts.Source.(*ast.TableName)
	if !ok {
		return nil, nil, unsupported("%s of a derived table", what)
	}
	return ts, tn, nil
}

func (b *builder) table(pl *plan, ts *ast.TableSource, tn *ast.TableName) error {
	pl.table = tn.Name.L
	pl.schema, pl.name = b.name(tn.Schema), b.name(tn.Name)
	pl.tableSQL = quote(b.pg, pl.name)
	if pl.schema != "" {
		pl.tableSQL = quote(b.pg, pl.schema) + "." + pl.tableSQL
	}
	var err error
	if pl.from, err = b.restore(ts); err != nil {
		return err
	}
	q := ts.AsName
	if q.L == "" {
		q = tn.Name
	}
	pl.qual = quote(b.pg, b.name(q))
	return nil
}

func (b *builder) build(stmt ast.StmtNode) (*plan, error) {
	pl := &plan{}
	var err error
	switch st := stmt.(type) {
	case *ast.UpdateStmt:
		if st.With != nil {
			return nil, unsupported("UPDATE with a WITH clause")
		}
		if st.MultipleTable {
			return nil, unsupported("UPDATE of several tables")
		}
		if st.IgnoreErr {
			return nil, unsupported("UPDATE IGNORE")
		}
		ts, tn, err := b.single(st.TableRefs, "UPDATE")
		if err != nil {
			return nil, err
		}
		pl.kind = update
		if err := b.table(pl, ts, tn); err != nil {
			return nil, err
		}
		for _, a := range st.List {
			pl.setCols = append(pl.setCols, b.name(a.Column.Name))
		}
		if err := b.cond(pl, st.Where, st.Order, st.Limit); err != nil {
			return nil, err
		}
	case *ast.DeleteStmt:
		if st.With != nil {
			return nil, unsupported("DELETE with a WITH clause")
		}
		if st.IsMultiTable {
			return nil, unsupported("DELETE from several tables")
		}
		if st.IgnoreErr {
			return nil, unsupported("DELETE IGNORE")
		}
		ts, tn, err := b.single(st.TableRefs, "DELETE")
		if err != nil {
			return nil, err
		}
		pl.kind = del
		if err := b.table(pl, ts, tn); err != nil {
			return nil, err
		}
		if err := b.cond(pl, st.Where, st.Order, st.Limit); err != nil {
			return nil, err
		}
	case *ast.InsertStmt:
		switch {
		case st.IsReplace:
			return nil, unsupported("REPLACE")
		case st.IgnoreErr:
			return nil, unsupported("INSERT IGNORE")
		case len(st.OnDuplicate) > 0:
			return nil, unsupported("INSERT … ON DUPLICATE KEY UPDATE")
		case st.Select != nil:
			return nil, unsupported("INSERT … SELECT")
		case st.Setlist:
			return nil, unsupported("INSERT … SET (use a column list and VALUES)")
		}
		ts, tn, err := b.single(st.Table, "INSERT")
		if err != nil {
			return nil, err
		}
		pl.kind = insert
		if err := b.table(pl, ts, tn); err != nil {
			return nil, err
		}
		if len(st.Columns) == 0 {
			return nil, unsupported("INSERT without a column list")
		}
		for _, c := range st.Columns {
			pl.cols = append(pl.cols, b.name(c.Name))
		}
		for i, row := range st.Lists {
			if len(row) != len(pl.cols) {
				return nil, fmt.Errorf("txn/at: INSERT row %d has %d values for %d columns", i+1, len(row), len(pl.cols))
			}
			ops := make([]operand, len(row))
			for j, e := range row {
				ops[j] = b.operand(e)
			}
			pl.rows = append(pl.rows, ops)
		}
	case *ast.SelectStmt:
		if st.LockInfo == nil || st.LockInfo.LockType != ast.SelectLockForUpdate && st.LockInfo.LockType != ast.SelectLockForUpdateNoWait &&
			st.LockInfo.LockType != ast.SelectLockForUpdateWaitN {
			return &plan{kind: passThrough}, nil
		}
		if st.With != nil {
			return nil, unsupported("SELECT … FOR UPDATE with a WITH clause")
		}
		ts, tn, err := b.single(st.From, "SELECT … FOR UPDATE")
		if err != nil {
			return nil, err
		}
		pl.kind = selectForUpdate
		if err := b.table(pl, ts, tn); err != nil {
			return nil, err
		}
		if err := b.cond(pl, st.Where, nil, nil); err != nil {
			return nil, err
		}
	case *ast.SetOprStmt:
		return nil, unsupported("SELECT … FOR UPDATE over a UNION")
	default:
		return nil, unsupported("statement %T", stmt)
	}
	return pl, err
}

// cond records a statement's condition and its ORDER BY and LIMIT.
func (b *builder) cond(pl *plan, where ast.ExprNode, order *ast.OrderByClause, limit *ast.Limit) error {
	if where != nil {
		if hasSubquery(where) {
			return unsupported("a subquery in the condition")
		}
		s, err := b.restore(where)
		if err != nil {
			return err
		}
		pl.where, pl.whereArgs = s, b.args(where)
	}
	var tail []string
	var args []int
	var nodes []ast.Node
	if order != nil {
		nodes = append(nodes, order)
	}
	if limit != nil {
		nodes = append(nodes, limit)
	}
	for _, n := range nodes {
		s, err := b.restore(n)
		if err != nil {
			return err
		}
		tail = append(tail, s)
		args = append(args, b.args(n)...)
	}
	pl.tail, pl.tailArgs = strings.Join(tail, " "), args
	return nil
}

func hasSubquery(n ast.Node) bool {
	found := false
	n.Accept(&visitor{enter: func(n ast.Node) {
		switch n.(type) {
		case *ast.SubqueryExpr, *ast.ExistsSubqueryExpr:
			found = true
		}
	}})
	return found
}

func (b *builder) operand(e ast.ExprNode) operand {
	switch v := e.(type) {
	case *test_driver.ParamMarkerExpr:
		return operand{arg: b.arg(b.offsets[v.Offset])}
	case *test_driver.ValueExpr:
		switch x := v.GetValue().(type) {
		case nil:
			return operand{arg: -1, lit: nil}
		case int64, float64, string, []byte:
			return operand{arg: -1, lit: x}
		case uint64:
			if x <= 1<<63-1 {
				return operand{arg: -1, lit: int64(x)}
			}
			return operand{arg: -1, lit: strconv.FormatUint(x, 10)}
		case float32:
			return operand{arg: -1, lit: float64(x)}
		case fmt.Stringer:
			return operand{arg: -1, lit: x.String()}
		}
	}
	return operand{arg: -1, expr: true}
}

// visitor calls enter on every node.
type visitor struct{ enter func(ast.Node) }

func (v *visitor) Enter(n ast.Node) (ast.Node, bool) { v.enter(n); return n, false }
func (v *visitor) Leave(n ast.Node) (ast.Node, bool) { return n, true }

// quote quotes an identifier for the dialect.
func quote(pg bool, name string) string {
	if pg {
		return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	}
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}
