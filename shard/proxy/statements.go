package proxy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	"github.com/pingcap/tidb/pkg/parser/test_driver"

	"github.com/tangram-dev/tangram/shard"
)

// kind is what a statement is, as far as the session is concerned.
type kind int

const (
	kindOther    kind = iota // refused: DDL, administration, LOAD DATA …
	kindQuery                // SELECT: rows through the executor
	kindWrite                // INSERT, UPDATE, DELETE, REPLACE
	kindBegin                // BEGIN, START TRANSACTION
	kindCommit               // COMMIT
	kindRollback             // ROLLBACK
	kindSet                  // SET: session variables
	kindUse                  // USE db
	kindShow                 // SHOW …
	kindEmpty                // nothing but blanks and comments
	kindDDL                  // CREATE, ALTER, DROP, TRUNCATE: every data node
)

// classify reads a statement's first word (after blanks and comments).
func classify(q string) kind {
	w := strings.ToUpper(firstWord(q))
	switch w {
	case "":
		return kindEmpty
	case "SELECT", "(":
		return kindQuery
	case "INSERT", "UPDATE", "DELETE", "REPLACE":
		return kindWrite
	case "CREATE", "ALTER", "DROP", "TRUNCATE":
		return kindDDL
	case "BEGIN", "START":
		return kindBegin
	case "COMMIT":
		return kindCommit
	case "ROLLBACK":
		return kindRollback
	case "SET":
		return kindSet
	case "USE":
		return kindUse
	case "SHOW", "DESC", "DESCRIBE":
		return kindShow
	}
	return kindOther
}

// skipBlank returns q without its leading blanks and comments (/* … */,
// "-- " and # to the end of the line).
func skipBlank(q string) string {
	for {
		q = strings.TrimLeftFunc(q, isSpace)
		switch {
		case strings.HasPrefix(q, "/*"):
			end := strings.Index(q[2:], "*/")
			if end < 0 {
				return ""
			}
			q = q[2+end+2:]
		case strings.HasPrefix(q, "#"), strings.HasPrefix(q, "--") && (len(q) == 2 || isSpace(rune(q[2]))):
			end := strings.IndexByte(q, '\n')
			if end < 0 {
				return ""
			}
			q = q[end+1:]
		default:
			return q
		}
	}
}

// firstWord is a statement's first word ("(" for a parenthesised
// SELECT).
func firstWord(q string) string {
	q = skipBlank(q)
	if strings.HasPrefix(q, "(") {
		return "("
	}
	end := strings.IndexFunc(q, func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
	if end < 0 {
		return q
	}
	return q[:end]
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v'
}

// refuse is the error for a statement of kindOther.
func refuse(q string) error {
	w := strings.ToUpper(firstWord(q))
	switch w {
	case "RENAME":
		return notSupported("RENAME TABLE through the proxy (the logical names are the rules')")
	case "XA", "SAVEPOINT", "RELEASE", "LOCK", "UNLOCK":
		return notSupported("%s through the proxy: a session's transaction spans data sources; use BEGIN, COMMIT and ROLLBACK", w)
	case "CALL", "DO", "HANDLER", "LOAD", "PREPARE", "EXECUTE", "DEALLOCATE", "WITH", "VALUES", "TABLE":
		return notSupported("%s statements through the proxy", w)
	}
	if _, err := parseOne(q); err != nil && errors.Is(err, shard.ErrSyntax) {
		return err
	}
	return notSupported("the statement %s through the proxy", w)
}

// parse parses one statement of the session's own kinds.
func parseOne(q string) (ast.StmtNode, error) {
	stmts, _, err := parser.New().Parse(q, "", "")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", shard.ErrSyntax, err)
	}
	if len(stmts) != 1 {
		return nil, fmt.Errorf("shard: %d statements in one text: send them one at a time", len(stmts))
	}
	return stmts[0], nil
}

// begin opens a transaction for BEGIN or START TRANSACTION [READ ONLY |
// READ WRITE | WITH CONSISTENT SNAPSHOT].
func (ss *session) beginStmt(ctx context.Context, q string) error {
	var readOnly bool
	if strings.EqualFold(firstWord(q), "START") {
		st, err := parseOne(q)
		if err != nil {
			return err
		}
		b, ok := st.(*ast.BeginStmt)
		if !ok {
			return refuse(q)
		}
		if b.AsOf != nil || b.CausalConsistencyOnly || b.Mode != "" {
			return notSupported("this form of START TRANSACTION")
		}
		readOnly = b.ReadOnly
	}
	if ss.tx != nil {
		// MySQL commits the open transaction first.
		if err := ss.endTx(true); err != nil {
			return err
		}
	}
	opts := ss.nextTxOpts()
	opts.ReadOnly = opts.ReadOnly || readOnly
	tx, err := ss.s.ex.Load().Begin(ctx, opts)
	if err != nil {
		return err
	}
	ss.tx = tx
	return nil
}

