package at

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"github.com/tangram-dev/tangram/txn"
)

// ErrDirty: a rollback found a row that no longer equals what the branch
// left (someone outside the global transaction wrote it). Nothing is
// restored: an operator settles the row, then retries the transaction.
var ErrDirty = errors.New("txn/at: dirty write")

// Undo record states.
const (
	stateUndo = 0 // the branch's images, to apply on rollback
	stateDone = 1 // rolled back (or never ran): a late local commit is refused
)

// Rollback undoes branch of xid: its before images are written back,
// newest statement first, in one local transaction, once each row is
// found as the branch left it. A branch whose local transaction never
// committed leaves a marker instead, so that a commit arriving late fails
// rather than leave work no one will undo. Calling it again is harmless.
func (db *DB) Rollback(ctx context.Context, xid string, branch int64) error {
	ctx = Raw(ctx)
	for range 3 {
		err := db.rollback(ctx, xid, branch)
		if !txn.IsDuplicateKey(err) {
			return err
		}
		// A local commit wrote its undo record as we wrote the marker:
		// read it again and undo it.
	}
	return fmt.Errorf("txn/at: rollback of branch %d of %s: the undo record keeps changing", branch, xid)
}

func (db *DB) rollback(ctx context.Context, xid string, branch int64) error {
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("txn/at: rollback: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it does nothing
	var state int
	var info []byte
	err = tx.QueryRowContext(ctx, db.q(`SELECT state, info FROM `+db.undoTable+` WHERE xid = ? AND branch = ? FOR UPDATE`), xid, branch).Scan(&state, &info)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO `+db.undoTable+` (xid, branch, state, info, created_at) VALUES (?, ?, ?, ?, ?)`),
			xid, branch, stateDone, []byte{}, nowMillis()); err != nil {
			return err
		}
		return tx.Commit()
	case err != nil:
		return fmt.Errorf("txn/at: rollback: read the undo record: %w", err)
	case state == stateDone:
		return nil
	}
	u, err := decodeUndo(info)
	if err != nil {
		return fmt.Errorf("branch %d of %s: %w", branch, xid, err)
	}
	for i := len(u.Items) - 1; i >= 0; i-- {
		if err := db.undoItem(ctx, tx, u.Items[i]); err != nil {
			return fmt.Errorf("txn/at: rollback of branch %d of %s: %w", branch, xid, err)
		}
	}
	if _, err := tx.ExecContext(ctx, db.q(`UPDATE `+db.undoTable+` SET state = ?, info = ? WHERE xid = ? AND branch = ?`), stateDone, []byte{}, xid, branch); err != nil {
		return fmt.Errorf("txn/at: rollback: mark the undo record: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("txn/at: rollback of branch %d of %s: commit: %w", branch, xid, err)
	}
	return nil
}

func (db *DB) q(s string) string {
	if db.pg {
		return rebind(s)
	}
	return s
}

// undoItem restores one statement's rows.
func (db *DB) undoItem(ctx context.Context, tx *sql.Tx, it item) error {
	im := it.After
	if it.Kind == "delete" {
		im = it.Before
	}
	rows, err := decodeRows(im)
	if err != nil {
		return err
	}
	var before [][]driver.Value
	if it.Before != nil {
		if before, err = decodeRows(it.Before); err != nil {
			return err
		}
	}
	cur, err := db.current(ctx, tx, it.Table, im, rows)
	if err != nil {
		return err
	}
	pk := im.Cols[:im.PK]
	where := make([]string, len(pk))
	for i, c := range pk {
		where[i] = quote(db.pg, c) + " = ?"
	}
	for i, r := range rows {
		now, found := cur[pkKey(r[:im.PK])]
		switch it.Kind {
		case "update":
			switch {
			case found && sameRow(now, r):
				set := make([]string, 0, len(im.Cols)-im.PK)
				args := make([]any, 0, len(im.Cols))
				for j := im.PK; j < len(im.Cols); j++ {
					set = append(set, quote(db.pg, im.Cols[j])+" = ?")
					args = append(args, before[i][j])
				}
				if len(set) == 0 {
					continue
				}
				for j := range im.PK {
					args = append(args, r[j])
				}
				if _, err := tx.ExecContext(ctx, db.q(`UPDATE `+it.Table+` SET `+strings.Join(set, ", ")+` WHERE `+strings.Join(where, " AND ")), args...); err != nil {
					return fmt.Errorf("restore a row of %s: %w", it.Table, err)
				}
			case found && sameRow(now, before[i]):
				// already as it was
			default:
				return dirty(it.Name, r[:im.PK], found)
			}
		case "insert":
			switch {
			case !found:
				// gone already
			case sameRow(now, r):
				args := make([]any, im.PK)
				for j := range im.PK {
					args[j] = r[j]
				}
				if _, err := tx.ExecContext(ctx, db.q(`DELETE FROM `+it.Table+` WHERE `+strings.Join(where, " AND ")), args...); err != nil {
					return fmt.Errorf("delete an inserted row of %s: %w", it.Table, err)
				}
			default:
				return dirty(it.Name, r[:im.PK], found)
			}
		case "delete":
			switch {
			case !found:
				cols := make([]string, 0, len(im.Cols)-im.PK)
				args := make([]any, 0, len(im.Cols)-im.PK)
				for j := im.PK; j < len(im.Cols); j++ {
					cols = append(cols, quote(db.pg, im.Cols[j]))
					args = append(args, r[j])
				}
				if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO `+it.Table+` (`+strings.Join(cols, ", ")+`) VALUES (?`+strings.Repeat(", ?", len(cols)-1)+`)`), args...); err != nil {
					return fmt.Errorf("insert a deleted row of %s back: %w", it.Table, err)
				}
			case sameRow(now, r):
				// put back already
			default:
				return dirty(it.Name, r[:im.PK], found)
			}
		}
	}
	return nil
}

