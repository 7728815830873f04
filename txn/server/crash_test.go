package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"github.com/tangram-dev/tangram/txn"
)

// coordinator is a tangram server process running the txn component
// alone on a SQLite store in dir, killable with SIGKILL.
type coordinator struct {
	t                 *testing.T
	bin, dir          string
	httpAddr, rpcAddr string
	cmd               *exec.Cmd
	log               *os.File
}

func (c *coordinator) start() {
	t := c.t
	c.cmd = exec.Command(c.bin, "server", "--http", c.httpAddr, "--rpc", c.rpcAddr, "--broker", "off", "--kv", "off", "--otlp-http", "off", "--otlp-grpc", "off",
		"--components", "txn", "--data", c.dir, "--log-level", "warn")
	c.cmd.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+servertest.AdminToken, "TANGRAM_SECRET_KEY="+strings.Repeat("ab", 32))
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	api := apiclient.New("http://"+c.httpAddr, "")
	if !wait.Until(10*time.Second, func() bool { return api.Do(context.Background(), "GET", "/readyz", nil, nil) == nil }) {
		t.Fatal("coordinator did not become ready in 10 s")
	}
}

func (c *coordinator) kill9() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// TestCoordinatorKill9UnderLoad kills the coordinator with SIGKILL again
// and again while sagas, TCC and AT transfers run between a PostgreSQL
// bank and a MariaDB bank (some meant to fail and roll back), restarting it on
// the same data each time. At the end no transaction is left unresolved,
// no money was created or destroyed, nothing is left frozen. Short by
// default; TANGRAM_ROBUSTNESS=long kills it 15 times.
func TestCoordinatorKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the server")
	}
	kills := 3
	if os.Getenv("TANGRAM_ROBUSTNESS") == "long" {
		kills = 15
	}
	bin := filepath.Join(t.TempDir(), "tangram")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tangram-dev/tangram/cmd/tangram").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	logf, err := os.CreateTemp(t.TempDir(), "coordinator-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 16<<10 {
				b = b[len(b)-16<<10:]
			}
			t.Logf("coordinator log:\n%s", b)
		}
	})
	co := &coordinator{t: t, bin: bin, dir: t.TempDir(), httpAddr: port.Free(t), rpcAddr: port.Free(t), log: logf}
	co.start()
	t.Cleanup(co.kill9)

	a := newBank(t, "a", store.Postgres)
	b := newBank(t, "b", store.MySQL)
	const total = 1_000_000
	a.open(t, "alice", total)
	b.open(t, "bob", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := txn.Dial(ctx, txn.Config{Servers: []string{co.rpcAddr}, Token: servertest.AdminToken, App: "bank"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	opts := txn.Options{RetryMs: 50, RetryMaxMs: 500, TimeoutMs: 3000, BranchTimeoutMs: 3000, MaxAttempts: -1}
	var submitted, failedCalls atomic.Int64
	var wg sync.WaitGroup
	loadCtx, stopLoad := context.WithCancel(ctx)

	// AT transfers between accounts of their own (carolN → daveN, one pair
	// per worker, so they do not wait on each other's row locks): their
	// local transactions commit at once, so a kill between a branch's
	// commit and the decision leaves undo records the restarted
	// coordinator must apply (the prepared transaction times out).
	const totalAT = 100_000
	a.open(t, "carol0", totalAT/2)
	a.open(t, "carol1", totalAT/2)
	b.open(t, "dave0", 0)
	b.open(t, "dave1", 0)
	aAT, bAT := newATBank(t, a, c, 2*time.Second), newATBank(t, b, c, 2*time.Second)
	var atDone, atMoved atomic.Int64
	var atErr atomic.Value // the last AT transfer's error, for a failure message
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; loadCtx.Err() == nil; n++ {
				from, to := fmt.Sprintf("carol%d", w), fmt.Sprintf("dave%d", w)
				if n%5 == 4 {
					to = "nobody" // the credit fails: the debit is undone
				}
				cctx, ccancel := context.WithTimeout(loadCtx, 5*time.Second)
				_, err := c.AT(cctx, opts, false, func(ctx context.Context, x *txn.Txn) error {
					if err := call(ctx, aAT.url+"/at/move", transfer{from, -1}); err != nil {
						return err
					}
					return call(ctx, bAT.url+"/at/move", transfer{to, 1})
				})
				ccancel()
				if err == nil && to != "nobody" {
					atMoved.Add(1)
				}
				if err == nil || to == "nobody" {
					atDone.Add(1)
					continue
				}
				atErr.Store(err.Error())
				failedCalls.Add(1)
				wait.Until(100*time.Millisecond, func() bool { return loadCtx.Err() != nil })
			}
		}()
	}
	// lastATErr says why AT transfers did not move, when they did not.
	lastATErr := func() string {
		if e, ok := atErr.Load().(string); ok {
			return "; last AT error: " + e
		}
		return ""
	}
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; loadCtx.Err() == nil; n++ {
				to := "bob"
				if n%5 == 4 {
					to = "nobody" // the credit fails: compensate, or cancel
				}
				cctx, ccancel := context.WithTimeout(loadCtx, 5*time.Second)
				var err error
				if w%2 == 0 {
					xid := fmt.Sprintf("saga-%d-%d", w, n)
					for attempt := 0; attempt < 20 && loadCtx.Err() == nil; attempt++ {
						_, err = c.NewSaga(opts).XID(xid).
							Add(a.url("/saga/debit"), a.url("/saga/debit-undo"), transfer{"alice", 3}).
							Add(b.url("/saga/credit"), b.url("/saga/credit-undo"), transfer{to, 3}).
							Submit(cctx, false)
						if err == nil || strings.Contains(err.Error(), "exists") {
							err = nil
							break
						}
						failedCalls.Add(1)
						wait.Until(100*time.Millisecond, func() bool { return loadCtx.Err() != nil })
					}
				} else {
					_, err = c.TCC(cctx, opts, false, func(ctx context.Context, x *txn.Txn) error {
						if err := x.Branch(ctx, a.url("/tcc/debit-try"), a.url("/tcc/debit-confirm"), a.url("/tcc/debit-cancel"), transfer{"alice", 2}); err != nil {
							return err
						}
						return x.Branch(ctx, b.url("/tcc/credit-try"), b.url("/tcc/credit-confirm"), b.url("/tcc/credit-cancel"), transfer{to, 2})
					})
					if err != nil && !errors.Is(err, txn.ErrFailure) {
						// The coordinator is down: the transaction (if it was
						// begun) aborts at its timeout.
						failedCalls.Add(1)
						wait.Until(100*time.Millisecond, func() bool { return loadCtx.Err() != nil })
						err = nil
						ccancel()
						continue
					}
				}
				ccancel()
				if err == nil || errors.Is(err, txn.ErrFailure) {
					submitted.Add(1)
				}
			}
		}()
	}
	for k := range kills {
		from := submitted.Load()
		wait.For(t, 30*time.Second, fmt.Sprintf("40 more transfers before kill %d", k+1), func() bool { return submitted.Load() >= from+40 })
		co.kill9()
		co.start()
	}
	// The AT workers move money after the last restart as well (a
	// transfer can only succeed while the coordinator is up, and the
	// saga/TCC workers alone set the pace of the kills).
	from, fromAT := submitted.Load(), atMoved.Load()
	wait.For(t, 30*time.Second, "transfers after the last restart", func() bool { return submitted.Load() >= from+40 })
	if !wait.Until(30*time.Second, func() bool { return atMoved.Load() >= fromAT+4 }) {
		t.Fatalf("AT transfers after the last restart: %d, want 4%s", atMoved.Load()-fromAT, lastATErr())
	}
	stopLoad()
	wg.Wait()

	// Everything resolves: prepared ones time out, the rest are driven.
	var pending []string
	if !wait.Until(60*time.Second, func() bool {
		pending = pending[:0]
		for _, st := range []txn.Status{txn.StatusPrepared, txn.StatusCommitting, txn.StatusAborting, txn.StatusFailed} {
			r, err := c.List(ctx, txn.ListRequest{Status: st, Limit: 500})
			if err != nil {
				pending = append(pending, err.Error())
				continue
			}
			for _, g := range r.Items {
				pending = append(pending, g.XID+" "+string(g.Status)+" "+g.Reason)
			}
		}
		return len(pending) == 0
	}) {
		t.Fatalf("unresolved after 60 s: %d, e.g. %v", len(pending), pending[:min(5, len(pending))])
	}
	alice, bob := a.account(t, "alice"), b.account(t, "bob")
	if alice.balance+alice.frozen+bob.balance != total || alice.frozen != 0 || bob.incoming != 0 {
		t.Fatalf("money not conserved: alice %+v bob %+v (want %d in balances, nothing frozen)", alice, bob, total)
	}
	// AT: the balances and the ledgers agree, and no undo images are left
	// (applied — the record then stays as a rolled-back marker — or
	// deleted after the commit).
	var carol, dave int64
	for w := range 2 {
		carol += a.account(t, fmt.Sprintf("carol%d", w)).balance
		dave += b.account(t, fmt.Sprintf("dave%d", w)).balance
	}
	if carol+dave != totalAT || dave == 0 {
		t.Fatalf("AT money not conserved: carol %d dave %d (want %d between them, some moved)%s", carol, dave, totalAT, lastATErr())
	}
	if la, lb := a.count(t, `SELECT COALESCE(SUM(amount), 0) FROM ledger`), b.count(t, `SELECT COALESCE(SUM(amount), 0) FROM ledger`); la != -int(dave) || lb != int(dave) {
		t.Fatalf("AT ledgers %d and %d disagree with dave's balance %d", la, lb, dave)
	}
	wait.For(t, 30*time.Second, "the undo images applied or deleted", func() bool {
		return a.count(t, `SELECT COUNT(*) FROM tangram_undo WHERE state = 0`)+b.count(t, `SELECT COUNT(*) FROM tangram_undo WHERE state = 0`) == 0
	})
	var committed, aborted int
	for _, st := range []txn.Status{txn.StatusCommitted, txn.StatusAborted} {
		cur := ""
		for {
			r, err := c.List(ctx, txn.ListRequest{Status: st, Limit: 500, Cursor: cur})
			if err != nil {
				t.Fatal(err)
			}
			if st == txn.StatusCommitted {
				committed += len(r.Items)
			} else {
				aborted += len(r.Items)
			}
			if r.Next == "" {
				break
			}
			cur = r.Next
		}
	}
	if committed == 0 || aborted == 0 {
		t.Fatalf("want both outcomes exercised: %d committed, %d aborted", committed, aborted)
	}
	t.Logf("robustness: %d kills, %d transfers accepted and %d AT transfers (%d calls failed while the coordinator was down), %d committed, %d aborted, money conserved (alice %d, bob %d; carol %d, dave %d)",
		kills, submitted.Load(), atDone.Load(), failedCalls.Load(), committed, aborted, alice.balance, bob.balance, carol, dave)
}
