package shard

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrRules: rules that cannot be used (each problem names its line).
var ErrRules = errors.New("shard: bad rules")

// Node is one physical table: a data source and a table in it.
type Node struct {
	DataSource string `json:"data_source"`
	Table      string `json:"table"`
}

func (n Node) String() string { return n.DataSource + "." + n.Table }

// Rules say where every logical table's rows live. Parse them from YAML
// with ParseRules; a Rules is read-only and safe for concurrent use.
type Rules struct {
	// DataSources maps each data source name to its database URL
	// (mysql://user:password@host:port/database).
	DataSources map[string]string
	// ReadDataSources are the replicas read/write splitting reads from,
	// name → URL (not written to; see ReadGroup).
	ReadDataSources map[string]string
	reads           map[string]*ReadGroup // primary data source → its replicas
	migration       *Migration
	tables          map[string]*Table
	broadcast       map[string]bool
	binding         map[string]int // table → its binding group
	defaultDS       string
}

// Table is a sharded logical table.
type Table struct {
	Name string
	// Nodes are the table's data nodes, in the order the expression
	// lists them.
	Nodes []Node
	// DataSources are the data sources the nodes are in, in order.
	DataSources []string
	tables      map[string][]string // data source → its tables, in order
	db, tbl     *strategy
	key         *keyGen // fills the key column of INSERTs without it (nil: none)
}

// KeyColumn is the column the table's key generator fills ("" none).
func (t *Table) KeyColumn() string {
	if t.key == nil {
		return ""
	}
	return t.key.column
}

// strategy is how a table picks data sources, or tables in one.
type strategy struct {
	kind    string // standard, complex, hint, none
	columns []string
	algName string
	alg     algorithm
}

// Table returns the sharded table named name (case-insensitive), or nil.
func (r *Rules) Table(name string) *Table { return r.tables[strings.ToLower(name)] }