// Isolation levels by their SET names.
var isolations = map[string]sql.IsolationLevel{
	ast.ReadUncommitted: sql.LevelReadUncommitted,
	ast.ReadCommitted:   sql.LevelReadCommitted,
	ast.RepeatableRead:  sql.LevelRepeatableRead,
	ast.Serializable:    sql.LevelSerializable,
}

// set runs SET: the variables a session can keep for itself (autocommit,
// the utf8 character sets, transaction isolation and access mode). The
// rest are refused by name: the data sources' connections are pooled and
// shared, so a session variable set on one would leak to other sessions.
func (ss *session) set(q string) error {
	st, err := parseOne(q)
	if err != nil {
		return err
	}
	s, ok := st.(*ast.SetStmt)
	if !ok {
		return notSupported("this form of SET")
	}
	next, nextOpts, oneShot := ss.autocommit, ss.txOpts, ss.oneShot
	for _, v := range s.Variables {
		name := strings.ToLower(v.Name)
		if v.Name == ast.SetNames || v.Name == ast.SetCharset {
			name = "names"
		}
		if v.IsGlobal || v.IsInstance {
			return notSupported("SET GLOBAL %s: set server variables on each data source", name)
		}
		if !v.IsSystem && name != "names" {
			return notSupported("user variables (@%s)", name)
		}
		val, isDefault, err := setValue(v.Value)
		if err != nil {
			return fmt.Errorf("%w: SET %s: %w", shard.ErrSyntax, name, err)
		}
		switch name {
		case "autocommit":
			on, err := boolValue(val, isDefault, true)
			if err != nil {
				return errorf(1231, "42000", "Variable 'autocommit' can't be set to the value of '%s'", val)
			}
			next = on
		case "names", "character_set_client", "character_set_connection", "character_set_results", "collation_connection":
			if isDefault || val == "" && name == "character_set_results" {
				continue
			}
			if !utf8Charset(val) {
				return notSupported("the character set %s: the proxy speaks utf8mb4 (and its utf8 subsets) only", val)
			}
		case "tx_isolation", "transaction_isolation", "tx_isolation_one_shot":
			level := sql.LevelDefault
			if !isDefault {
				l, ok := isolations[strings.ToUpper(strings.ReplaceAll(val, " ", "-"))]
				if !ok {
					return errorf(1231, "42000", "Variable '%s' can't be set to the value of '%s'", name, val)
				}
				level = l
			}
			if name == "tx_isolation_one_shot" {
				oneShot.Isolation, oneShot.set = level, true
			} else {
				nextOpts.Isolation = level
			}
		case "tx_read_only", "transaction_read_only":
			ro, err := boolValue(val, isDefault, false)
			if err != nil {
				return errorf(1231, "42000", "Variable '%s' can't be set to the value of '%s'", name, val)
			}
			nextOpts.ReadOnly = ro
		case "sql_mode":
			// Accepted when it asks for what the data sources are
			// expected to run with already; anything else would change
			// the meaning of statements on a shared connection.
			if !isDefault {
				return notSupported("SET sql_mode through the proxy: set it on the data sources (the connections are shared)")
			}
		case "sql_select_limit", "net_write_timeout", "net_read_timeout", "wait_timeout", "interactive_timeout", "time_zone", "sql_auto_is_null", "session_track_schema":
			if !isDefault {
				return notSupported("SET %s through the proxy (the data sources' connections are shared)", name)
			}
		default:
			return notSupported("SET %s through the proxy", name)
		}
	}
	ss.autocommit, ss.txOpts, ss.oneShot = next, nextOpts, oneShot
	if next && ss.tx != nil {
		// SET autocommit=1 commits the open transaction (as in MySQL).
		return ss.endTx(true)
	}
	return nil
}

