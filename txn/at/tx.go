package at

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tangram-dev/tangram/txn"
)

// localTx is a local transaction of a wrapped connection. Inside a global
// transaction (xid) each write's images are recorded; Commit registers the
// branch with its row locks, writes the undo log and commits, all or
// nothing.
type localTx struct {
	c          *conn
	base       driver.Tx
	ctx        context.Context // Begin's, without its cancellation: Commit has none of its own
	xid        string
	globalLock bool
	items      []item
	locks      []string
	done       bool
}

func (t *localTx) end() {
	t.done = true
	if t.c.tx == t {
		t.c.tx = nil
	}
}

func (t *localTx) Rollback() error {
	if t.done {
		return nil
	}
	t.end()
	return t.base.Rollback()
}

func (t *localTx) Commit() (err error) {
	if t.done {
		return errors.New("txn/at: transaction already ended")
	}
	defer t.end()
	if len(t.items) == 0 {
		return t.base.Commit()
	}
	db := t.c.db
	ctx, cancel := context.WithTimeout(t.ctx, db.cfg.LockWait+db.cfg.CallTimeout)
	defer cancel()
	fail := func(e error) error { return errors.Join(e, t.base.Rollback()) }
	if t.xid == "" { // a local transaction that respects global locks
		if err := db.waitFree(ctx, "", t.locks); err != nil {
			return fail(err)
		}
		return t.base.Commit()
	}
	branch, err := db.register(ctx, t.xid, t.locks)
	if err != nil {
		return fail(err)
	}
	info, err := json.Marshal(undoLog{Items: t.items})
	if err != nil {
		return fail(fmt.Errorf("txn/at: undo log: %w", err))
	}
	q := `INSERT INTO ` + db.undoTable + ` (xid, branch, state, info, created_at) VALUES (?, ?, 0, ?, ?)`
	if db.pg {
		q = rebind(q)
	}
	if _, err := t.c.baseExec(ctx, q, named([]driver.Value{t.xid, int64(branch), info, nowMillis()}), true); err != nil {
		if db.isDuplicate(err) {
			return fail(fmt.Errorf("txn/at: branch %d of %s was rolled back before its local transaction committed: %w", branch, t.xid, txn.ErrState))
		}
		return fail(fmt.Errorf("txn/at: write the undo log of branch %d of %s: %w", branch, t.xid, err))
	}
	if err := t.base.Commit(); err != nil {
		// The branch is registered without an undo log: a rollback finds
		// none and does nothing, as it should.
		return fmt.Errorf("txn/at: commit branch %d of %s: %w", branch, t.xid, err)
	}
	db.m.branches.Add(1)
	return nil
}

// exec runs a write, recording its images.
func (t *localTx) exec(ctx context.Context, p *plan, q string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) < p.params {
		return nil, fmt.Errorf("txn/at: the statement has %d placeholders and %d arguments", p.params, len(args))
	}
	db := t.c.db
	pk, err := db.primaryKey(ctx, t.c, p)
	if err != nil {
		return nil, err
	}
	switch p.kind {
	case update:
		cols := slices.Clone(pk)
		for _, c := range p.setCols {
			if slices.Contains(pk, c) {
				return nil, unsupported("UPDATE of primary key column %s of %s", c, p.table)
			}
			if !slices.Contains(cols, c) {
				cols = append(cols, c)
			}
		}
		before, err := t.image(ctx, p, cols, len(pk), p.conditionSQL(db.pg), p.conditionArgs(args), true)
		if err != nil {
			return nil, err
		}
		res, err := t.c.baseExec(ctx, q, args, false)
		if err != nil || len(before.Rows) == 0 {
			return res, err
		}
		after, err := t.byKey(ctx, p, cols, len(pk), before)
		if err != nil {
			return nil, err
		}
		t.record(item{Kind: "update", Table: p.tableSQL, Name: p.table, Before: before, After: after}, p, before)
		return res, nil
	case del:
		before, err := t.image(ctx, p, append(slices.Clone(pk), "*"), len(pk), p.conditionSQL(db.pg), p.conditionArgs(args), true)
		if err != nil {
			return nil, err
		}
		res, err := t.c.baseExec(ctx, q, args, false)
		if err != nil || len(before.Rows) == 0 {
			return res, err
		}
		t.record(item{Kind: "delete", Table: p.tableSQL, Name: p.table, Before: before}, p, before)
		return res, nil
	case insert:
		keys, err := insertedKeys(p, pk, args, db.pg)
		if err != nil {
			return nil, err
		}
		res, err := t.c.baseExec(ctx, q, args, false)
		if err != nil {
			return res, err
		}
		if keys == nil { // MySQL's AUTO_INCREMENT assigned the key
			first, err := res.LastInsertId()
			if err != nil || first == 0 {
				return nil, fmt.Errorf("txn/at: INSERT into %s: the primary key %s is neither given nor AUTO_INCREMENT", p.table, pk[0])
			}
			for i := range p.rows {
				keys = append(keys, []driver.Value{first + int64(i)})
			}
		}
		cols := slices.Clone(pk)
		for _, c := range p.cols {
			if !slices.Contains(cols, c) {
				cols = append(cols, c)
			}
		}
		after, err := t.byKeys(ctx, p, cols, len(pk), keys)
		if err != nil {
			return nil, err
		}
		if len(after.Rows) != len(p.rows) {
			return nil, fmt.Errorf("txn/at: INSERT into %s: found %d of the %d rows inserted by their primary key", p.table, len(after.Rows), len(p.rows))
		}
		t.record(item{Kind: "insert", Table: p.tableSQL, Name: p.table, After: after}, p, after)
		return res, nil
	}
	return nil, fmt.Errorf("txn/at: %s is not a write", p.kind)
}