func dirty(table string, pk []driver.Value, found bool) error {
	how := "changed"
	if !found {
		how = "deleted"
	}
	return fmt.Errorf("%w: row %s was %s since the global transaction wrote it; nothing restored", ErrDirty, rowKey(table, pk), how)
}

func decodeRows(im *image) ([][]driver.Value, error) {
	out := make([][]driver.Value, len(im.Rows))
	for i, r := range im.Rows {
		out[i] = make([]driver.Value, len(r))
		for j, v := range r {
			var err error
			if out[i][j], err = v.decode(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func sameRow(a, b []driver.Value) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameValue(a[i], b[i]) {
			return false
		}
	}
	return true
}

// current reads (and locks) the rows of an image as they are now, by
// primary key.
func (db *DB) current(ctx context.Context, tx *sql.Tx, table string, im *image, rows [][]driver.Value) (map[string][]driver.Value, error) {
	out := make(map[string][]driver.Value, len(rows))
	if len(rows) == 0 {
		return out, nil
	}
	keys := make([][]driver.Value, len(rows))
	for i, r := range rows {
		keys[i] = r[:im.PK]
	}
	sel := make([]string, len(im.Cols))
	for i, c := range im.Cols {
		sel[i] = table + "." + quote(db.pg, c)
	}
	cond, nargs := keyCondition(db.pg, table, im.Cols[:im.PK], keys)
	args := make([]any, len(nargs))
	for i, a := range nargs {
		args[i] = a.Value
	}
	rs, err := tx.QueryContext(ctx, db.q(`SELECT `+strings.Join(sel, ", ")+` FROM `+table+` WHERE `+cond+` FOR UPDATE`), args...)
	if err != nil {
		return nil, fmt.Errorf("read rows of %s: %w", table, err)
	}
	defer rs.Close()
	for rs.Next() {
		vals := make([]any, len(im.Cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("read rows of %s: %w", table, err)
		}
		r := make([]driver.Value, len(vals))
		for i, v := range vals {
			r[i] = v
		}
		out[pkKey(r[:im.PK])] = r
	}
	return out, rs.Err()
}
