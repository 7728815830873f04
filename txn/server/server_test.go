package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	jobserver "github.com/tangram-dev/tangram/job/server"

	"github.com/tangram-dev/tangram/internal/alarm/alarmtest"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/txn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast are options that retry quickly (tests wait for retries).
var fast = txn.Options{RetryMs: 20, RetryMaxMs: 100, BranchTimeoutMs: 5000}

func setup(t *testing.T, mods ...servertest.Option) (*txn.Client, *bank, *bank) {
	t.Helper()
	h := servertest.Start(t, mods...)
	c, err := txn.Dial(context.Background(), txn.Config{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token, App: "bank"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	a := newBank(t, "a", store.Postgres)
	b := newBank(t, "b", store.MySQL)
	a.open(t, "alice", 100)
	b.open(t, "bob", 10)
	return c, a, b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// conserved checks that alice (bank a) and bob (bank b) hold 110 between
// them, and that nothing is left frozen or incoming once the transaction
// ended.
func conserved(t *testing.T, a, b *bank) {
	t.Helper()
	aa, bb := a.account(t, "alice"), b.account(t, "bob")
	if sum := aa.balance + aa.frozen + bb.balance; sum != 110 {
		t.Fatalf("money not conserved: alice %+v bob %+v (sum %d)", aa, bb, sum)
	}
	if aa.frozen != 0 || bb.incoming != 0 {
		t.Fatalf("left in flight: alice %+v bob %+v", aa, bb)
	}
}

func TestSagaTransferAcrossPostgresAndMariaDB(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	g, err := c.NewSaga(fast).
		Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 30}).
		Add(b.url("/saga/credit"), b.url("/saga/credit-undo"), transfer{"bob", 30}).
		Submit(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if g.Status != txn.StatusCommitted {
		t.Fatalf("status %s (%s)", g.Status, g.Reason)
	}
	if a.account(t, "alice").balance != 70 || b.account(t, "bob").balance != 40 {
		t.Fatalf("alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
	conserved(t, a, b)
	full, err := c.Get(ctx, g.XID)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Events) != 2 || full.Events[0].Op != txn.OpAction || full.Events[1].Result != "ok" {
		t.Fatalf("timeline: %+v", full.Events)
	}
}

// A later step's business failure compensates the earlier ones, in
// reverse; the failed step's own compensation is an empty rollback.
func TestSagaFailureCompensates(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	g, err := c.NewSaga(fast).
		Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 30}).
		Add(b.url("/saga/credit"), b.url("/saga/credit-undo"), transfer{"nobody", 30}).
		Submit(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if g.Status != txn.StatusAborted {
		t.Fatalf("status %s (%s)", g.Status, g.Reason)
	}
	if a.account(t, "alice").balance != 100 || b.account(t, "bob").balance != 10 {
		t.Fatalf("alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
	conserved(t, a, b)
}

// Transient errors are retried with backoff until they pass; a branch
// that keeps failing parks the transaction as failed with an alarm, and
// Retry resumes it once the participant is back.
func TestRetryThenParkThenResume(t *testing.T) {
	// A parked transaction is posted to the server's alarm webhook and
	// e-mailed to its alarm addresses.
	hooked := make(chan txn.Global, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var g txn.Global
		if err := json.NewDecoder(r.Body).Decode(&g); err != nil {
			t.Errorf("alarm webhook: %v", err)
		}
		hooked <- g
	}))
	defer hook.Close()
	sink := alarmtest.NewMailSink(t)
	c, a, b := setup(t, func(c *server.Config) {
		c.TxnAlarmWebhook = hook.URL + "/txn-alarms"
		c.TxnAlarmEmails = []string{"oncall@example.com"}
		c.SMTP = jobserver.SMTPConfig{Addr: sink.Addr(), From: "tangram@example.com"}
	})
	ctx := ctxT(t)
	b.errs.Store(2)
	g, err := c.NewSaga(fast).
		Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 10}).
		Add(b.url("/saga/credit"), b.url("/saga/credit-undo"), transfer{"bob", 10}).
		Submit(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, "the saga committed after two outages", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusCommitted
	})
	if n := b.calls.Load(); n != 3 {
		t.Fatalf("bank b called %d times, want 3 (two outages, one success)", n)
	}
	conserved(t, a, b)

	opts := fast
	opts.MaxAttempts = 3
	b.errs.Store(1 << 40) // down for good
	g, err = c.NewSaga(opts).
		Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 5}).
		Add(b.url("/saga/credit"), b.url("/saga/credit-undo"), transfer{"bob", 5}).
		Submit(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, "the saga parked as failed", func() bool {
		x, err := c.Get(ctx, g.XID)
		return err == nil && x.Status == txn.StatusFailed
	})
	x, _ := c.Get(ctx, g.XID)
	if x.Branches[1].Attempts != 3 || x.NextAt != 0 {
		t.Fatalf("parked: %+v", x)
	}
	select {
	case got := <-hooked:
		if got.XID != g.XID || got.Status != txn.StatusFailed || len(got.Branches) != 2 {
			t.Fatalf("alarm webhook got %+v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alarm webhook call")
	}
	select {
	case m := <-sink.Mail:
		for _, want := range []string{"oncall@example.com", "Subject: [tangram] transaction " + g.XID + " (saga) parked as failed", "Branch 1:", "injected outage", "tangram txn retry " + g.XID} {
			if !strings.Contains(m, want) {
				t.Errorf("alarm e-mail lacks %q:\n%s", want, m)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alarm e-mail")
	}
	b.errs.Store(0)
	if x, err = c.Retry(ctx, g.XID, true); err != nil || x.Status != txn.StatusCommitted {
		t.Fatalf("retry: %+v %v", x, err)
	}
	if a.account(t, "alice").balance != 85 || b.account(t, "bob").balance != 25 {
		t.Fatalf("alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
}

func TestTCCTransferCommitAndCancel(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	g, err := c.TCC(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		if err := x.Branch(ctx, a.url("/tcc/debit-try"), a.url("/tcc/debit-confirm"), a.url("/tcc/debit-cancel"), transfer{"alice", 40}); err != nil {
			return err
		}
		if got := a.account(t, "alice"); got.frozen != 40 || got.balance != 60 {
			t.Errorf("after try: %+v", got)
		}
		return x.Branch(ctx, b.url("/tcc/credit-try"), b.url("/tcc/credit-confirm"), b.url("/tcc/credit-cancel"), transfer{"bob", 40})
	})
	if err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("commit: %+v %v", g, err)
	}
	if a.account(t, "alice").balance != 60 || b.account(t, "bob").balance != 50 {
		t.Fatalf("alice %+v bob %+v", a.account(t, "alice"), b.account(t, "bob"))
	}
	conserved(t, a, b)

	// The second Try fails (no such account): both branches are cancelled
	// — the first returns its frozen money, the second is an empty rollback.
	var xid string
	_, err = c.TCC(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		xid = x.XID()
		if err := x.Branch(ctx, a.url("/tcc/debit-try"), a.url("/tcc/debit-confirm"), a.url("/tcc/debit-cancel"), transfer{"alice", 20}); err != nil {
			return err
		}
		return x.Branch(ctx, b.url("/tcc/credit-try"), b.url("/tcc/credit-confirm"), b.url("/tcc/credit-cancel"), transfer{"nobody", 20})
	})
	if !errors.Is(err, txn.ErrFailure) {
		t.Fatalf("want the Try's failure, got %v", err)
	}
	wait.For(t, 15*time.Second, "the cancels ran", func() bool {
		x, err := c.Get(ctx, xid)
		return err == nil && x.Status == txn.StatusAborted
	})
	if a.account(t, "alice").balance != 60 {
		t.Fatalf("alice after cancel: %+v", a.account(t, "alice"))
	}
	conserved(t, a, b)
}

// A Cancel that arrives before its Try (the Try was lost or is late) is an
// empty rollback; the late Try is then refused (no suspension), and a
// duplicate Confirm or Cancel changes nothing.
func TestBarrierEmptyRollbackSuspensionAndDuplicates(t *testing.T) {
	c, a, b := setup(t)
	ctx := ctxT(t)
	var xid string
	_, err := c.TCC(ctx, fast, true, func(ctx context.Context, x *txn.Txn) error {
		xid = x.XID()
		// Register a branch whose Try never arrives (as if lost).
		return errors.New("initiator gave up before the try")
	})
	if err == nil {
		t.Fatal("want the initiator's error")
	}
	bi := txn.BranchInfo{XID: xid, Branch: "0", Op: txn.OpCancel, Mode: txn.ModeTCC}
	ran := false
	if err := a.bar.Call(ctx, bi, func(*sql.Tx) error { ran = true; return nil }); err != nil || ran {
		t.Fatalf("empty rollback: ran %v err %v", ran, err)
	}
	bi.Op = txn.OpTry
	if err := a.bar.Call(ctx, bi, func(*sql.Tx) error { ran = true; return nil }); !errors.Is(err, txn.ErrSuspended) || ran {
		t.Fatalf("late try: ran %v err %v", ran, err)
	}
	// Duplicates: the first Confirm runs, the second does not.
	bi = txn.BranchInfo{XID: "dup-1", Branch: "0", Op: txn.OpTry}
	count := 0
	for _, op := range []txn.Op{txn.OpTry, txn.OpTry, txn.OpConfirm, txn.OpConfirm} {
		bi.Op = op
		if err := b.bar.Call(ctx, bi, func(*sql.Tx) error { count++; return nil }); err != nil {
			t.Fatal(op, err)
		}
	}
	if count != 2 {
		t.Fatalf("ran %d times, want 2 (one try, one confirm)", count)
	}
	// A failed operation rolls its barrier row back: it may run again.
	bi = txn.BranchInfo{XID: "dup-2", Branch: "0", Op: txn.OpAction}
	if err := b.bar.Call(ctx, bi, func(*sql.Tx) error { return errors.New("boom") }); err == nil {
		t.Fatal("want the error")
	}
	if err := b.bar.Call(ctx, bi, func(*sql.Tx) error { count++; return nil }); err != nil || count != 3 {
		t.Fatalf("rerun after failure: %v %d", err, count)
	}
}

// Registration numbers a prepared transaction's branches in order and
// refuses a transaction that does not exist, one no longer prepared, and
// a step that is not a prepared branch's.
func TestRegisterNumbersBranchesAndRefuses(t *testing.T) {
	c, _, _ := setup(t)
	ctx := ctxT(t)
	step := txn.Step{Confirm: "http://127.0.0.1:1/confirm", Cancel: "http://127.0.0.1:1/cancel"}
	if _, err := c.Register(ctx, txn.RegisterRequest{XID: "no-such-xid", Step: step}); !errors.Is(err, txn.ErrNotFound) {
		t.Fatalf("register in a missing transaction: %v, want ErrNotFound", err)
	}
	var xid string
	_, err := c.TCC(ctx, fast, false, func(ctx context.Context, x *txn.Txn) error {
		xid = x.XID()
		for want := range 3 {
			r, err := c.Register(ctx, txn.RegisterRequest{XID: xid, Step: step})
			if err != nil {
				return err
			}
			if r.Branch != want {
				t.Errorf("branch %d registered as %d", want, r.Branch)
			}
		}
		if _, err := c.Register(ctx, txn.RegisterRequest{XID: xid, Step: txn.Step{Confirm: step.Confirm, Cancel: step.Cancel, After: []int{0}}}); !errors.Is(err, txn.ErrBadRequest) {
			t.Errorf("a branch with after: %v, want ErrBadRequest", err)
		}
		if _, err := c.Register(ctx, txn.RegisterRequest{XID: xid, Step: txn.Step{Confirm: step.Confirm}}); !errors.Is(err, txn.ErrBadRequest) {
			t.Errorf("a branch without a cancel: %v, want ErrBadRequest", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.Get(ctx, xid)
	if err != nil || len(g.Branches) != 3 {
		t.Fatalf("after registering 3: %+v, %v", g, err)
	}
	if _, err := c.Register(ctx, txn.RegisterRequest{XID: xid, Step: step}); !errors.Is(err, txn.ErrState) {
		t.Fatalf("register after the commit decision: %v, want ErrState", err)
	}
	if g, err := c.Get(ctx, xid); err != nil || len(g.Branches) != 3 {
		t.Fatalf("a refused registration changed the transaction: %+v, %v", g, err)
	}
}

// The calls after Begin are checked against the transaction's own app:
// an editor of one app can neither register into nor commit, abort or
// read another app's transaction — also once the server has it in
// memory (the app cache) — while its own app's calls pass.
func TestCallsCheckTheTransactionsApp(t *testing.T) {
	h := servertest.Start(t)
	ctx := ctxT(t)
	admin := h.Client()
	if err := admin.Do(ctx, "POST", "/api/v1/auth/users", map[string]any{"name": "banker", "password": "a-long-password-1",
		"bindings": []map[string]string{{"role": "editor", "env": "*", "app": "bank", "ns": "*"}}}, nil); err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	if err := admin.Do(ctx, "POST", "/api/v1/auth/tokens", map[string]any{"user": "banker", "name": "banker-token"}, &tok); err != nil || tok.Token == "" {
		t.Fatalf("token: %v", err)
	}
	dial := func(token, app string) *txn.Client {
		c, err := txn.Dial(ctx, txn.Config{Servers: []string{h.Srv.RPCAddr()}, Token: token, App: app})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	other, banker := dial(h.Token, "shop"), dial(tok.Token, "bank")
	step := txn.Step{Confirm: "http://127.0.0.1:1/confirm", Cancel: "http://127.0.0.1:1/cancel"}
	forbidden := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "lacks edit permission on shop") && !strings.Contains(err.Error(), "lacks read permission on shop") {
			t.Errorf("%s of another app's transaction: %v, want a permission error naming the app", what, err)
		}
	}
	var xid string
	if _, err := other.TCC(ctx, fast, false, func(ctx context.Context, x *txn.Txn) error {
		xid = x.XID()
		if _, err := other.Register(ctx, txn.RegisterRequest{XID: xid, Step: step}); err != nil {
			return err
		}
		_, err := banker.Register(ctx, txn.RegisterRequest{XID: xid, Step: step})
		forbidden("register", err)
		_, err = banker.Abort(ctx, xid, "", false)
		forbidden("abort", err)
		_, err = banker.Get(ctx, xid)
		forbidden("get", err)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if g, err := other.Get(ctx, xid); err != nil || len(g.Branches) != 1 {
		t.Fatalf("the other app's transaction: %+v, %v; want its one branch", g, err)
	}
	// Its own app's transaction passes.
	if _, err := banker.TCC(ctx, fast, false, func(ctx context.Context, x *txn.Txn) error {
		_, err := banker.Register(ctx, txn.RegisterRequest{XID: x.XID(), Step: step})
		return err
	}); err != nil {
		t.Fatalf("an editor's own app: %v", err)
	}
}

// With --txn-allow, a branch outside the list is refused when the
// transaction is submitted, naming its host; branches inside run as usual.
func TestAllowListRefusesOtherTargets(t *testing.T) {
	c, a, b := setup(t, func(cfg *server.Config) { cfg.TxnAllow = []string{"127.0.0.0/8", "::1"} })
	ctx := ctxT(t)
	_, err := c.NewSaga(fast).
		Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 30}).
		Add("http://169.254.169.254/latest/meta-data", b.url("/saga/credit-undo"), transfer{"bob", 30}).
		Submit(ctx, true)
	if err == nil || !errors.Is(err, txn.ErrBadRequest) || !strings.Contains(err.Error(), "169.254.169.254") {
		t.Fatalf("a branch at the metadata address: %v (want refused, naming it)", err)
	}
	if a.account(t, "alice").balance != 100 {
		t.Fatalf("the refused transaction moved money: %+v", a.account(t, "alice"))
	}
	g, err := c.NewSaga(fast).
		Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 30}).
		Add(b.url("/saga/credit"), b.url("/saga/credit-undo"), transfer{"bob", 30}).
		Submit(ctx, true)
	if err != nil || g.Status != txn.StatusCommitted {
		t.Fatalf("branches inside the list: %+v %v", g, err)
	}
	conserved(t, a, b)
}