// record keeps a statement's undo item and its rows' lock keys.
func (t *localTx) record(it item, p *plan, im *image) {
	t.items = append(t.items, it)
	for _, r := range im.Rows {
		pk := make([]driver.Value, im.PK)
		for i := range pk {
			pk[i], _ = r[i].decode()
		}
		t.locks = append(t.locks, rowKey(p.table, pk))
	}
}

// lockRead runs before a SELECT … FOR UPDATE: it locks the rows locally,
// then waits until no other global transaction holds them, so the read
// sees only committed global writes (read committed).
func (t *localTx) lockRead(ctx context.Context, p *plan, args []driver.NamedValue) error {
	db := t.c.db
	pk, err := db.primaryKey(ctx, t.c, p)
	if err != nil {
		return err
	}
	im, err := t.image(ctx, p, pk, len(pk), p.conditionSQL(db.pg), p.conditionArgs(args), true)
	if err != nil {
		return err
	}
	if len(im.Rows) == 0 {
		return nil
	}
	keys := make([]string, 0, len(im.Rows))
	for _, r := range im.Rows {
		vals := make([]driver.Value, len(r))
		for i := range r {
			vals[i], _ = r[i].decode()
		}
		keys = append(keys, rowKey(p.table, vals))
	}
	cctx, cancel := context.WithTimeout(ctx, db.cfg.LockWait+db.cfg.CallTimeout)
	defer cancel()
	return db.waitFree(cctx, t.xid, keys)
}

