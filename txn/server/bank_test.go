package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/txn"
)

// bank is a participant service: one real database (PostgreSQL or
// MariaDB) with accounts, its branch operations behind the barrier, served
// over HTTP on a real socket (and over Tangram RPC: serveRPC) — the seed's
// transfer example. Try freezes
// (balance → frozen), Confirm settles the frozen amount, Cancel returns it.
type bank struct {
	name string
	db   *sql.DB
	pg   bool
	bar  *txn.Barrier
	xa   *txn.XA
	srv  *httptest.Server
	ops  map[string]branchOp
	// service is the registry name the bank serves RPC under (serveRPC).
	service string

	// fault injection: the next errs calls of an operation answer 500.
	errs  atomic.Int64
	calls atomic.Int64
}

type transfer struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

func newBank(t *testing.T, name string, d store.Dialect) *bank {
	t.Helper()
	st := storetest.Open(t, d)
	b := &bank{name: name, db: st.DB(), pg: d == store.Postgres}
	b.bar = &txn.Barrier{DB: b.db}
	ctx := context.Background()
	if err := b.bar.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.ExecContext(ctx, `CREATE TABLE accounts (id VARCHAR(32) PRIMARY KEY, balance BIGINT NOT NULL, frozen BIGINT NOT NULL, incoming BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	b.ops = map[string]branchOp{}
	op := func(path string, fn func(tx *sql.Tx, tr transfer) error) {
		b.ops[path] = func(ctx context.Context, bi txn.BranchInfo, payload []byte) error {
			b.calls.Add(1)
			if b.errs.Load() > 0 && b.errs.Add(-1) >= 0 {
				return errors.New("injected outage")
			}
			var tr transfer
			if err := json.Unmarshal(payload, &tr); err != nil {
				return fmt.Errorf("%w: body: %v", txn.ErrBadRequest, err)
			}
			return b.bar.Call(ctx, bi, func(tx *sql.Tx) error { return fn(tx, tr) })
		}
		mux.HandleFunc("POST "+path, b.httpOp(path))
	}
	exec := func(tx *sql.Tx, q string, args ...any) (int64, error) {
		res, err := tx.Exec(b.q(q), args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	// Saga: debit and credit, each with its compensation.
	op("/saga/debit", func(tx *sql.Tx, tr transfer) error {
		n, err := exec(tx, `UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ?`, tr.Amount, tr.Account, tr.Amount)
		if err == nil && n == 0 {
			return fmt.Errorf("%w: %s: insufficient funds", txn.ErrFailure, tr.Account)
		}
		return err
	})
	op("/saga/debit-undo", func(tx *sql.Tx, tr transfer) error {
		_, err := exec(tx, `UPDATE accounts SET balance = balance + ? WHERE id = ?`, tr.Amount, tr.Account)
		return err
	})
	op("/saga/credit", func(tx *sql.Tx, tr transfer) error {
		n, err := exec(tx, `UPDATE accounts SET balance = balance + ? WHERE id = ?`, tr.Amount, tr.Account)
		if err == nil && n == 0 {
			return fmt.Errorf("%w: %s: no such account", txn.ErrFailure, tr.Account)
		}
		return err
	})
	op("/saga/credit-undo", func(tx *sql.Tx, tr transfer) error {
		_, err := exec(tx, `UPDATE accounts SET balance = balance - ? WHERE id = ?`, tr.Amount, tr.Account)
		return err
	})
	// TCC: the debit freezes, the credit holds the amount as incoming.
	op("/tcc/debit-try", func(tx *sql.Tx, tr transfer) error {
		n, err := exec(tx, `UPDATE accounts SET balance = balance - ?, frozen = frozen + ? WHERE id = ? AND balance >= ?`, tr.Amount, tr.Amount, tr.Account, tr.Amount)
		if err == nil && n == 0 {
			return fmt.Errorf("%w: %s: insufficient funds", txn.ErrFailure, tr.Account)
		}
		return err
	})
	op("/tcc/debit-confirm", func(tx *sql.Tx, tr transfer) error {
		_, err := exec(tx, `UPDATE accounts SET frozen = frozen - ? WHERE id = ?`, tr.Amount, tr.Account)
		return err
	})
	op("/tcc/debit-cancel", func(tx *sql.Tx, tr transfer) error {
		_, err := exec(tx, `UPDATE accounts SET balance = balance + ?, frozen = frozen - ? WHERE id = ?`, tr.Amount, tr.Amount, tr.Account)
		return err
	})
	op("/tcc/credit-try", func(tx *sql.Tx, tr transfer) error {
		n, err := exec(tx, `UPDATE accounts SET incoming = incoming + ? WHERE id = ?`, tr.Amount, tr.Account)
		if err == nil && n == 0 {
			return fmt.Errorf("%w: %s: no such account", txn.ErrFailure, tr.Account)
		}
		return err
	})
	op("/tcc/credit-confirm", func(tx *sql.Tx, tr transfer) error {
		_, err := exec(tx, `UPDATE accounts SET balance = balance + ?, incoming = incoming - ? WHERE id = ?`, tr.Amount, tr.Amount, tr.Account)
		return err
	})
	op("/tcc/credit-cancel", func(tx *sql.Tx, tr transfer) error {
		_, err := exec(tx, `UPDATE accounts SET incoming = incoming - ? WHERE id = ?`, tr.Amount, tr.Account)
		return err
	})
	// XA: one endpoint per branch kind; Try runs the statement in an XA
	// branch and prepares it, the coordinator commits or rolls it back.
	b.xa = &txn.XA{DB: b.db}
	xaOp := func(path, stmt string, failIfNone string) {
		b.ops[path] = func(ctx context.Context, bi txn.BranchInfo, payload []byte) error {
			b.calls.Add(1)
			if bi.Op != txn.OpTry && b.errs.Load() > 0 && b.errs.Add(-1) >= 0 {
				return errors.New("injected outage")
			}
			var tr transfer
			if err := json.Unmarshal(payload, &tr); err != nil {
				return fmt.Errorf("%w: %v", txn.ErrBadRequest, err)
			}
			return b.xa.Serve(ctx, bi, func(ctx context.Context, conn *sql.Conn) error {
				res, err := conn.ExecContext(ctx, b.q(stmt), tr.Amount, tr.Account, tr.Amount)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 0 {
					return fmt.Errorf("%w: %s: %s", txn.ErrFailure, tr.Account, failIfNone)
				}
				return nil
			})
		}
		mux.HandleFunc("POST "+path, b.httpOp(path))
	}
	xaOp("/xa/debit", `UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ?`, "insufficient funds")
	xaOp("/xa/credit", `UPDATE accounts SET balance = balance + ? WHERE id = ? AND ? > 0`, "no such account")
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	return b
}

// branchOp is one branch operation of the bank, whatever carries it.
type branchOp func(ctx context.Context, bi txn.BranchInfo, payload []byte) error

// httpOp serves an operation over HTTP.
func (b *bank) httpOp(path string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		bi, err := txn.BranchFromRequest(r)
		if err != nil {
			txn.WriteResult(w, err)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			txn.WriteResult(w, fmt.Errorf("%w: body: %v", txn.ErrBadRequest, err))
			return
		}
		txn.WriteResult(w, b.ops[path](r.Context(), bi, body))
	}
}

// serveRPC serves every operation over Tangram RPC as method
// "bank/<path with dashes>" and registers the server in the registry as
// service: the coordinator then calls rpc://service/bank/….
func (b *bank) serveRPC(t *testing.T, h *servertest.Harness, service string) {
	t.Helper()
	srv, err := rpc.NewServer(rpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for path, fn := range b.ops {
		if err := txn.HandleBranch(srv, rpcMethod(path), fn); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	rc, err := registry.NewClient(context.Background(), registry.ClientConfig{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	if _, err := rc.Register(context.Background(), registry.Instance{Key: registry.Key{Service: service}, Host: "127.0.0.1", Port: uint16(port),
		Weight: 100, Enabled: true, Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	b.service = service
}

func rpcMethod(path string) string {
	return "bank/" + strings.ReplaceAll(strings.Trim(path, "/"), "/", "-")
}

// rpcURL is the RPC target of an operation served by serveRPC.
func (b *bank) rpcURL(path string) string { return "rpc://" + b.service + "/" + rpcMethod(path) }

// q rewrites ? placeholders for PostgreSQL.
func (b *bank) q(s string) string {
	if !b.pg {
		return s
	}
	var out strings.Builder
	n := 0
	for _, c := range s {
		if c == '?' {
			n++
			out.WriteString("$" + strconv.Itoa(n))
			continue
		}
		out.WriteRune(c)
	}
	return out.String()
}

func (b *bank) url(path string) string { return b.srv.URL + path }

func (b *bank) open(t *testing.T, id string, balance int64) {
	t.Helper()
	if _, err := b.db.Exec(b.q(`INSERT INTO accounts (id, balance, frozen, incoming) VALUES (?, ?, 0, 0)`), id, balance); err != nil {
		t.Fatal(err)
	}
}

type account struct{ balance, frozen, incoming int64 }

func (b *bank) account(t *testing.T, id string) account {
	t.Helper()
	var a account
	if err := b.db.QueryRow(b.q(`SELECT balance, frozen, incoming FROM accounts WHERE id = ?`), id).Scan(&a.balance, &a.frozen, &a.incoming); err != nil {
		t.Fatal(err)
	}
	return a
}

// total is every unit the bank holds for the account, in whatever state.
func (b *bank) total(t *testing.T, id string) int64 {
	a := b.account(t, id)
	return a.balance + a.frozen
}
