package shard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Online resharding, the three switches: rules with a Migration in
// phase DOUBLE_WRITE (reads from the old layout, writes to both), then
// READ_NEW (reads from the new, writes to both), then the target rules
// alone. Between the first and the second a Migrator copies the rows
// (Copy) and compares them (Verify).
//
// Why it is exact: outside a transaction a double write runs the
// authoritative layout's statements in local transactions that commit
// only after the other layout's statements ran; the Migrator reads the
// authoritative rows with FOR UPDATE. A copy therefore never reads a row
// whose change has not reached the other layout yet, and a change that
// comes after the copy read a row waits for the copy's lock and is then
// applied to both. Writes that failed half-way (a crash between the two
// layouts) are what Verify finds and repairs.

// doubleWrite applies a write routed by the authoritative layout (rd)
// to the other layout too.
func (e *Executor) doubleWrite(ctx context.Context, rd *Routed, secondary *Router, q string, args []any, on func(context.Context, string) (runner, error), parallel bool) (Result, error) {
	if len(rd.Keys) > 0 {
		return Result{}, unsupported("an INSERT that leaves its key to the key generator during a migration (give the key: both layouts must store the same one)")
	}
	rd2, err := secondary.Route(q, args)
	if err != nil {
		return Result{}, fmt.Errorf("shard: migration: the other layout refuses the statement: %w", err)
	}
	rd2.Units = otherUnits(rd.Units, rd2.Units)
	for i, u := range rd2.Units {
		// A row the copy already brought is not an error.
		if rest, ok := strings.CutPrefix(u.SQL, "INSERT INTO "); ok {
			rd2.Units[i].SQL = "INSERT IGNORE INTO " + rest
		}
	}
	if !parallel {
		// In a transaction: both layouts' statements in its local
		// transactions, committed together.
		res, err := e.run(ctx, rd, on, false)
		if err != nil {
			return res, err
		}
		if _, err := e.run(ctx, rd2, on, false); err != nil {
			return res, fmt.Errorf("shard: migration: the other layout: %w", err)
		}
		return res, nil
	}
	tx, err := e.Begin(ctx, nil)
	if err != nil {
		return Result{}, err
	}
	res, err := e.run(ctx, rd, tx.on, true)
	if err != nil {
		_ = tx.Rollback()
		return res, err
	}
	if _, err := e.run(ctx, rd2, e.pool, true); err != nil {
		_ = tx.Rollback()
		return Result{}, fmt.Errorf("shard: migration: the write failed on the other layout and was rolled back: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("shard: migration: the other layout has the write but its own layout did not commit it (Verify repairs the difference): %w", err)
	}
	return res, nil
}

// otherUnits are the secondary units that are not the same statement on
// the same data source as a primary unit (tables both layouts share).
func otherUnits(primary, secondary []Unit) []Unit {
	var out []Unit
	for _, s := range secondary {
		same := slices.ContainsFunc(primary, func(p Unit) bool {
			return p.DataSource == s.DataSource && p.SQL == s.SQL && fmt.Sprint(p.Args) == fmt.Sprint(s.Args)
		})
		if !same {
			out = append(out, s)
		}
	}
	return out
}

// Migrator copies and compares the rows of the tables a migration moves.
// Its rules are the migrating ones (phase DOUBLE_WRITE); dbs holds every
// data source of both layouts.
type Migrator struct {
	from, to *Rules
	dbs      map[string]*sql.DB
	toEx     *Executor
	fromEx   *Executor
	// Chunk is the rows copied or compared under one lock (default 500).
	Chunk int
	// Progress, when set, is told after each chunk.
	Progress func(Progress)
}

// Progress is a table's copy or comparison so far.
type Progress struct {
	Table, Step string // Step: copy, verify
	Node        Node   // the source node being read
	Rows        int64  // rows done in the table
}

// NewMigrator returns a migrator for the migration r holds.
func NewMigrator(r *Rules, dbs map[string]*sql.DB) (*Migrator, error) {
	m := r.Migration()
	if m == nil {
		return nil, errors.New("shard: the rules hold no migration")
	}
	plain := *r
	plain.migration = nil
	fromEx, err := NewExecutor(&plain, dbs, ExecutorConfig{})
	if err != nil {
		return nil, err
	}
	toEx, err := NewExecutor(m.To, dbs, ExecutorConfig{})
	if err != nil {
		return nil, err
	}
	return &Migrator{from: &plain, to: m.To, dbs: dbs, fromEx: fromEx, toEx: toEx, Chunk: 500}, nil
}

// Tables are the tables the migration moves (their data nodes differ).
func (m *Migrator) Tables() []string {
	var out []string
	mig := &Migration{To: m.to}
	for _, t := range m.to.Tables() {
		if mig.Moving(m.from, t) {
			out = append(out, t)
		}
	}
	return out
}

// Diff is what Verify found.
type Diff struct {
	Rows     int64 // rows compared
	Missing  int64 // in the old layout, not the new
	Changed  int64 // in both, different
	Extra    int64 // in the new layout, not the old
	Repaired int64
}

// Clean reports whether the layouts agreed.
func (d Diff) Clean() bool { return d.Missing == 0 && d.Changed == 0 && d.Extra == 0 }

// tableInfo is a physical table's key and columns.
type tableInfo struct {
	key  string
	cols []string
}

func (m *Migrator) info(ctx context.Context, n Node) (tableInfo, error) {
	db := m.dbs[n.DataSource]
	var ti tableInfo
	rows, err := db.QueryContext(ctx, "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION", n.Table)
	if err != nil {
		return ti, fmt.Errorf("shard: %s: primary key: %w", n, err)
	}
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return ti, err
		}
		keys = append(keys, k)
	}
	rows.Close()
	if len(keys) != 1 {
		return ti, unsupported("migrating %s: its primary key has %d columns (one is needed to copy it in order)", n, len(keys))
	}
	ti.key = keys[0]
	rows, err = db.QueryContext(ctx, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", n.Table)
	if err != nil {
		return ti, fmt.Errorf("shard: %s: columns: %w", n, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return ti, err
		}
		ti.cols = append(ti.cols, c)
	}
	return ti, rows.Err()
}

