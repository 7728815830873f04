package at

import (
	"database/sql/driver"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestPlanUpdateDeleteInsert(t *testing.T) {
	p := newPlanner(false)
	pl, err := p.get("UPDATE accounts AS a SET a.balance = a.balance - ?, frozen = ? WHERE a.id = ? AND a.balance >= ? ORDER BY a.id LIMIT ?")
	if err != nil {
		t.Fatal(err)
	}
	if pl.kind != update || pl.table != "accounts" || pl.qual != "`a`" || !slices.Equal(pl.setCols, []string{"balance", "frozen"}) {
		t.Fatalf("update plan: %+v", pl)
	}
	if !slices.Equal(pl.whereArgs, []int{2, 3}) || !slices.Equal(pl.tailArgs, []int{4}) || pl.params != 5 {
		t.Fatalf("update arguments: where %v tail %v params %d", pl.whereArgs, pl.tailArgs, pl.params)
	}
	if pl.where != "`a`.`id`=? AND `a`.`balance`>=?" || pl.tail != "ORDER BY `a`.`id` LIMIT ?" {
		t.Fatalf("update condition %q tail %q", pl.where, pl.tail)
	}
	pl, err = p.get("delete from shop.orders where status = 'x?' and id in (?, ?)")
	if err != nil {
		t.Fatal(err)
	}
	if pl.kind != del || pl.schema != "shop" || pl.tableSQL != "`shop`.`orders`" || !slices.Equal(pl.whereArgs, []int{0, 1}) {
		t.Fatalf("delete plan: %+v", pl)
	}
	pl, err = p.get("INSERT INTO ledger (id, account, amount) VALUES (?, 'alice', ?), (7, ?, 3 + 4)")
	if err != nil {
		t.Fatal(err)
	}
	if pl.kind != insert || len(pl.rows) != 2 || pl.rows[0][0].arg != 0 || pl.rows[0][1].lit != "alice" || pl.rows[1][0].lit != int64(7) ||
		pl.rows[1][1].arg != 2 || !pl.rows[1][2].expr {
		t.Fatalf("insert plan: %+v", pl)
	}
	for _, q := range []string{"SELECT * FROM t WHERE id = 1", "  /* c */ select 1", "SET NAMES utf8mb4", "COMMIT"} {
		if pl, err := p.get(q); err != nil || pl.kind != passThrough {
			t.Fatalf("%q: %+v %v", q, pl, err)
		}
	}
	pl, err = p.get("SELECT balance FROM accounts WHERE id = ? FOR UPDATE")
	if err != nil || pl.kind != selectForUpdate || !slices.Equal(pl.whereArgs, []int{0}) {
		t.Fatalf("select for update: %+v %v", pl, err)
	}
}

func TestPlanPostgresMarkers(t *testing.T) {
	p := newPlanner(true)
	pl, err := p.get(`UPDATE Accounts SET balance = balance + $2 WHERE id = $1 AND note <> '$3'`)
	if err != nil {
		t.Fatal(err)
	}
	if pl.table != "accounts" || pl.qual != `"accounts"` || !slices.Equal(pl.whereArgs, []int{0}) || pl.where != `"id"=? AND "note"!='$3'` {
		t.Fatalf("plan: %+v where %q", pl, pl.where)
	}
	if got := rebind("SELECT a FROM t WHERE a = ? AND b = '?' AND c IN (?, ?)"); got != "SELECT a FROM t WHERE a = $1 AND b = '?' AND c IN ($2, $3)" {
		t.Fatalf("rebind: %s", got)
	}
	if _, _, err := dollarToMarks("UPDATE t SET a = 'x WHERE id = $1"); err == nil {
		t.Fatal("an unterminated quote was accepted")
	}
}

func TestPlanRefusesWhatItCannotUndo(t *testing.T) {
	p := newPlanner(false)
	for q, want := range map[string]string{
		"UPDATE a JOIN b ON a.id = b.id SET a.x = 1":                        "several tables",
		"UPDATE t SET x = 1 WHERE id IN (SELECT id FROM u)":                 "subquery",
		"INSERT INTO t (id) SELECT id FROM u":                               "INSERT … SELECT",
		"INSERT INTO t (id, x) VALUES (1, 2) ON DUPLICATE KEY UPDATE x = 3": "ON DUPLICATE KEY UPDATE",
		"REPLACE INTO t (id) VALUES (1)":                                    "REPLACE",
		"INSERT INTO t VALUES (1)":                                          "without a column list",
		"DELETE a, b FROM a JOIN b ON a.id = b.id":                          "several tables",
		"UPDATE IGNORE t SET x = 1":                                         "UPDATE IGNORE",
		"SELECT * FROM a JOIN b ON a.id = b.id FOR UPDATE":                  "several tables",
	} {
		_, err := p.get(q)
		if err == nil || !errors.Is(err, errUnsupported) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an unsupported error naming %q", q, err, want)
		}
	}
	if _, err := p.get("UPDATE t SET WHERE"); err == nil || !strings.Contains(err.Error(), "parse") {
		t.Errorf("a syntax error: %v", err)
	}
}

func TestValueRoundTripAndCanon(t *testing.T) {
	for _, v := range []any{nil, int64(-5), 1.25, true, "x,y", []byte{0, 1, 2}} {
		e, err := encode(v)
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.decode()
		if err != nil || !sameValue(d, v) {
			t.Fatalf("%v: %v %v", v, d, err)
		}
	}
	if !sameValue([]byte("42"), int64(42)) || sameValue(nil, "") || !sameValue(float32(0.1), []byte("0.1")) {
		t.Fatal("canon does not match the text and binary protocols' values")
	}
	if k := rowKey("t", []driver.Value{int64(1), "a,b", nil}); k != `t:1,"a,b",NULL` {
		t.Fatalf("row key %s", k)
	}
}

// FuzzPlan: any statement text gets a plan or an error, never a panic.
func FuzzPlan(f *testing.F) {
	for _, s := range []string{"UPDATE t SET a = ? WHERE id = ?", "INSERT INTO t (id) VALUES (?), (2)", "DELETE FROM t WHERE id = $1",
		"SELECT * FROM t WHERE id = ? FOR UPDATE", "update t set a=1 order by id limit 3"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, q string, pg bool) {
		p := newPlanner(pg)
		_, _ = p.get(q)
	})
}

// FuzzUndoLog: an undo record read back from the database is checked
// before it is applied: any bytes give a log or an error, never a panic.
func FuzzUndoLog(f *testing.F) {
	f.Add([]byte(`{"items":[{"kind":"update","table":"t","before":{"cols":["id","a"],"pk":1,"rows":[[{"k":"i","v":"1"},{"k":"s","v":"x"}]]},"after":{"cols":["id","a"],"pk":1,"rows":[[{"k":"i","v":"1"},{"k":"s","v":"y"}]]}}]}`))
	f.Add([]byte(`{"items":[{"kind":"delete","table":"t","before":{"cols":["id"],"pk":2,"rows":[]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := decodeUndo(b)
		if err != nil {
			return
		}
		for _, it := range u.Items {
			for _, im := range []*image{it.Before, it.After} {
				if im != nil {
					_, _ = decodeRows(im)
				}
			}
		}
	})
}