// Tables lists the sharded tables' names, sorted.
func (r *Rules) Tables() []string {
	out := make([]string, 0, len(r.tables))
	for n := range r.tables {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Broadcast reports whether name is a broadcast table (a full copy in
// every data source: written everywhere, read from any one).
func (r *Rules) Broadcast(name string) bool { return r.broadcast[strings.ToLower(name)] }

// BroadcastTables lists the broadcast tables' names, sorted.
func (r *Rules) BroadcastTables() []string {
	out := make([]string, 0, len(r.broadcast))
	for n := range r.broadcast {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// DefaultDataSource is where tables that are neither sharded nor
// broadcast live ("" when the rules name none).
func (r *Rules) DefaultDataSource() string { return r.defaultDS }

// Bound reports whether tables a and b are bound (sharded alike, so rows
// joined on their sharding columns are in the same node pair).
func (r *Rules) Bound(a, b string) bool {
	ga, oka := r.binding[strings.ToLower(a)]
	gb, okb := r.binding[strings.ToLower(b)]
	return oka && okb && ga == gb
}

// DataSourceNames lists the data sources, sorted.
func (r *Rules) DataSourceNames() []string {
	out := make([]string, 0, len(r.DataSources))
	for n := range r.DataSources {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Migration is online resharding in progress: the rules' layout is
// moving to To's. In phase DOUBLE_WRITE reads use the rules' own layout
// and every write is applied to both; in READ_NEW reads use To's and
// writes still go to both. The last step publishes To itself.
type Migration struct {
	Phase string
	To    *Rules
}

// Migration phases.
const (
	PhaseDoubleWrite = "DOUBLE_WRITE"
	PhaseReadNew     = "READ_NEW"
)

// Migration is the resharding in progress (nil: none).
func (r *Rules) Migration() *Migration { return r.migration }

// ReadGroup is a primary data source's replicas: reads outside a
// transaction go to one of them, writes and transactions to the primary.
type ReadGroup struct {
	Primary string
	// Replicas are read data source names, in order.
	Replicas []string
	// LoadBalancer is ROUND_ROBIN (default) or RANDOM.
	LoadBalancer string
	// MaxLag skips a replica further behind its primary (0: replicas
	// are read from without a check).
	MaxLag time.Duration
}

// ReadGroup returns data source ds's replicas (nil: none).
func (r *Rules) ReadGroup(ds string) *ReadGroup { return r.reads[ds] }

// AllDataSources are the data sources and the read data sources, name →
// URL: every database to open.
func (r *Rules) AllDataSources() map[string]string {
	out := make(map[string]string, len(r.DataSources)+len(r.ReadDataSources))
	for n, u := range r.DataSources {
		out[n] = u
	}
	for n, u := range r.ReadDataSources {
		out[n] = u
	}
	if r.migration != nil {
		for n, u := range r.migration.To.AllDataSources() {
			out[n] = u
		}
	}
	return out
}

// Hint carries sharding values a statement does not (HINT strategies).
type Hint struct {
	DataSource []Value
	Table      []Value
}

// maxCombos bounds the combinations of listed values a complex strategy
// evaluates one by one; beyond it the statement goes to every target.
const maxCombos = 10_000

// Route returns the data nodes of the sharded table t that rows matching
// conds (by column, lower case) can be in. A column without a condition
// may hold anything; a range an algorithm cannot narrow goes to every
// target, unless the algorithm refuses ranges (an INLINE algorithm
// without allow-range-query-with-inline-sharding): then an error.
func (t *Table) Route(conds map[string]Cond, hint *Hint) ([]Node, error) {
	var dbHint, tblHint []Value
	if hint != nil {
		dbHint, tblHint = hint.DataSource, hint.Table
	}
	dss, err := t.db.targets(t.DataSources, conds, dbHint)
	if err != nil {
		return nil, fmt.Errorf("shard: %s: data source: %w", t.Name, err)
	}
	var out []Node
	for _, ds := range dss {
		tbls, err := t.tbl.targets(t.tables[ds], conds, tblHint)
		if err != nil {
			return nil, fmt.Errorf("shard: %s: table: %w", t.Name, err)
		}
		for _, tb := range tbls {
			out = append(out, Node{DataSource: ds, Table: tb})
		}
	}
	return out, nil
}

// oneColumn is an algorithm that reads one column and can take its value
// alone.
type oneColumn interface {
	preciseOne(all []string, v Value) (string, error)
}

// targets picks among all by the strategy.
func (s *strategy) targets(all []string, conds map[string]Cond, hint []Value) ([]string, error) {
	if s == nil || s.kind == "none" || len(all) <= 1 && s.kind != "hint" {
		return all, nil
	}
	if s.kind == "hint" {
		if len(hint) == 0 {
			return all, nil
		}
		var out []string
		for _, v := range hint {
			t, err := s.alg.precise(all, map[string]Value{"value": v})
			if err != nil {
				return nil, err
			}
			out = appendNew(out, t)
		}
		return out, nil
	}
	var ranged []string
	lists := make([][]Value, len(s.columns))
	for i, c := range s.columns {
		cond, ok := conds[c]
		switch {
		case !ok || len(cond.Values) == 0 && cond.Lo == nil && cond.Hi == nil:
			return all, nil // any value: every target
		case len(cond.Values) > 0:
			lists[i] = cond.Values
		default:
			ranged = append(ranged, c)
		}
	}
	if len(ranged) > 0 {
		if len(s.columns) > 1 {
			// A complex algorithm cannot narrow by a range.
			if _, _, err := s.alg.ranged(all, ranged[0], conds[ranged[0]]); err != nil {
				return nil, s.refused(ranged[0], err)
			}
			return all, nil
		}
		out, ok, err := s.alg.ranged(all, ranged[0], conds[ranged[0]])
		if err != nil {
			return nil, s.refused(ranged[0], err)
		}
		if !ok {
			return all, nil
		}
		return out, nil
	}
	if one, ok := s.alg.(oneColumn); ok && len(s.columns) == 1 {
		// One column: no map of values per statement.
		var out []string
		for _, v := range lists[0] {
			t, err := one.preciseOne(all, v)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", s.algName, s.columns[0], err)
			}
			out = appendNew(out, t)
		}
		return out, nil
	}
	combos := 1
	for _, l := range lists {
		combos *= len(l)
		if combos > maxCombos {
			return all, nil
		}
	}
	var out []string
	idx := make([]int, len(lists))
	for {
		vals := make(map[string]Value, len(lists))
		for i, c := range s.columns {
			vals[c] = lists[i][idx[i]]
		}
		t, err := s.alg.precise(all, vals)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", s.algName, strings.Join(s.columns, ", "), err)
		}
		out = appendNew(out, t)
		i := len(idx) - 1
		for ; i >= 0; i-- {
			idx[i]++
			if idx[i] < len(lists[i]) {
				break
			}
			idx[i] = 0
		}
		if i < 0 {
			return out, nil
		}
	}
}

func (s *strategy) refused(col string, err error) error {
	if errors.Is(err, errRangeRefused) {
		return unsupported("a range on %s, which the %s algorithm %s cannot route (set its allow-range-query-with-inline-sharding: true to send such queries to every shard)", col, s.alg.typ(), s.algName)
	}
	return err
}

// ParseRules reads rules from YAML (the layout docs/shard.md shows) and
// checks them whole: every problem is reported, each with its line.
func ParseRules(data []byte) (*Rules, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRules, err)
	}
	p := &ruleParser{}
	r := p.parse(&doc)
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].line < p.errs[j].line })
		msgs := make([]string, len(p.errs))
		for i, e := range p.errs {
			msgs[i] = fmt.Sprintf("line %d: %s", e.line, e.msg)
		}
		return nil, fmt.Errorf("%w:\n  %s", ErrRules, strings.Join(msgs, "\n  "))
	}
	return r, nil
}