func quote(id string) string { return "`" + strings.ReplaceAll(id, "`", "``") + "`" }

// Copy copies table's rows from the old layout to the new, chunk by
// chunk in key order, each chunk read with FOR UPDATE and written with
// REPLACE (a row the double writes already brought is overwritten with
// the same values). A chunk that meets a deadlock or a lock timeout is
// tried again.
func (m *Migrator) Copy(ctx context.Context, table string) (int64, error) {
	var total int64
	err := m.eachChunk(ctx, table, "copy", func(ctx context.Context, tx *sql.Tx, ti tableInfo, rows [][]any) error {
		return m.put(ctx, table, ti, rows)
	}, &total)
	return total, err
}

// put writes rows into the new layout.
func (m *Migrator) put(ctx context.Context, table string, ti tableInfo, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	cols := make([]string, len(ti.cols))
	for i, c := range ti.cols {
		cols[i] = quote(c)
	}
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	var sb strings.Builder
	fmt.Fprintf(&sb, "REPLACE INTO %s (%s) VALUES ", quote(table), strings.Join(cols, ", "))
	args := make([]any, 0, len(rows)*len(cols))
	for i, r := range rows {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(one)
		args = append(args, r...)
	}
	_, err := m.toEx.Exec(ctx, sb.String(), args...)
	return err
}

// eachChunk reads table's old nodes chunk by chunk under FOR UPDATE and
// calls fn with each chunk's rows (retrying a chunk on a deadlock or a
// lock wait timeout).
func (m *Migrator) eachChunk(ctx context.Context, table, step string, fn func(context.Context, *sql.Tx, tableInfo, [][]any) error, total *int64) error {
	t := m.from.Table(table)
	if t == nil {
		return fmt.Errorf("shard: no table %s in the rules migrated from", table)
	}
	for _, n := range t.Nodes {
		ti, err := m.info(ctx, n)
		if err != nil {
			return err
		}
		var last any
		for {
			var rows [][]any
			for attempt := 0; ; attempt++ {
				rows, err = m.chunk(ctx, n, ti, last, fn)
				if err == nil || !retryable(err) || attempt >= 20 {
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Duration(attempt+1) * 10 * time.Millisecond):
				}
			}
			if err != nil {
				return fmt.Errorf("shard: %s %s from %s: %w", step, table, n, err)
			}
			if len(rows) == 0 {
				break
			}
			*total += int64(len(rows))
			last = rows[len(rows)-1][slices.Index(ti.cols, ti.key)]
			if m.Progress != nil {
				m.Progress(Progress{Table: table, Step: step, Node: n, Rows: *total})
			}
		}
	}
	return nil
}