// setValue reads a SET's value: a literal or a bare word (ON, OFF,
// DEFAULT, READ-COMMITTED).
func setValue(e ast.ExprNode) (string, bool, error) {
	switch x := e.(type) {
	case nil:
		return "", true, nil
	case *ast.DefaultExpr:
		return "", true, nil
	case *test_driver.ValueExpr:
		if x.Datum.Kind() == test_driver.KindNull {
			return "", false, nil
		}
		return fmt.Sprint(x.Datum.GetValue()), false, nil
	case *ast.ColumnNameExpr:
		// ON, OFF and other bare words parse as names.
		if strings.EqualFold(x.Name.Name.O, "default") {
			return "", true, nil
		}
		return x.Name.Name.O, false, nil
	}
	return "", false, fmt.Errorf("the value must be a literal")
}

func boolValue(v string, isDefault, def bool) (bool, error) {
	if isDefault {
		return def, nil
	}
	switch strings.ToUpper(v) {
	case "1", "ON", "TRUE":
		return true, nil
	case "0", "OFF", "FALSE":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", v)
}

func utf8Charset(cs string) bool {
	cs = strings.ToLower(cs)
	return strings.HasPrefix(cs, "utf8") || cs == "ascii" || cs == "binary"
}

// show answers SHOW: the proxy's own schema for DATABASES and TABLES,
// empty WARNINGS and ERRORS (a failed statement's error went with it),
// and the server-wide lists (VARIABLES, STATUS, COLLATION, CHARACTER
// SET, ENGINES) from the first data source.
func (ss *session) show(ctx context.Context, q string) (*shard.Rows, error) {
	st, err := parseOne(q)
	if err != nil {
		return nil, err
	}
	if ex, ok := st.(*ast.ExplainStmt); ok {
		// DESCRIBE t is SHOW COLUMNS FROM t; EXPLAIN of a statement would
		// explain one node's plan only.
		st = ex.Stmt
	}
	s, ok := st.(*ast.ShowStmt)
	if !ok {
		return nil, notSupported("EXPLAIN through the proxy (each data source plans its own statement: explain it there)")
	}
	switch s.Tp {
	case ast.ShowColumns, ast.ShowCreateTable, ast.ShowIndex:
		return ss.showTable(ctx, s)
	case ast.ShowDatabases:
		names, err := filter([]string{ss.s.cfg.Database}, s)
		if err != nil {
			return nil, err
		}
		return listRows("Database", names), nil
	case ast.ShowTables:
		if s.DBName != "" && !strings.EqualFold(s.DBName, ss.s.cfg.Database) {
			return nil, errorf(1049, "42000", "Unknown database '%s'", s.DBName)
		}
		rules := ss.s.ex.Load().Rules()
		names := append(rules.Tables(), rules.BroadcastTables()...)
		sort.Strings(names)
		names = slices.Compact(names)
		names, err := filter(names, s)
		if err != nil {
			return nil, err
		}
		rows := listRows("Tables_in_"+ss.s.cfg.Database, names)
		if s.Full {
			rows.Columns = append(rows.Columns, "Table_type")
			for i := range rows.Values {
				rows.Values[i] = append(rows.Values[i], "BASE TABLE")
			}
		}
		return rows, nil
	case ast.ShowWarnings, ast.ShowErrors:
		if s.CountWarningsOrErrors {
			return &shard.Rows{Columns: []string{"@@session.warning_count"}, Values: [][]any{{int64(0)}}}, nil
		}
		return &shard.Rows{Columns: []string{"Level", "Code", "Message"}}, nil
	case ast.ShowVariables, ast.ShowStatus, ast.ShowCollation, ast.ShowCharset, ast.ShowEngines:
		if s.Tp == ast.ShowStatus && !s.GlobalScope {
			// Session status would be the pooled connection's.
			return nil, notSupported("SHOW SESSION STATUS through the proxy (use SHOW GLOBAL STATUS)")
		}
		return ss.fromFirst(ctx, q)
	}
	return nil, notSupported("this SHOW statement through the proxy")
}

// showTable answers SHOW COLUMNS, SHOW CREATE TABLE and SHOW INDEX for a
// logical table from its first data node, with the logical name where
// the node's appears.
func (ss *session) showTable(ctx context.Context, s *ast.ShowStmt) (*shard.Rows, error) {
	if s.Table == nil {
		return nil, notSupported("this SHOW without a table")
	}
	if s.Table.Schema.L != "" && s.Table.Schema.L != strings.ToLower(ss.s.cfg.Database) {
		return nil, errorf(1049, "42000", "Unknown database '%s'", s.Table.Schema.O)
	}
	if s.Where != nil || s.Pattern != nil {
		return nil, notSupported("SHOW … LIKE/WHERE for a table through the proxy")
	}
	ex := ss.s.ex.Load()
	rules := ex.Rules()
	name := s.Table.Name.O
	ds, phys := "", name
	switch {
	case rules.Table(name) != nil:
		n := rules.Table(name).Nodes[0]
		ds, phys = n.DataSource, n.Table
	case rules.Broadcast(name):
		ds = rules.DataSourceNames()[0]
	case rules.DefaultDataSource() != "":
		ds = rules.DefaultDataSource()
	default:
		return nil, errorf(1146, "42S02", "Table '%s.%s' doesn't exist", ss.s.cfg.Database, name)
	}
	q := ""
	quoted := "`" + strings.ReplaceAll(phys, "`", "``") + "`"
	switch s.Tp {
	case ast.ShowColumns:
		q = "SHOW COLUMNS FROM " + quoted
		if s.Full {
			q = "SHOW FULL COLUMNS FROM " + quoted
		}
	case ast.ShowCreateTable:
		q = "SHOW CREATE TABLE " + quoted
	default:
		q = "SHOW INDEX FROM " + quoted
	}
	rows, err := ss.rowsOf(ctx, ex.DB(ds), q)
	if err != nil {
		return nil, err
	}
	for _, r := range rows.Values {
		for i, c := range rows.Columns {
			switch {
			case c == "Table":
				r[i] = name
			case c == "Create Table" && phys != name:
				if v, ok := r[i].([]byte); ok {
					r[i] = []byte(strings.Replace(string(v), "CREATE TABLE "+quoted, "CREATE TABLE `"+name+"`", 1))
				}
			}
		}
	}
	return rows, nil
}

// filter keeps the names a SHOW's LIKE pattern matches (a WHERE is
// refused).
func filter(names []string, s *ast.ShowStmt) ([]string, error) {
	if s.Where != nil {
		return nil, notSupported("SHOW … WHERE through the proxy (use LIKE)")
	}
	if s.Pattern == nil {
		return names, nil
	}
	v, ok := s.Pattern.Pattern.(*test_driver.ValueExpr)
	if !ok {
		return nil, notSupported("a LIKE pattern that is not a literal")
	}
	pat := v.Datum.GetString()
	var out []string
	for _, n := range names {
		if like(strings.ToLower(n), strings.ToLower(pat)) {
			out = append(out, n)
		}
	}
	return out, nil
}

// like matches s against a LIKE pattern (% any run, _ one character,
// backslash escapes).
func like(s, pat string) bool {
	sr, pr := []rune(s), []rune(pat)
	// Iterative matching with one backtrack point for the last %.
	i, j, star, mark := 0, 0, -1, 0
	for i < len(sr) {
		switch {
		case j < len(pr) && pr[j] == '%':
			star, mark = j, i
			j++
		case j < len(pr) && pr[j] == '\\' && j+1 < len(pr) && pr[j+1] == sr[i]:
			i, j = i+1, j+2
		case j < len(pr) && pr[j] != '\\' && (pr[j] == '_' || pr[j] == sr[i]):
			i, j = i+1, j+1
		case star >= 0:
			mark++
			i, j = mark, star+1
		default:
			return false
		}
	}
	for j < len(pr) && pr[j] == '%' {
		j++
	}
	return j == len(pr)
}

func listRows(col string, names []string) *shard.Rows {
	r := &shard.Rows{Columns: []string{col}}
	for _, n := range names {
		r.Values = append(r.Values, []any{n})
	}
	return r
}

// fromFirst runs q on the first data source (they are expected to be
// alike) and reads its rows whole.
func (ss *session) fromFirst(ctx context.Context, q string) (*shard.Rows, error) {
	ex := ss.s.ex.Load()
	names := ex.Rules().DataSourceNames()
	if len(names) == 0 {
		return nil, fmt.Errorf("proxy: no data sources")
	}
	return ss.rowsOf(ctx, ex.DB(names[0]), q)
}

// rowsOf runs q on db and reads its rows whole.
func (ss *session) rowsOf(ctx context.Context, db *sql.DB, q string) (*shard.Rows, error) {
	rs, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		return nil, err
	}
	types, err := rs.ColumnTypes()
	if err != nil {
		return nil, err
	}
	out := &shard.Rows{Columns: cols, Types: types}
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			return nil, err
		}
		out.Values = append(out.Values, vals)
		if len(out.Values) > 100_000 {
			return nil, notSupported("a SHOW with more than 100000 rows")
		}
	}
	return out, rs.Err()
}
