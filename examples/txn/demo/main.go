// Command demo is the classic transfer example as global transactions: two
// banks, each a service with its own database (SQLite files here; any of
// SQLite, PostgreSQL or MariaDB works the same), move money between
// alice (bank A) and bob (bank B) through the coordinator of a running
// tangram server — a saga that commits, a saga whose credit fails and is
// compensated, and a TCC transfer that freezes, then confirms. It checks
// after each that no money was created or destroyed.
//
//	go run ./examples/txn/demo    # needs TANGRAM_TOKEN and a server on 127.0.0.1:7071
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"github.com/tangram-dev/tangram/txn"
)

type transfer struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// bank is a participant: accounts in its own database, branch operations
// behind the barrier, served over HTTP.
type bank struct {
	db  *sql.DB
	bar *txn.Barrier
	url string
}

func newBank(ctx context.Context, dir, name string, accounts map[string]int64) (*bank, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, name+".db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return nil, err
	}
	b := &bank{db: db, bar: &txn.Barrier{DB: db}}
	if err := b.bar.Init(ctx); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL, frozen INTEGER NOT NULL, incoming INTEGER NOT NULL)`); err != nil {
		return nil, err
	}
	for id, bal := range accounts {
		if _, err := db.ExecContext(ctx, `INSERT INTO accounts VALUES (?, ?, 0, 0)`, id, bal); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	op := func(path, stmt, failure string) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			bi, err := txn.BranchFromRequest(r)
			var tr transfer
			if err == nil {
				err = json.NewDecoder(r.Body).Decode(&tr)
			}
			if err != nil {
				txn.WriteResult(w, fmt.Errorf("%w: %v", txn.ErrBadRequest, err))
				return
			}
			txn.WriteResult(w, b.bar.Call(r.Context(), bi, func(tx *sql.Tx) error {
				res, err := tx.ExecContext(r.Context(), stmt, tr.Amount, tr.Account)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 0 && failure != "" {
					return fmt.Errorf("%w: %s: %s", txn.ErrFailure, tr.Account, failure)
				}
				return nil
			}))
		})
	}
	// Saga steps and their compensations (?1 the amount, ?2 the account).
	op("/debit", `UPDATE accounts SET balance = balance - ?1 WHERE id = ?2 AND balance >= ?1`, "insufficient funds")
	op("/debit-undo", `UPDATE accounts SET balance = balance + ?1 WHERE id = ?2`, "")
	op("/credit", `UPDATE accounts SET balance = balance + ?1 WHERE id = ?2`, "no such account")
	op("/credit-undo", `UPDATE accounts SET balance = balance - ?1 WHERE id = ?2`, "")
	// TCC: the payer's Try freezes, Confirm pays, Cancel unfreezes; the
	// payee's Try books it as incoming, Confirm credits, Cancel drops it.
	op("/freeze", `UPDATE accounts SET balance = balance - ?1, frozen = frozen + ?1 WHERE id = ?2 AND balance >= ?1`, "insufficient funds")
	op("/pay", `UPDATE accounts SET frozen = frozen - ?1 WHERE id = ?2`, "")
	op("/unfreeze", `UPDATE accounts SET balance = balance + ?1, frozen = frozen - ?1 WHERE id = ?2`, "")
	op("/expect", `UPDATE accounts SET incoming = incoming + ?1 WHERE id = ?2`, "no such account")
	op("/receive", `UPDATE accounts SET balance = balance + ?1, incoming = incoming - ?1 WHERE id = ?2`, "")
	op("/drop", `UPDATE accounts SET incoming = incoming - ?1 WHERE id = ?2`, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = http.Serve(ln, mux) }() // runs until the demo exits
	b.url = "http://" + ln.Addr().String()
	return b, nil
}

// balance returns an account's balance and what is frozen (payer) or
// incoming (payee) in it.
func (b *bank) balance(id string) (bal, held int64) {
	var frozen, incoming int64
	_ = b.db.QueryRow(`SELECT balance, frozen, incoming FROM accounts WHERE id = ?`, id).Scan(&bal, &frozen, &incoming)
	return bal, frozen + incoming
}

func main() {
	servers := flag.String("servers", "127.0.0.1:7071", "tangram server RPC addresses")
	flag.Parse()
	log.SetFlags(0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "txn-demo-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	a, err := newBank(ctx, dir, "bank-a", map[string]int64{"alice": 100})
	if err != nil {
		log.Fatal(err)
	}
	b, err := newBank(ctx, dir, "bank-b", map[string]int64{"bob": 10})
	if err != nil {
		log.Fatal(err)
	}
	c, err := txn.Dial(ctx, txn.Config{Servers: strings.Split(*servers, ","), Token: os.Getenv("TANGRAM_TOKEN"), App: "demo"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	check := func(what string, g txn.Global, err error) {
		if err != nil && !errors.Is(err, txn.ErrFailure) {
			log.Fatalf("%s: %v", what, err)
		}
		alice, frozen := a.balance("alice")
		bob, incoming := b.balance("bob")
		if incoming != 0 && g.Status.Final() {
			log.Fatalf("%s: bob has %d incoming after the end", what, incoming)
		}
		fmt.Printf("%-38s %-9s alice %3d (frozen %d)  bob %3d\n", what, g.Status, alice, frozen, bob)
		if alice+frozen+bob != 110 {
			log.Fatalf("money not conserved: %d", alice+frozen+bob)
		}
	}
	g, err := c.NewSaga(txn.Options{}).
		Add(a.url+"/debit", a.url+"/debit-undo", transfer{"alice", 30}).
		Add(b.url+"/credit", b.url+"/credit-undo", transfer{"bob", 30}).
		Submit(ctx, true)
	check("saga: alice → bob 30", g, err)
	g, err = c.NewSaga(txn.Options{}).
		Add(a.url+"/debit", a.url+"/debit-undo", transfer{"alice", 30}).
		Add(b.url+"/credit", b.url+"/credit-undo", transfer{"nobody", 30}).
		Submit(ctx, true)
	check("saga: alice → nobody 30 (compensated)", g, err)
	g, err = c.TCC(ctx, txn.Options{}, true, func(ctx context.Context, t *txn.Txn) error {
		if err := t.Branch(ctx, a.url+"/freeze", a.url+"/pay", a.url+"/unfreeze", transfer{"alice", 20}); err != nil {
			return err
		}
		return t.Branch(ctx, b.url+"/expect", b.url+"/receive", b.url+"/drop", transfer{"bob", 20})
	})
	check("tcc: alice → bob 20", g, err)
	g, err = c.TCC(ctx, txn.Options{}, true, func(ctx context.Context, t *txn.Txn) error {
		if err := t.Branch(ctx, a.url+"/freeze", a.url+"/pay", a.url+"/unfreeze", transfer{"alice", 20}); err != nil {
			return err
		}
		return t.Branch(ctx, b.url+"/expect", b.url+"/receive", b.url+"/drop", transfer{"nobody", 20})
	})
	if err == nil {
		log.Fatal("tcc to nobody: want its Try's failure")
	}
	wait := time.Now().Add(10 * time.Second) // the cancels run after the reply
	for time.Now().Before(wait) {
		if x, gerr := c.Get(ctx, g.XID); gerr == nil && x.Status.Final() {
			g = x
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	check("tcc: alice → nobody 20 (cancelled)", g, nil)
	fmt.Println("money conserved: 110 in all after every transaction")
}