type ruleParser struct {
	errs   []ruleErr
	nested bool // parsing a migration's target
}

type ruleErr struct {
	line int
	msg  string
}

func (p *ruleParser) errf(n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, ruleErr{line, fmt.Sprintf(format, args...)})
}

// pairs returns a mapping's keys and values, reporting keys not in
// allowed (nil: any key).
func (p *ruleParser) pairs(n *yaml.Node, what string, allowed ...string) [][2]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.errf(n, "%s: want a mapping", what)
		return nil
	}
	var out [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if allowed != nil && !slices.Contains(allowed, k.Value) {
			p.errf(k, "%s: unknown key %q (want %s)", what, k.Value, strings.Join(allowed, ", "))
			continue
		}
		out = append(out, [2]*yaml.Node{k, v})
	}
	return out
}

func (p *ruleParser) scalar(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode {
		p.errf(n, "%s: want a single value", what)
		return ""
	}
	return strings.TrimSpace(n.Value)
}

// names reads a list of names: a sequence, or one string of names
// separated by commas.
func (p *ruleParser) names(n *yaml.Node, what string) []string {
	var raw []string
	switch n.Kind {
	case yaml.SequenceNode:
		for _, it := range n.Content {
			raw = append(raw, p.scalar(it, what))
		}
	case yaml.ScalarNode:
		raw = splitTop(n.Value)
	default:
		p.errf(n, "%s: want a list of names", what)
	}
	var out []string
	for _, s := range raw {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func lower(ss []string) []string {
	for i, s := range ss {
		ss[i] = strings.ToLower(s)
	}
	return ss
}

// splitTop splits s at the commas outside braces and brackets (a data
// node expression's list ${[0, 2]} stays whole).
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{', '[':
			depth++
		case '}', ']':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

type strategyDef struct {
	node    *yaml.Node
	s       *strategy
	algNode *yaml.Node
}

func (p *ruleParser) parse(doc *yaml.Node) *Rules {
	r := &Rules{DataSources: map[string]string{}, ReadDataSources: map[string]string{}, reads: map[string]*ReadGroup{},
		tables: map[string]*Table{}, broadcast: map[string]bool{}, binding: map[string]int{}}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		p.errf(doc, "empty rules")
		return r
	}
	root := doc.Content[0]
	algs := map[string]algorithm{}
	gens := map[string]*keyGen{}
	broken := map[string]bool{} // algorithms defined with errors (reported where defined)
	var tableNodes, bindingNode, broadcastNode, defaultDSNode, rwNode, migNode *yaml.Node
	var defDB, defTbl *strategyDef
	for _, kv := range p.pairs(root, "rules", "dataSources", "tables", "bindingTables", "broadcastTables", "defaultDataSource",
		"defaultDatabaseStrategy", "defaultTableStrategy", "shardingAlgorithms", "keyGenerators", "readwriteSplitting", "migration") {
		k, v := kv[0], kv[1]
		switch k.Value {
		case "dataSources":
			for _, ds := range p.pairs(v, "dataSources") {
				u := p.scalar(ds[1], "data source "+ds[0].Value)
				if pu, err := url.Parse(u); err != nil || pu.Scheme != "mysql" || pu.Host == "" || strings.Trim(pu.Path, "/") == "" {
					p.errf(ds[1], "data source %s: %s: want mysql://user[:password]@host:port/database", ds[0].Value, shownURL(u))
				}
				r.DataSources[ds[0].Value] = u
			}
		case "shardingAlgorithms":
			for _, a := range p.pairs(v, "shardingAlgorithms") {
				var typ string
				pr := props{}
				for _, f := range p.pairs(a[1], "algorithm "+a[0].Value, "type", "props") {
					switch f[0].Value {
					case "type":
						typ = p.scalar(f[1], "algorithm "+a[0].Value+" type")
					case "props":
						for _, pp := range p.pairs(f[1], "algorithm "+a[0].Value+" props") {
							pr[pp[0].Value] = p.scalar(pp[1], "property "+pp[0].Value)
						}
					}
				}
				if typ == "" {
					p.errf(a[0], "algorithm %s: type is required (one of %s)", a[0].Value, strings.Join(AlgorithmTypes, ", "))
					continue
				}
				alg, err := newAlgorithm(typ, pr)
				if err != nil {
					broken[a[0].Value] = true
					p.errf(a[1], "algorithm %s (%s): %v", a[0].Value, typ, err)
					continue
				}
				algs[a[0].Value] = alg
			}
		case "keyGenerators":
			for _, a := range p.pairs(v, "keyGenerators") {
				var typ string
				pr := props{}
				for _, f := range p.pairs(a[1], "key generator "+a[0].Value, "type", "props") {
					switch f[0].Value {
					case "type":
						typ = p.scalar(f[1], "key generator "+a[0].Value+" type")
					case "props":
						for _, pp := range p.pairs(f[1], "key generator "+a[0].Value+" props") {
							pr[pp[0].Value] = p.scalar(pp[1], "property "+pp[0].Value)
						}
					}
				}
				g, err := newKeyGen(typ, pr)
				if err != nil {
					p.errf(a[1], "key generator %s: %v", a[0].Value, err)
					continue
				}
				g.name = a[0].Value
				gens[a[0].Value] = g
			}
		case "tables":
			tableNodes = v
		case "bindingTables":
			bindingNode = v
		case "broadcastTables":
			broadcastNode = v
		case "readwriteSplitting":
			rwNode = v
		case "migration":
			migNode = v
		case "defaultDataSource":
			defaultDSNode = v
			r.defaultDS = p.scalar(v, "defaultDataSource")
		case "defaultDatabaseStrategy":
			defDB = p.strategy(v, "defaultDatabaseStrategy")
		case "defaultTableStrategy":
			defTbl = p.strategy(v, "defaultTableStrategy")
		}
	}
	if len(r.DataSources) == 0 {
		p.errf(root, "dataSources: at least one data source is required")
	}
	if defaultDSNode != nil && r.DataSources[r.defaultDS] == "" {
		p.errf(defaultDSNode, "defaultDataSource %q is not one of the data sources", r.defaultDS)
	}
	if rwNode != nil {
		p.readwrite(rwNode, r)
	}
	if migNode != nil {
		p.migration(migNode, r)
	}
	resolve := func(d *strategyDef, what string) *strategy {
		if d == nil || d.s == nil {
			return nil
		}
		if d.s.kind != "none" {
			alg, ok := algs[d.s.algName]
			if !ok && broken[d.s.algName] {
				return nil
			}
			if !ok {
				p.errf(d.algNode, "%s: no sharding algorithm named %q", what, d.s.algName)
				return nil
			}
			d.s.alg = alg
			if d.s.kind == "hint" && alg.typ() != "HINT_INLINE" {
				p.errf(d.algNode, "%s: a hint strategy needs a HINT_INLINE algorithm, not %s (%s)", what, d.s.algName, alg.typ())
			}
			if d.s.kind != "hint" && alg.typ() == "HINT_INLINE" {
				p.errf(d.algNode, "%s: the HINT_INLINE algorithm %s is for a hint strategy", what, d.s.algName)
			}
			if d.s.kind == "standard" && alg.typ() == "COMPLEX_INLINE" {
				p.errf(d.algNode, "%s: the COMPLEX_INLINE algorithm %s is for a complex strategy", what, d.s.algName)
			}
			if d.s.kind == "complex" && alg.typ() != "COMPLEX_INLINE" {
				p.errf(d.algNode, "%s: a complex strategy needs a COMPLEX_INLINE algorithm, not %s (%s)", what, d.s.algName, alg.typ())
			}
			if ia, ok := alg.(*inlineAlg); ok && d.s.kind == "complex" {
				for _, c := range ia.t.columns() {
					if !slices.Contains(d.s.columns, c) {
						p.errf(d.algNode, "%s: the expression of %s reads %s, which is not one of the sharding columns %s", what, d.s.algName, c, strings.Join(d.s.columns, ", "))
					}
				}
			}
		}
		return d.s
	}
	dbDefault, tblDefault := resolve(defDB, "defaultDatabaseStrategy"), resolve(defTbl, "defaultTableStrategy")
	if tableNodes != nil {
		for _, kv := range p.pairs(tableNodes, "tables") {
			name := strings.ToLower(kv[0].Value)
			t := &Table{Name: name, tables: map[string][]string{}, db: dbDefault, tbl: tblDefault}
			var nodesNode *yaml.Node
			var ownDB, ownTbl bool // a strategy written (if it failed, that is the error)
			var keyNode *yaml.Node
			for _, f := range p.pairs(kv[1], "table "+name, "actualDataNodes", "databaseStrategy", "tableStrategy", "keyGenerateStrategy") {
				switch f[0].Value {
				case "actualDataNodes":
					nodesNode = f[1]
					exprs := p.names(f[1], "table "+name+" actualDataNodes")
					for _, e := range exprs {
						all, err := expand(e)
						if err != nil {
							p.errf(f[1], "table %s actualDataNodes: %v", name, err)
							continue
						}
						for _, s := range all {
							ds, tb, ok := strings.Cut(s, ".")
							if !ok || ds == "" || tb == "" {
								p.errf(f[1], "table %s: data node %q: want data_source.table", name, s)
								continue
							}
							if _, ok := r.DataSources[ds]; !ok && len(r.DataSources) > 0 {
								p.errf(f[1], "table %s: data node %s: no data source %q", name, s, ds)
								continue
							}
							n := Node{DataSource: ds, Table: tb}
							if slices.Contains(t.Nodes, n) {
								p.errf(f[1], "table %s: data node %s listed twice", name, s)
								continue
							}
							t.Nodes = append(t.Nodes, n)
							if !slices.Contains(t.DataSources, ds) {
								t.DataSources = append(t.DataSources, ds)
							}
							t.tables[ds] = append(t.tables[ds], tb)
						}
					}
				case "databaseStrategy":
					ownDB = true
					t.db = resolve(p.strategy(f[1], "table "+name+" databaseStrategy"), "table "+name+" databaseStrategy")
				case "keyGenerateStrategy":
					keyNode = f[1]
				case "tableStrategy":
					ownTbl = true
					t.tbl = resolve(p.strategy(f[1], "table "+name+" tableStrategy"), "table "+name+" tableStrategy")
				}
			}
			if nodesNode == nil {
				p.errf(kv[0], "table %s: actualDataNodes is required", name)
			}
			if keyNode != nil {
				var col, gen string
				for _, f := range p.pairs(keyNode, "table "+name+" keyGenerateStrategy", "column", "keyGeneratorName") {
					switch f[0].Value {
					case "column":
						col = strings.ToLower(p.scalar(f[1], "column"))
					case "keyGeneratorName":
						gen = p.scalar(f[1], "keyGeneratorName")
					}
				}
				switch g := gens[gen]; {
				case col == "" || gen == "":
					p.errf(keyNode, "table %s keyGenerateStrategy: column and keyGeneratorName are required", name)
				case g == nil:
					p.errf(keyNode, "table %s keyGenerateStrategy: no key generator named %q", name, gen)
				default:
					t.key = &keyGen{name: g.name, column: col, seed: g.seed, typ: g.typ, gen: g.gen}
					for _, c := range []struct {
						s     *strategy
						field string
					}{{t.db, "db"}, {t.tbl, "table"}} {
						if err := t.key.checkSeed(c.s, c.field); err != nil {
							p.errf(keyNode, "table %s: %v", name, err)
						}
					}
				}
			}
			if len(t.DataSources) > 1 && !ownDB && (t.db == nil || t.db.kind == "none") {
				p.errf(kv[0], "table %s: its nodes are in %d data sources but it has no databaseStrategy (nor a defaultDatabaseStrategy)", name, len(t.DataSources))
			}
			for _, ds := range t.DataSources {
				if len(t.tables[ds]) > 1 && !ownTbl && (t.tbl == nil || t.tbl.kind == "none") {
					p.errf(kv[0], "table %s: data source %s holds %d of its tables but it has no tableStrategy (nor a defaultTableStrategy)", name, ds, len(t.tables[ds]))
					break
				}
			}
			if _, dup := r.tables[name]; dup {
				p.errf(kv[0], "table %s defined twice", name)
			}
			r.tables[name] = t
		}
	}
	if broadcastNode != nil {
		for _, n := range lower(p.names(broadcastNode, "broadcastTables")) {
			if r.tables[n] != nil {
				p.errf(broadcastNode, "broadcast table %s is also a sharded table", n)
			}
			r.broadcast[n] = true
		}
	}
	if bindingNode != nil {
		if bindingNode.Kind != yaml.SequenceNode {
			p.errf(bindingNode, "bindingTables: want a list of groups (each \"t_order, t_order_item\")")
		} else {
			for gi, g := range bindingNode.Content {
				group := lower(p.names(g, "binding group"))
				if len(group) < 2 {
					p.errf(g, "binding group %v: want two tables or more", group)
					continue
				}
				first := r.tables[group[0]]
				for _, n := range group {
					t := r.tables[n]
					if t == nil {
						p.errf(g, "binding group: %s is not a sharded table", n)
						continue
					}
					if _, in := r.binding[n]; in {
						p.errf(g, "binding group: %s is in two groups", n)
						continue
					}
					r.binding[n] = gi
					if first != nil && t != first {
						if why := bindable(first, t); why != "" {
							p.errf(g, "binding group: %s and %s are not sharded alike: %s", first.Name, t.Name, why)
						}
					}
				}
			}
		}
	}
	return r
}

// bindable says why a and b cannot be bound ("" when they can): the same
// data sources, the same number of tables in each, and the same
// strategies over the same columns.
func bindable(a, b *Table) string {
	if !slices.Equal(a.DataSources, b.DataSources) {
		return fmt.Sprintf("data sources %v and %v", a.DataSources, b.DataSources)
	}
	for _, ds := range a.DataSources {
		if len(a.tables[ds]) != len(b.tables[ds]) {
			return fmt.Sprintf("%d and %d tables in %s", len(a.tables[ds]), len(b.tables[ds]), ds)
		}
	}
	same := func(x, y *strategy) bool {
		if x == nil || y == nil {
			return x == y
		}
		return x.kind == y.kind && x.algName == y.algName && slices.Equal(x.columns, y.columns)
	}
	if !same(a.db, b.db) {
		return "different database strategies"
	}
	if !same(a.tbl, b.tbl) {
		return "different table strategies"
	}
	return ""
}

// strategy reads `standard: {shardingColumn, shardingAlgorithmName}`,
// `complex: {shardingColumns, shardingAlgorithmName}`,
// `hint: {shardingAlgorithmName}` or `none: {}`.
// migration reads a migration: its phase and the whole target rules.
func (p *ruleParser) migration(n *yaml.Node, r *Rules) {
	if p.nested {
		p.errf(n, "migration: the target rules cannot hold a migration of their own")
		return
	}
	m := &Migration{}
	var to *yaml.Node
	for _, f := range p.pairs(n, "migration", "phase", "to") {
		switch f[0].Value {
		case "phase":
			m.Phase = strings.ToUpper(p.scalar(f[1], "migration phase"))
			if m.Phase != PhaseDoubleWrite && m.Phase != PhaseReadNew {
				p.errf(f[1], "migration phase %q: want %s or %s", f[1].Value, PhaseDoubleWrite, PhaseReadNew)
			}
		case "to":
			to = f[1]
		}
	}
	if m.Phase == "" {
		p.errf(n, "migration: phase is required (%s or %s)", PhaseDoubleWrite, PhaseReadNew)
	}
	if to == nil {
		p.errf(n, "migration: to (the target rules) is required")
		return
	}
	sub := &ruleParser{nested: true}
	m.To = sub.parse(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{to}})
	for _, e := range sub.errs {
		p.errs = append(p.errs, ruleErr{e.line, "migration target: " + e.msg})
	}
	for name, u := range m.To.AllDataSources() {
		if old, ok := r.AllDataSources()[name]; ok && old != u {
			p.errf(to, "migration target: data source %s is %s here and %s in the rules migrated from: give the new database another name", name, u, old)
		}
	}
	// A table that moves moves into tables of its own: were a physical
	// table in both layouts, the rows copied into it would be read twice
	// from the old layout.
	for _, name := range m.To.Tables() {
		old, nt := r.Table(name), m.To.Table(name)
		if old == nil || slices.Equal(old.Nodes, nt.Nodes) {
			continue
		}
		oldNodes := map[string]bool{}
		for _, n := range old.Nodes {
			oldNodes[r.DataSources[n.DataSource]+"|"+n.Table] = true
		}
		for _, n := range nt.Nodes {
			if oldNodes[m.To.DataSources[n.DataSource]+"|"+n.Table] {
				p.errf(to, "migration target: table %s moves but keeps its data node %s: reshard into new tables or new databases", name, n)
				break
			}
		}
	}
	r.migration = m
}

// Moving reports whether table name changes layout in the migration.
func (m *Migration) Moving(from *Rules, name string) bool {
	old, nt := from.Table(name), m.To.Table(name)
	return old != nil && nt != nil && !slices.Equal(old.Nodes, nt.Nodes)
}

// readwrite reads readwriteSplitting: for a data source, its replicas
// (name: URL), a load balancer and the replication lag it tolerates.
func (p *ruleParser) readwrite(n *yaml.Node, r *Rules) {
	for _, g := range p.pairs(n, "readwriteSplitting") {
		primary := g[0].Value
		what := "readwriteSplitting " + primary
		if r.DataSources[primary] == "" {
			p.errf(g[0], "%s: %q is not one of the data sources", what, primary)
		}
		rg := &ReadGroup{Primary: primary, LoadBalancer: "ROUND_ROBIN"}
		for _, f := range p.pairs(g[1], what, "readDataSources", "loadBalancer", "maxReplicationLag") {
			switch f[0].Value {
			case "readDataSources":
				for _, ds := range p.pairs(f[1], what+" readDataSources") {
					name, u := ds[0].Value, p.scalar(ds[1], "read data source "+ds[0].Value)
					if pu, err := url.Parse(u); err != nil || pu.Scheme != "mysql" || pu.Host == "" || strings.Trim(pu.Path, "/") == "" {
						p.errf(ds[1], "read data source %s: %s: want mysql://user[:password]@host:port/database", name, shownURL(u))
					}
					if r.DataSources[name] != "" || r.ReadDataSources[name] != "" {
						p.errf(ds[0], "read data source %s: the name is taken (by a data source or another replica)", name)
					}
					r.ReadDataSources[name] = u
					rg.Replicas = append(rg.Replicas, name)
				}
			case "loadBalancer":
				rg.LoadBalancer = strings.ToUpper(p.scalar(f[1], what+" loadBalancer"))
				if rg.LoadBalancer != "ROUND_ROBIN" && rg.LoadBalancer != "RANDOM" {
					p.errf(f[1], "%s: loadBalancer %q: want ROUND_ROBIN or RANDOM", what, rg.LoadBalancer)
				}
			case "maxReplicationLag":
				d, err := time.ParseDuration(p.scalar(f[1], what+" maxReplicationLag"))
				if err != nil || d < 0 {
					p.errf(f[1], "%s: maxReplicationLag %q: want a duration such as 2s", what, f[1].Value)
				}
				rg.MaxLag = d
			}
		}
		if len(rg.Replicas) == 0 {
			p.errf(g[1], "%s: readDataSources: at least one replica is required", what)
		}
		r.reads[primary] = rg
	}
}

func (p *ruleParser) strategy(n *yaml.Node, what string) *strategyDef {
	kvs := p.pairs(n, what, "standard", "complex", "hint", "none")
	if len(kvs) != 1 {
		if len(kvs) > 1 {
			p.errf(n, "%s: want one of standard, complex, hint or none", what)
		}
		return nil
	}
	kind, body := kvs[0][0].Value, kvs[0][1]
	d := &strategyDef{node: n, s: &strategy{kind: kind}}
	if kind == "none" {
		return d
	}
	allowed := map[string][]string{
		"standard": {"shardingColumn", "shardingAlgorithmName"},
		"complex":  {"shardingColumns", "shardingAlgorithmName"},
		"hint":     {"shardingAlgorithmName"},
	}[kind]
	for _, f := range p.pairs(body, what+" "+kind, allowed...) {
		switch f[0].Value {
		case "shardingColumn":
			d.s.columns = []string{strings.ToLower(p.scalar(f[1], what+" shardingColumn"))}
		case "shardingColumns":
			d.s.columns = lower(p.names(f[1], what+" shardingColumns"))
		case "shardingAlgorithmName":
			d.s.algName = p.scalar(f[1], what+" shardingAlgorithmName")
			d.algNode = f[1]
		}
	}
	if kind != "hint" && (len(d.s.columns) == 0 || d.s.columns[0] == "") {
		p.errf(body, "%s: %s needs its sharding column(s)", what, kind)
		return nil
	}
	if kind == "complex" && len(d.s.columns) < 2 {
		p.errf(body, "%s: a complex strategy shards by two columns or more (use standard for one)", what)
	}
	if d.algNode == nil {
		p.errf(body, "%s: shardingAlgorithmName is required", what)
		return nil
	}
	return d
}

// shownURL is a data source URL as an error quotes it: its password
// masked, or none of its text when it does not parse (it may hold one).
func shownURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "the URL does not parse"
	}
	return strconv.Quote(pu.Redacted())
}