// image selects cols (a "*" column: every column) of the rows the
// condition matches, locking them when forUpdate.
func (t *localTx) image(ctx context.Context, p *plan, cols []string, npk int, cond string, args []driver.NamedValue, forUpdate bool) (*image, error) {
	db := t.c.db
	sel := make([]string, len(cols))
	for i, c := range cols {
		if c == "*" {
			sel[i] = p.qual + ".*"
		} else {
			sel[i] = p.qual + "." + quote(db.pg, c)
		}
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM " + p.from + cond
	if forUpdate {
		q += " FOR UPDATE"
	}
	if db.pg {
		q = rebind(q)
	}
	names, rows, err := t.c.baseQuery(ctx, q, args, true)
	if err != nil {
		return nil, fmt.Errorf("txn/at: image of %s: %w", p.table, err)
	}
	if len(rows) > txn.MaxLocks {
		return nil, fmt.Errorf("txn/at: the statement touches %d rows of %s: at most %d per branch", len(rows), p.table, txn.MaxLocks)
	}
	im := &image{Cols: names, PK: npk, Rows: make([][]value, len(rows))}
	for i, r := range rows {
		im.Rows[i] = make([]value, len(r))
		for j, v := range r {
			if im.Rows[i][j], err = encode(v); err != nil {
				return nil, fmt.Errorf("%w (column %s of %s)", err, names[j], p.table)
			}
		}
	}
	return im, nil
}

// byKey selects the rows of before again by their primary key.
func (t *localTx) byKey(ctx context.Context, p *plan, cols []string, npk int, before *image) (*image, error) {
	keys := make([][]driver.Value, len(before.Rows))
	for i, r := range before.Rows {
		keys[i] = make([]driver.Value, npk)
		for j := range npk {
			keys[i][j], _ = r[j].decode()
		}
	}
	after, err := t.byKeys(ctx, p, cols, npk, keys)
	if err != nil {
		return nil, err
	}
	if len(after.Rows) != len(before.Rows) {
		return nil, fmt.Errorf("txn/at: %s: %d rows before the update, %d after", p.table, len(before.Rows), len(after.Rows))
	}
	// The undo pairs rows by position: order the after image as the before.
	pos := make(map[string]int, len(after.Rows))
	for i, r := range after.Rows {
		pos[imageKey(r, npk)] = i
	}
	rows := make([][]value, len(before.Rows))
	for i, r := range before.Rows {
		j, ok := pos[imageKey(r, npk)]
		if !ok {
			return nil, fmt.Errorf("txn/at: %s: a row updated is gone from the after image", p.table)
		}
		rows[i] = after.Rows[j]
	}
	after.Rows = rows
	return after, nil
}

func imageKey(r []value, npk int) string {
	vals := make([]driver.Value, npk)
	for i := range npk {
		vals[i], _ = r[i].decode()
	}
	return pkKey(vals)
}

// byKeys selects cols of the rows with the given primary keys.
func (t *localTx) byKeys(ctx context.Context, p *plan, cols []string, npk int, keys [][]driver.Value) (*image, error) {
	pk := cols[:npk]
	cond, args := keyCondition(t.c.db.pg, p.qual, pk, keys)
	return t.image(ctx, p, cols, npk, " WHERE "+cond, args, false)
}

// keyCondition is "pk IN (…)" (a row constructor for a composite key).
func keyCondition(pg bool, qual string, pk []string, keys [][]driver.Value) (string, []driver.NamedValue) {
	var sb strings.Builder
	args := make([]driver.NamedValue, 0, len(keys)*len(pk))
	names := make([]string, len(pk))
	for i, c := range pk {
		names[i] = qual + "." + quote(pg, c)
	}
	one := "?"
	if len(pk) > 1 {
		sb.WriteString("(" + strings.Join(names, ", ") + ")")
		one = "(" + strings.Repeat("?, ", len(pk)-1) + "?)"
	} else {
		sb.WriteString(names[0])
	}
	sb.WriteString(" IN (")
	for i, k := range keys {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(one)
		for _, v := range k {
			args = append(args, driver.NamedValue{Ordinal: len(args) + 1, Value: v})
		}
	}
	sb.WriteString(")")
	return sb.String(), args
}

// insertedKeys returns the primary key of each row an INSERT adds, from
// its values; nil when MySQL's AUTO_INCREMENT assigns a one-column key.
func insertedKeys(p *plan, pk []string, args []driver.NamedValue, pg bool) ([][]driver.Value, error) {
	idx := make([]int, len(pk))
	missing := 0
	for i, c := range pk {
		idx[i] = slices.Index(p.cols, c)
		if idx[i] < 0 {
			missing++
		}
	}
	if missing > 0 {
		if len(pk) == 1 && !pg {
			return nil, nil
		}
		return nil, unsupported("INSERT into %s without a value for every primary key column (%s)", p.table, strings.Join(pk, ", "))
	}
	out := make([][]driver.Value, len(p.rows))
	for r, row := range p.rows {
		out[r] = make([]driver.Value, len(pk))
		for i, j := range idx {
			o := row[j]
			switch {
			case o.expr:
				return nil, unsupported("INSERT into %s whose primary key %s is an expression", p.table, pk[i])
			case o.arg >= 0:
				if o.arg >= len(args) {
					return nil, fmt.Errorf("txn/at: INSERT into %s: argument %d missing", p.table, o.arg+1)
				}
				out[r][i] = args[o.arg].Value
			default:
				out[r][i] = o.lit
			}
		}
	}
	return out, nil
}

// conditionSQL is the statement's WHERE (and a MySQL UPDATE's or
// DELETE's ORDER BY and LIMIT), for the image query.
func (p *plan) conditionSQL(pg bool) string {
	s := ""
	if p.where != "" {
		s = " WHERE " + p.where
	}
	if p.tail != "" {
		s += " " + p.tail
	}
	return s
}

func (p *plan) conditionArgs(args []driver.NamedValue) []driver.NamedValue {
	idx := append(slices.Clone(p.whereArgs), p.tailArgs...)
	out := make([]driver.NamedValue, len(idx))
	for i, j := range idx {
		if j >= 0 && j < len(args) {
			out[i] = driver.NamedValue{Ordinal: i + 1, Value: args[j].Value}
		}
	}
	return out
}