// chunk locks and reads the next rows of node n after key last, hands
// them to fn and commits.
func (m *Migrator) chunk(ctx context.Context, n Node, ti tableInfo, last any, fn func(context.Context, *sql.Tx, tableInfo, [][]any) error) ([][]any, error) {
	tx, err := m.dbs[n.DataSource].BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	cols := make([]string, len(ti.cols))
	for i, c := range ti.cols {
		cols[i] = quote(c)
	}
	q := fmt.Sprintf("SELECT %s FROM %s", strings.Join(cols, ", "), quote(n.Table))
	var args []any
	if last != nil {
		q += fmt.Sprintf(" WHERE %s > ?", quote(ti.key))
		args = append(args, last)
	}
	q += fmt.Sprintf(" ORDER BY %s LIMIT %d FOR UPDATE", quote(ti.key), m.Chunk)
	rs, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var rows [][]any
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			rs.Close()
			return nil, err
		}
		rows = append(rows, vals)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return nil, err
	}
	if err := fn(ctx, tx, ti, rows); err != nil {
		return nil, err
	}
	return rows, tx.Commit()
}

// retryable: a deadlock (1213) or a lock wait timeout (1205), as
// go-sql-driver/mysql words them (the package does not link a driver).
func retryable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Error 1213") || strings.Contains(s, "Error 1205")
}

// Verify compares table in both layouts: each chunk of the old layout,
// locked, against the same keys in the new (missing and changed rows),
// then every key of the new layout against the old (extra rows). With
// repair it rewrites missing and changed rows from the old layout and
// deletes extra ones.
func (m *Migrator) Verify(ctx context.Context, table string, repair bool) (Diff, error) {
	var d Diff
	var total int64
	err := m.eachChunk(ctx, table, "verify", func(ctx context.Context, _ *sql.Tx, ti tableInfo, rows [][]any) error {
		if len(rows) == 0 {
			return nil
		}
		k := slices.Index(ti.cols, ti.key)
		want := map[string]uint32{}
		keys := make([]any, len(rows))
		for i, r := range rows {
			keys[i] = r[k]
			want[text(r[k])] = rowSum(r)
		}
		got, err := m.sums(ctx, m.toEx, table, ti, keys)
		if err != nil {
			return err
		}
		var bad [][]any
		for i, r := range rows {
			s, ok := got[text(keys[i])]
			switch {
			case !ok:
				d.Missing++
				bad = append(bad, r)
			case s != want[text(keys[i])]:
				d.Changed++
				bad = append(bad, r)
			}
		}
		d.Rows += int64(len(rows))
		if repair && len(bad) > 0 {
			if err := m.put(ctx, table, ti, bad); err != nil {
				return err
			}
			d.Repaired += int64(len(bad))
		}
		return nil
	}, &total)
	if err != nil {
		return d, err
	}
	// Extra rows: keys of the new layout the old does not have.
	nt := m.to.Table(table)
	for _, n := range nt.Nodes {
		ti, err := m.info(ctx, n)
		if err != nil {
			return d, err
		}
		var last any
		for {
			q := fmt.Sprintf("SELECT %s FROM %s", quote(ti.key), quote(n.Table))
			var args []any
			if last != nil {
				q += fmt.Sprintf(" WHERE %s > ?", quote(ti.key))
				args = append(args, last)
			}
			q += fmt.Sprintf(" ORDER BY %s LIMIT %d", quote(ti.key), m.Chunk)
			rs, err := m.dbs[n.DataSource].QueryContext(ctx, q, args...)
			if err != nil {
				return d, fmt.Errorf("shard: verify %s in %s: %w", table, n, err)
			}
			var keys []any
			for rs.Next() {
				var k any
				if err := rs.Scan(&k); err != nil {
					rs.Close()
					return d, err
				}
				keys = append(keys, k)
			}
			rs.Close()
			if len(keys) == 0 {
				break
			}
			last = keys[len(keys)-1]
			if err := m.extras(ctx, table, n, ti, keys, repair, &d); err != nil {
				return d, err
			}
		}
	}
	return d, nil
}

