package msg_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/broker"
	mqstore "github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/txn"
	"github.com/tangram-dev/tangram/txn/msg"
)

// bank is one real database with an accounts table and the barrier.
type bank struct {
	st  *store.Store
	db  *sql.DB
	bar *txn.Barrier
}

func newBank(t *testing.T, d store.Dialect, accounts map[string]int64) *bank {
	t.Helper()
	st := storetest.Open(t, d)
	b := &bank{st: st, db: st.DB()}
	b.bar = &txn.Barrier{DB: b.db}
	ctx := context.Background()
	if err := b.bar.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.ExecContext(ctx, `CREATE TABLE accounts (id VARCHAR(32) PRIMARY KEY, balance BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for id, bal := range accounts {
		if _, err := b.db.ExecContext(ctx, b.q(`INSERT INTO accounts (id, balance) VALUES (?, ?)`), id, bal); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// q rewrites ? placeholders for the bank's dialect.
func (b *bank) q(s string) string { return b.st.Rebind(s) }

func (b *bank) balance(t *testing.T, id string) int64 {
	t.Helper()
	var v int64
	if err := b.db.QueryRow(b.q(`SELECT balance FROM accounts WHERE id = ?`), id).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// env is a Tangram server (name service, auth) with one broker whose
// check-backs come quickly.
type env struct {
	t *testing.T
	h *servertest.Harness
}

func newEnv(t *testing.T) *env {
	h := servertest.Start(t, func(c *server.Config) { c.BrokerAddr = "off" })
	levels := make([]time.Duration, 18)
	for i := range levels {
		levels[i] = time.Duration(50*(i+1)) * time.Millisecond
	}
	b, err := broker.New(broker.Config{Name: "b1", Dir: filepath.Join(t.TempDir(), "b1"), Addr: "127.0.0.1:0",
		Store: mqstore.Config{SegmentSize: 4 << 20}, AutoCreate: true, DelayLevels: levels,
		RegisterInterval: 200 * time.Millisecond, ConsumerTimeout: 3 * time.Second,
		TxCheckAfter: 300 * time.Millisecond, TxCheckInterval: 300 * time.Millisecond, TxMaxChecks: 20,
		Authenticate: func(ctx context.Context, tok string) (*auth.Principal, error) {
			return h.Srv.Auth().AuthenticateToken(ctx, tok)
		},
		Register: func(_ context.Context, in wire.BrokerInfo) error { return h.Srv.Names().Register(in) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	wait.For(t, 5*time.Second, "the broker to register", func() bool { return len(h.Srv.Names().Brokers()) == 1 })
	return &env{t: t, h: h}
}

func (e *env) client() *mq.Client {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := mq.NewClient(ctx, mq.Config{Servers: []string{e.h.Srv.RPCAddr()}, Token: servertest.AdminToken, RouteRefresh: 500 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

type transfer struct {
	amount int64
}

func encode(tr transfer) []byte { return []byte(strconv.FormatInt(tr.amount, 10)) }

// TestTransferByMessage is the seed's transfer as a two-phase message:
// alice's bank (MariaDB) debits her in a local transaction that also sends
// "credit bob" to Tangram MQ; bob's bank (PostgreSQL) consumes it once.
// Every fault point ends with the money conserved: a local failure, a
// sender that dies after its commit (the check-back delivers), a half
// message whose local transaction never ran (the check-back rolls it back
// and closes the door on a late one), a check during a local transaction
// (it waits and answers exactly), a consumer whose acknowledgement is lost
// (redelivered, applied once).
func TestTransferByMessage(t *testing.T) {
	e := newEnv(t)
	alice := newBank(t, store.MySQL, map[string]int64{"alice": 1000})
	bob := newBank(t, store.Postgres, map[string]int64{"bob": 0})
	c := e.client()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.CreateTopic(ctx, "credits", 2, false); err != nil {
		t.Fatal(err)
	}
	s, err := msg.New(msg.Config{Client: c, Group: "alice-bank", Barrier: alice.bar})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Bob's bank: credits once per message; the first delivery of
	// "lost-ack" loses its acknowledgement after its commit.
	var mu sync.Mutex
	deliveries := map[string]int{}
	once := msg.Once(bob.bar, "bob-bank", func(ctx context.Context, tx *sql.Tx, m *mq.Message) error {
		n, err := strconv.ParseInt(string(m.Body), 10, 64)
		if err != nil {
			return fmt.Errorf("body %q: %w", m.Body, err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $1 WHERE id = 'bob'`, n)
		return err
	})
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "bob-bank", Heartbeat: 200 * time.Millisecond, LongPoll: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Subscribe("credits", nil, func(ctx context.Context, m *mq.Message) error {
		err := once(ctx, m)
		mu.Lock()
		deliveries[m.MsgID]++
		first := deliveries[m.MsgID] == 1
		mu.Unlock()
		if err == nil && first && m.MsgID == "lost-ack" {
			return errors.New("injected: the acknowledgement is lost")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	debit := func(amount int64) func(ctx context.Context, tx *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance - ? WHERE id = 'alice' AND balance >= ?`, amount, amount)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return errors.New("alice: insufficient funds")
			}
			return nil
		}
	}
	send := func(id string, amount int64, local func(ctx context.Context, tx *sql.Tx) error) error {
		m := &mq.Message{Topic: "credits", Body: encode(transfer{amount}), Props: map[string]string{}}
		if id != "" {
			m.Props[wire.PropID] = id
		}
		_, err := s.Send(ctx, m, local)
		return err
	}
	want := int64(0) // credited to bob in the end

	// 20 transfers of 10, four at a time.
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				if err := send(fmt.Sprintf("t-%d-%d", w, i), 10, debit(10)); err != nil {
					t.Errorf("transfer: %v", err)
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	want += 200

	// A local failure: the error comes back, nothing is sent.
	if err := send("too-much", 1_000_000, debit(1_000_000)); err == nil || !strings.Contains(err.Error(), "insufficient funds") {
		t.Fatalf("an overdraft: %v", err)
	}

	// A lost acknowledgement: redelivered, credited once.
	if err := send("lost-ack", 7, debit(7)); err != nil {
		t.Fatal(err)
	}
	want += 7

	// The sender dies after its local commit: the check-back finds the
	// barrier row and delivers.
	msg.SetAfterLocal(s, func(id string) error {
		if id == "died-after-commit" {
			return errors.New("died")
		}
		return nil
	})
	if err := send("died-after-commit", 5, debit(5)); err != nil {
		t.Fatal(err)
	}
	want += 5
	msg.SetAfterLocal(s, nil)

	// A half message whose local transaction never ran (its sender died
	// before): the check-back rolls it back, and the door is closed on
	// a local transaction arriving late.
	raw, err := c.NewProducer(mq.ProducerConfig{Group: "alice-bank"})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, _, err := raw.SendTransaction(ctx, &mq.Message{Topic: "credits", Body: encode(transfer{3}), Props: map[string]string{wire.PropID: "never-ran"}},
		func(context.Context, *mq.SendResult) (mq.TxState, error) { return mq.TxUnknown, nil }); err != nil {
		t.Fatal(err)
	}
	lateBI := txn.BranchInfo{XID: "never-ran", Branch: msg.Branch, Op: txn.OpMsg}
	wait.For(t, 15*time.Second, "the check-back to close never-ran", func() bool {
		var n int
		_ = alice.db.QueryRow(`SELECT COUNT(*) FROM tangram_barrier WHERE xid = 'never-ran' AND reason = 'closed'`).Scan(&n)
		return n == 1
	})
	err = alice.bar.Call(ctx, lateBI, func(tx *sql.Tx) error { return debit(3)(ctx, tx) })
	if !errors.Is(err, txn.ErrSuspended) {
		t.Fatalf("a local transaction after its check-back: %v, want ErrSuspended", err)
	}

	// Checks during a local transaction wait for it and answer exactly:
	// commit for one that commits, rollback for one that fails.
	for _, commit := range []bool{true, false} {
		id := fmt.Sprintf("checked-midway-%v", commit)
		inside := make(chan struct{})
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- send(id, 11, func(ctx context.Context, tx *sql.Tx) error {
				if err := debit(11)(ctx, tx); err != nil {
					return err
				}
				close(inside)
				<-release
				if !commit {
					return errors.New("business rule says no")
				}
				return nil
			})
		}()
		<-inside
		got := make(chan mq.TxState, 1)
		go func() { got <- msg.Check(s, ctx, &mq.Message{MsgID: id}) }()
		select {
		case st := <-got:
			t.Fatalf("%s: the check answered %v while the local transaction ran", id, st)
		case <-time.After(300 * time.Millisecond): // sleep-ok: the check must still be waiting on the row
		}
		close(release)
		st := <-got
		err := <-done
		if commit {
			if err != nil || st != mq.TxCommit {
				t.Fatalf("%s: send %v, check %v; want nil, commit", id, err, st)
			}
			want += 11
		} else if err == nil || st != mq.TxRollback {
			t.Fatalf("%s: send %v, check %v; want an error, rollback", id, err, st)
		}
	}

	// Everything settles: bob has exactly what alice lost.
	wait.For(t, 30*time.Second, "bob credited with every committed transfer", func() bool { return bob.balance(t, "bob") == want })
	if a := alice.balance(t, "alice"); a+want != 1000 {
		t.Fatalf("alice %d + bob %d != 1000", a, want)
	}
	mu.Lock()
	if deliveries["lost-ack"] < 2 {
		t.Errorf("lost-ack delivered %d times, want a redelivery", deliveries["lost-ack"])
	}
	for _, id := range []string{"too-much", "never-ran", "checked-midway-false"} {
		if deliveries[id] != 0 {
			t.Errorf("%s was delivered", id)
		}
	}
	mu.Unlock()
	// Barrier rows: 20 transfers, lost-ack, died-after-commit, two closed
	// by checks (never-ran, the failed midway one), the committed midway
	// one; the overdraft rolled its row back.
	var rows int
	if err := alice.db.QueryRow(`SELECT COUNT(*) FROM tangram_barrier`).Scan(&rows); err != nil || rows != 25 {
		t.Fatalf("alice's barrier rows: %d %v, want 25", rows, err)
	}
	if b := bob.balance(t, "bob"); b != want {
		t.Fatalf("bob %d, want %d", b, want)
	}
}