// extras finds the keys of new node n not in the old layout (read
// locked, in a transaction over the old layout, so a row being inserted
// is waited for) and, with repair, deletes them from n.
func (m *Migrator) extras(ctx context.Context, table string, n Node, ti tableInfo, keys []any, repair bool, d *Diff) error {
	tx, err := m.fromEx.Begin(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ")
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s IN (%s) FOR UPDATE", quote(ti.key), quote(table), quote(ti.key), marks), keys...)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, r := range rows.Values {
		have[text(r[0])] = true
	}
	var extra []any
	for _, k := range keys {
		if !have[text(k)] {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		// A double-written DELETE leaves the new layout before the old
		// commits: look again, now that the old layout's locks keep the
		// keys from changing.
		marks := strings.TrimSuffix(strings.Repeat("?, ", len(extra)), ", ")
		rs, err := m.dbs[n.DataSource].QueryContext(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s IN (%s)", quote(ti.key), quote(n.Table), quote(ti.key), marks), extra...)
		if err != nil {
			return err
		}
		extra = extra[:0]
		for rs.Next() {
			var k any
			if err := rs.Scan(&k); err != nil {
				rs.Close()
				return err
			}
			extra = append(extra, k)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
	}
	d.Extra += int64(len(extra))
	if repair && len(extra) > 0 {
		marks := strings.TrimSuffix(strings.Repeat("?, ", len(extra)), ", ")
		if _, err := m.dbs[n.DataSource].ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s IN (%s)", quote(n.Table), quote(ti.key), marks), extra...); err != nil {
			return err
		}
		d.Repaired += int64(len(extra))
	}
	return tx.Commit()
}

// sums reads the new layout's rows with keys and returns each one's sum
// by key.
func (m *Migrator) sums(ctx context.Context, ex *Executor, table string, ti tableInfo, keys []any) (map[string]uint32, error) {
	cols := make([]string, len(ti.cols))
	for i, c := range ti.cols {
		cols[i] = quote(c)
	}
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ")
	rows, err := ex.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s IN (%s)", strings.Join(cols, ", "), quote(table), quote(ti.key), marks), keys...)
	if err != nil {
		return nil, err
	}
	k := slices.Index(ti.cols, ti.key)
	out := map[string]uint32{}
	for _, r := range rows.Values {
		out[text(r[k])] = rowSum(r)
	}
	return out, nil
}

// rowSum is a checksum of a row's values as the driver gives them.
func rowSum(r []any) uint32 {
	h := crc32.NewIEEE()
	for _, v := range r {
		if v == nil {
			h.Write([]byte{0xff, 0})
			continue
		}
		s := text(v)
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	return h.Sum32()
}

// MigrationDoc returns the rules document doc (the rules migrated from,
// with or without a migration section) with its migration set to phase
// and target to (a whole rules document); phase "" removes the section.
// The result is checked as ParseRules would.
func MigrationDoc(doc []byte, phase string, to []byte) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil || root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: not a rules document (%v)", ErrRules, err)
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "migration" {
			m.Content = slices.Delete(m.Content, i, i+2)
			break
		}
	}
	if phase != "" {
		var target yaml.Node
		if err := yaml.Unmarshal(to, &target); err != nil || target.Kind != yaml.DocumentNode || len(target.Content) == 0 {
			return nil, fmt.Errorf("%w: the target is not a rules document (%v)", ErrRules, err)
		}
		sec := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "phase"}, {Kind: yaml.ScalarNode, Value: phase},
			{Kind: yaml.ScalarNode, Value: "to"}, target.Content[0],
		}}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "migration"}, sec)
	}
	out, err := yaml.Marshal(&root)
	if err != nil {
		return nil, err
	}
	if _, err := ParseRules(out); err != nil {
		return nil, err
	}
	return out, nil
}

// MigrationTarget returns the target rules document of doc's migration
// (nil when it has none).
func MigrationTarget(doc []byte) ([]byte, error) {
	var root struct {
		Migration *struct {
			To yaml.Node `yaml:"to"`
		} `yaml:"migration"`
	}
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRules, err)
	}
	if root.Migration == nil {
		return nil, nil
	}
	return yaml.Marshal(&root.Migration.To)
}
