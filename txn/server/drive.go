package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/alarm"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/txn"
)

// errFenced: this server's claim on a transaction was taken over; it
// stops driving it without writing.
var errFenced = errors.New("txn/server: claim lost to another driver")

// preclaim is a claim taken with the decision itself (the server that
// decides drives at once, without a claim of its own): its term, and the
// transaction as the decision left it.
type preclaim struct {
	term int64
	g    *txn.Global
}

// startDrive drives xid's phase two in a worker, unless this process
// already is; it reports whether it started one.
func (s *Server) startDrive(xid string, pre *preclaim) bool {
	s.mu.Lock()
	if s.closed || s.driving[xid] {
		s.mu.Unlock()
		return false
	}
	s.driving[xid] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		var final *txn.Global
		defer func() {
			s.mu.Lock()
			delete(s.driving, xid)
			s.mu.Unlock()
			s.notify(xid, final)
		}()
		select {
		case s.sem <- struct{}{}:
		case <-s.stopCtx.Done():
			return
		}
		defer func() { <-s.sem }()
		var err error
		if final, err = s.drive(s.stopCtx, xid, pre); err != nil && !errors.Is(err, errFenced) && s.stopCtx.Err() == nil {
			s.log.Warn("txn: drive", "xid", xid, "err", err)
		}
	}()
	return true
}

// scanLoop resumes due and abandoned transactions and aborts prepared
// ones past their timeout, every ScanInterval.
func (s *Server) scanLoop() {
	t := time.NewTicker(s.cfg.ScanInterval)
	defer t.Stop()
	for {
		if err := s.scan(s.stopCtx); err != nil && s.stopCtx.Err() == nil {
			s.log.Warn("txn: scan", "err", err)
		}
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return
		}
	}
}

func (s *Server) scan(ctx context.Context) error {
	now := store.NowMillis()
	res, err := s.st.ExecContext(ctx, `UPDATE txn_globals SET status = ?, phase = 'abort', reason = 'timed out before submit', updated_at = ?, next_at = ?, timeout_at = 0
		WHERE status = ? AND timeout_at > 0 AND timeout_at <= ?`, txn.StatusAborting, now, now, txn.StatusPrepared, now)
	if err != nil {
		return fmt.Errorf("abort timed-out transactions: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.log.Info("txn: aborted prepared transactions past their timeout", "count", n)
	}
	rows, err := s.st.QueryContext(ctx, `SELECT xid FROM txn_globals WHERE next_at > 0 AND next_at <= ? AND (claim_until < ? OR (owner > ? AND owner < ?)) ORDER BY next_at LIMIT 256`,
		now, now, s.cfg.NodeName+"#", s.holder)
	if err != nil {
		return fmt.Errorf("due transactions: %w", err)
	}
	var due []string
	for rows.Next() {
		var x string
		if err := rows.Scan(&x); err != nil {
			rows.Close()
			return err
		}
		due = append(due, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, x := range due {
		s.startDrive(x, nil)
	}
	return nil
}

// claim takes xid's row for this process if it is in phase two, due and
// not claimed by a live driver — a claim of an earlier process of this
// node (killed and restarted) is taken at once, not after its TTL; it
// returns the new term.
func (s *Server) claim(ctx context.Context, xid string) (int64, bool, error) {
	var term int64
	var ok bool
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		now := store.NowMillis()
		res, err := tx.ExecContext(ctx, `UPDATE txn_globals SET owner = ?, claim_until = ?, term = term + 1
			WHERE xid = ? AND status IN (?, ?) AND next_at > 0 AND next_at <= ? AND (claim_until < ? OR owner = ? OR (owner > ? AND owner < ?))`,
			s.holder, now+s.cfg.ClaimTTL.Milliseconds(), xid, txn.StatusCommitting, txn.StatusAborting, now, now, s.holder, s.cfg.NodeName+"#", s.holder)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			ok = false
			return nil
		}
		ok = true
		return tx.QueryRowContext(ctx, `SELECT term FROM txn_globals WHERE xid = ?`, xid).Scan(&term)
	})
	return term, ok, err
}

// drive claims xid (or uses the claim taken with its decision) and runs
// its phase two as far as it goes now.
func (s *Server) drive(ctx context.Context, xid string, pre *preclaim) (final *txn.Global, err error) {
	d := &driver{s: s, renewed: store.NowMillis()}
	switch {
	case pre != nil:
		d.g, d.term = *pre.g, pre.term
	default:
		term, ok, err := s.claim(ctx, xid)
		if err != nil || !ok {
			return nil, err
		}
		g, err := s.load(ctx, xid, false)
		if err != nil {
			return nil, err
		}
		d.g, d.term = g, term
	}
	defer d.flushEvents(ctx)
	defer func() {
		// The end state as written, for the callers waiting here.
		if err == nil && (d.finished || d.g.Status == txn.StatusFailed) {
			g := d.g
			g.NextAt = 0
			final = &g
		}
	}()
	switch d.g.Status {
	case txn.StatusCommitting:
		return nil, d.forward(ctx)
	case txn.StatusAborting:
		return nil, d.backward(ctx)
	}
	return nil, nil
}

// driver runs one claimed transaction.
type driver struct {
	s    *Server
	g    txn.Global
	term int64
	// renewed is when the claim was last renewed (it is renewed by a
	// fenced write once a third of its TTL has passed).
	renewed int64
	// finished: the last write ended the transaction.
	finished bool

	mu     sync.Mutex
	events []txn.Event // calls not yet written: the next fenced write takes them
	// unsaved are branches whose successes are recorded in memory only:
	// the next fenced write stores them. Losing them (a crash) only
	// repeats calls the barrier makes harmless; a saga's steps are
	// written once, with its end, as DTM writes branch results late.
	unsaved map[int]bool
}

// outcome of one branch call.
type outcome struct {
	branch  int
	op      txn.Op
	failure bool  // the branch said it cannot succeed (ErrFailure, HTTP 409)
	err     error // anything else that went wrong: retried
	// operator: the branch cannot go on by itself (HTTP 422): the
	// transaction is parked as failed at once, with an alarm.
	operator bool
}

func (d *driver) forward(ctx context.Context) error {
	g := d.g
	switch {
	case g.Mode.Prepared():
		var todo []int
		for i, b := range g.Branches {
			if !b.Has(txn.OpConfirm) {
				todo = append(todo, i)
			}
		}
		if out := d.round(ctx, todo, txn.OpConfirm, txn.StatusCommitted); out != nil {
			return d.attemptFailed(ctx, *out)
		}
		return d.finish(ctx, txn.StatusCommitted)
	case g.Options.Concurrent:
		for {
			var ready []int
			pending := 0
			for i, b := range d.g.Branches {
				if b.Has(txn.OpAction) {
					continue
				}
				pending++
				if d.afterDone(b) {
					ready = append(ready, i)
				}
			}
			if pending == 0 {
				return d.finish(ctx, txn.StatusCommitted)
			}
			if len(ready) == 0 {
				return d.park(ctx, "saga steps wait on each other: no step can run")
			}
			last := txn.Status("")
			if len(ready) == pending {
				last = txn.StatusCommitted
			}
			if out := d.round(ctx, ready, txn.OpAction, last); out != nil {
				if out.failure {
					return d.turnBack(ctx, *out)
				}
				return d.attemptFailed(ctx, *out)
			}
		}
	default:
		for i := range g.Branches {
			if d.g.Branches[i].Has(txn.OpAction) {
				continue
			}
			last := txn.Status("")
			if i == len(g.Branches)-1 {
				last = txn.StatusCommitted
			}
			if out := d.round(ctx, []int{i}, txn.OpAction, last); out != nil {
				if out.failure {
					return d.turnBack(ctx, *out)
				}
				return d.attemptFailed(ctx, *out)
			}
		}
		return d.finish(ctx, txn.StatusCommitted)
	}
}

func (d *driver) afterDone(b txn.Branch) bool {
	for _, a := range b.Step.After {
		if !d.g.Branches[a].Has(txn.OpAction) {
			return false
		}
	}
	return true
}

func (d *driver) backward(ctx context.Context) error {
	g := d.g
	if g.Mode.Prepared() {
		var todo []int
		for i, b := range g.Branches {
			if !b.Has(txn.OpCancel) {
				todo = append(todo, i)
			}
		}
		if out := d.round(ctx, todo, txn.OpCancel, txn.StatusAborted); out != nil {
			return d.attemptFailed(ctx, *out)
		}
		return d.finish(ctx, txn.StatusAborted)
	}
	// A saga undoes in reverse. In order, no step past the first one not
	// done ever started; run concurrently, any may have (the barrier makes
	// compensating one that never ran a no-op).
	last := len(g.Branches) - 1
	if !g.Options.Concurrent {
		for i, b := range g.Branches {
			if !b.Has(txn.OpAction) {
				last = i
				break
			}
		}
	}
	for i := last; i >= 0; i-- {
		if d.g.Branches[i].Has(txn.OpCompensate) {
			continue
		}
		end := txn.StatusAborted
		for j := range i {
			if !d.g.Branches[j].Has(txn.OpCompensate) {
				end = ""
				break
			}
		}
		if out := d.round(ctx, []int{i}, txn.OpCompensate, end); out != nil {
			return d.attemptFailed(ctx, *out)
		}
	}
	return d.finish(ctx, txn.StatusAborted)
}

// round calls op on the branches at once and records each success in one
// write — which also ends the transaction in state end when every call
// succeeded and end is set (the round was the last). It returns the
// outcome to act on when a call did not succeed (a failure before an
// error, and an error needing an operator before any other).
func (d *driver) round(ctx context.Context, branches []int, op txn.Op, end txn.Status) *outcome {
	if len(branches) == 0 {
		return nil
	}
	outs := make([]outcome, len(branches))
	if len(branches) == 1 {
		outs[0] = d.call(ctx, branches[0], op)
	} else {
		var wg sync.WaitGroup
		for k, i := range branches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[k] = d.call(ctx, i, op)
			}()
		}
		wg.Wait()
	}
	var first *outcome
	var ok []int
	for k := range outs {
		o := outs[k]
		if o.err == nil && !o.failure {
			ok = append(ok, o.branch)
			continue
		}
		if first == nil || (o.failure && !first.failure) || (o.operator && !first.failure && !first.operator) {
			first = &outs[k]
		}
	}
	if first != nil {
		end = ""
	}
	if len(ok) > 0 {
		if err := d.done(ctx, ok, op, end); err != nil {
			return &outcome{branch: ok[0], op: op, err: err}
		}
	}
	return first
}

// call runs one branch operation: an HTTP POST of the step's payload.
func (d *driver) call(ctx context.Context, branch int, op txn.Op) outcome {
	b := d.g.Branches[branch]
	target := map[txn.Op]string{txn.OpAction: b.Step.Action, txn.OpCompensate: b.Step.Compensate,
		txn.OpConfirm: b.Step.Confirm, txn.OpCancel: b.Step.Cancel}[op]
	o := outcome{branch: branch, op: op}
	start := time.Now()
	ctx, span := d.s.tracer.Start(ctx, "txn.branch "+string(op), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("txn.xid", d.g.XID), attribute.Int("txn.branch", branch),
			attribute.String("txn.op", string(op)), attribute.String("txn.mode", string(d.g.Mode)), attribute.String("url.full", target)))
	defer func() {
		result := "ok"
		switch {
		case o.failure:
			result = "failure"
		case o.err != nil:
			result = "error"
		}
		d.s.m.calls.WithLabelValues(string(op), result).Inc()
		d.event(branch, op, start, result, o.err)
		span.SetAttributes(attribute.String("txn.result", result))
		if o.err != nil {
			span.RecordError(o.err)
			span.SetStatus(codes.Error, result)
		}
		span.End()
	}()
	cctx, cancel := context.WithTimeout(ctx, ms(d.g.Options.BranchTimeoutMs))
	defer cancel()
	err := d.s.caller.Call(cctx, target, txn.BranchInfo{XID: d.g.XID, Branch: strconv.Itoa(branch), Op: op, Mode: d.g.Mode}, b.Step.Payload)
	switch {
	case err == nil:
	case errors.Is(err, txn.ErrFailure) && (op == txn.OpAction || op == txn.OpTry):
		o.failure = true
		o.err = fmt.Errorf("branch %d %s: failed: %s", branch, op, errcode.Message(err))
	case errors.Is(err, txn.ErrOperator):
		// The participant cannot go on without an operator (AT: a row
		// changed behind the transaction's back): retrying is pointless.
		o.operator = true
		o.err = fmt.Errorf("branch %d %s: needs an operator: %s", branch, op, strings.TrimPrefix(err.Error(), txn.ErrOperator.Error()+": "))
	default:
		o.err = fmt.Errorf("branch %d %s: %w", branch, op, err)
	}
	return o
}

// event keeps one call for the timeline; the next fenced write (or the
// end of the drive) stores it.
func (d *driver) event(branch int, op txn.Op, start time.Time, result string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
		if len(msg) > 1000 {
			msg = msg[:1000]
		}
	}
	d.mu.Lock()
	d.events = append(d.events, txn.Event{Branch: branch, Op: op, At: start.UnixMilli(), Ms: time.Since(start).Milliseconds(), Result: result, Error: msg})
	d.mu.Unlock()
}

// writeEvents stores the kept calls alone (at the end of a drive).
func (d *driver) writeEvents(ctx context.Context) error {
	evs := d.takeEvents()
	w, ok := d.eventsWrite(evs)
	if !ok {
		return nil
	}
	if _, err := d.s.st.Batch(ctx, false, w); err != nil {
		d.restoreEvents(evs)
		return err
	}
	return nil
}

// takeEvents takes the kept calls for a write; restoreEvents gives them
// back when the write failed (the next one takes them).
func (d *driver) takeEvents() []txn.Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	evs := d.events
	d.events = nil
	return evs
}

func (d *driver) restoreEvents(evs []txn.Event) {
	if len(evs) == 0 {
		return
	}
	d.mu.Lock()
	d.events = append(evs, d.events...)
	d.mu.Unlock()
}

// eventsWrite is the insert of evs, in one statement.
func (d *driver) eventsWrite(evs []txn.Event) (store.Write, bool) {
	if len(evs) == 0 {
		return store.Write{}, false
	}
	args := make([]any, 0, 7*len(evs))
	for _, e := range evs {
		args = append(args, d.g.XID, e.Branch, e.Op, e.At, e.Ms, e.Result, e.Error)
	}
	return store.Write{Query: `INSERT INTO txn_events (xid, branch, op, at, ms, result, error) VALUES (?, ?, ?, ?, ?, ?, ?)` +
		strings.Repeat(", (?, ?, ?, ?, ?, ?, ?)", len(evs)-1), Args: args}, true
}

// flushEvents stores calls no fenced write took (best effort: the
// timeline is for people; the branch state is what drives).
func (d *driver) flushEvents(ctx context.Context) {
	if err := d.writeEvents(context.WithoutCancel(ctx)); err != nil {
		d.s.log.Warn("txn: record branch calls", "xid", d.g.XID, "err", err)
	}
}

// fenced runs one write of the driver, if this driver still holds the
// claim: set (an assignment list, with its arguments) updates the
// transaction's row under the fence itself — WHERE term and owner are
// still this driver's — so the check costs no statement of its own (a
// row not matched means another driver took over: errFenced); the claim
// is renewed in the same statement once a third of its TTL has passed
// (unless set gives claim_until itself). The successes held in memory
// and more (more's statements, each guarded by the fence: see guard) go
// in the same transaction, with the kept calls; all of it is one
// store.Batch — one round trip on PostgreSQL.
func (d *driver) fenced(ctx context.Context, set string, args []any, more ...store.Write) error {
	return d.fencedWrite(ctx, false, set, args, more...)
}

// fencedEnd is fenced for the write that ends a transaction: its commit
// does not wait for the store's log flush (store.Tx.Relaxed). The
// outcome is durable already — the decision, and every branch's own
// commit — so a crash that loses the end record only makes a server
// drive the transaction again, which the barrier makes harmless, and
// end it the same way; the callers waiting are answered a flush sooner.
func (d *driver) fencedEnd(ctx context.Context, st txn.Status) error {
	return d.fencedWrite(ctx, true, endSet, []any{st}, d.endWrites()...)
}

// guard is the WHERE condition that makes a statement of a fenced write
// a no-op when the fence did not match (another driver took over): a
// statement of a batch cannot see how many rows an earlier one matched,
// but it sees the row. Its arguments are guardArgs.
const guard = ` AND EXISTS (SELECT 1 FROM txn_globals WHERE xid = ? AND term = ? AND owner = ?)`

func (d *driver) guardArgs() []any { return []any{d.g.XID, d.term, d.s.holder} }

func (d *driver) fencedWrite(ctx context.Context, relaxed bool, set string, args []any, more ...store.Write) error {
	evs := d.takeEvents()
	now := store.NowMillis()
	renewed := int64(0)
	q, a := set, args
	if !strings.Contains(set, "claim_until") && now-d.renewed > d.s.cfg.ClaimTTL.Milliseconds()/3 {
		q += ", claim_until = ?, updated_at = ?"
		a = append(append([]any(nil), args...), now+d.s.cfg.ClaimTTL.Milliseconds(), now)
		renewed = now
	}
	writes := make([]store.Write, 0, 3+len(more))
	writes = append(writes, store.Write{Query: `UPDATE txn_globals SET ` + q + ` WHERE xid = ? AND term = ? AND owner = ?`, Args: append(a, d.guardArgs()...)})
	if w, ok := d.saveDone(); ok {
		writes = append(writes, w)
	}
	writes = append(writes, more...)
	if w, ok := d.eventsWrite(evs); ok {
		// Unguarded: the calls were made, whoever drives now.
		writes = append(writes, w)
	}
	n, err := d.s.st.Batch(ctx, relaxed, writes...)
	if err == nil && n[0] != 1 {
		err = errFenced
	}
	if err != nil {
		if !errors.Is(err, errFenced) {
			d.restoreEvents(evs)
		}
		return err
	}
	if renewed > 0 {
		d.renewed = renewed
	}
	clear(d.unsaved)
	return nil
}

// saveDone is the write of the successes recorded in memory only, all
// branches in one statement, guarded by the fence.
func (d *driver) saveDone() (store.Write, bool) {
	if len(d.unsaved) == 0 {
		return store.Write{}, false
	}
	var cases, in strings.Builder
	args := make([]any, 0, 3*len(d.unsaved)+4)
	ids := make([]any, 0, len(d.unsaved))
	for i := range d.unsaved {
		b := d.g.Branches[i]
		names := make([]string, len(b.Done))
		for j, o := range b.Done {
			names[j] = string(o)
		}
		cases.WriteString(" WHEN ? THEN ?")
		args = append(args, i, strings.Join(names, ","))
		if in.Len() > 0 {
			in.WriteString(", ")
		}
		in.WriteString("?")
		ids = append(ids, i)
	}
	args = append(append(append(args, d.g.XID), ids...), d.guardArgs()...)
	return store.Write{Query: `UPDATE txn_branches SET done = CASE branch` + cases.String() + ` END, attempts = 0 WHERE xid = ? AND branch IN (` + in.String() + `)` + guard, Args: args}, true
}

// done records op's success on branches: in memory only while more
// rounds follow (the next write stores it); with end set, stored together
// with the transaction's end state in one write.
func (d *driver) done(ctx context.Context, branches []int, op txn.Op, end txn.Status) error {
	if d.unsaved == nil {
		d.unsaved = make(map[int]bool)
	}
	for _, i := range branches {
		b := &d.g.Branches[i]
		if !b.Has(op) {
			b.Done = append(append([]txn.Op(nil), b.Done...), op)
		}
		b.Attempts = 0
		d.unsaved[i] = true
	}
	if end == "" {
		return nil
	}
	if err := d.fencedEnd(ctx, end); err != nil {
		return err
	}
	d.ended(end)
	return nil
}

// turnBack: a saga step failed for good — decide to abort, then undo.
func (d *driver) turnBack(ctx context.Context, o outcome) error {
	reason := o.err.Error()
	err := d.fenced(ctx, `status = ?, phase = 'abort', reason = ?`, []any{txn.StatusAborting, reason})
	if err != nil {
		return err
	}
	d.g.Status, d.g.Reason = txn.StatusAborting, reason
	return d.backward(ctx)
}

// attemptFailed counts a failed call: the transaction is retried after a
// backoff, or parked as failed once the branch has used its attempts.
func (d *driver) attemptFailed(ctx context.Context, o outcome) error {
	if errors.Is(o.err, errFenced) || ctx.Err() != nil {
		return o.err
	}
	b := d.g.Branches[o.branch]
	attempts := b.Attempts + 1
	max := d.g.Options.MaxAttempts
	parked := max > 0 && attempts >= max || o.operator
	reason := fmt.Sprintf("%v (attempt %d)", o.err, attempts)
	set, args := `next_at = ?, claim_until = 0, reason = ?`, []any{store.NowMillis() + d.backoff(attempts), reason}
	if parked {
		set, args = `status = ?, reason = ?, next_at = 0, claim_until = 0`, []any{txn.StatusFailed, "gave up after " + reason}
	}
	err := d.fenced(ctx, set, args, store.Write{
		Query: `UPDATE txn_branches SET attempts = ? WHERE xid = ? AND branch = ?` + guard,
		Args:  append([]any{attempts, d.g.XID, o.branch}, d.guardArgs()...),
	})
	if err != nil {
		return err
	}
	if parked {
		d.s.m.ended.WithLabelValues(string(d.g.Mode), string(txn.StatusFailed)).Inc()
		g, lerr := d.s.load(ctx, d.g.XID, false)
		if lerr != nil {
			g = d.g
		}
		d.s.alarm(ctx, g)
	}
	return nil
}

// backoff is the wait before attempt n+1: Retry doubled per attempt up to
// RetryMax, plus up to a tenth more so retries of many transactions
// spread out (never less: a retry is not early).
func (d *driver) backoff(n int) int64 {
	w := d.g.Options.RetryMs
	for i := 1; i < n && w < d.g.Options.RetryMaxMs; i++ {
		w *= 2
	}
	w = min(w, d.g.Options.RetryMaxMs)
	return w + rand.Int64N(w/10+1)
}

// park stops a transaction that cannot go on as failed.
func (d *driver) park(ctx context.Context, reason string) error {
	err := d.fenced(ctx, `status = ?, reason = ?, next_at = 0, claim_until = 0`, []any{txn.StatusFailed, reason})
	if err == nil {
		d.g.Status, d.g.Reason = txn.StatusFailed, reason
		d.s.alarm(ctx, d.g)
	}
	return err
}

// finish ends the transaction committed or aborted (unless the last
// round's write did).
func (d *driver) finish(ctx context.Context, st txn.Status) error {
	if d.finished {
		return nil
	}
	err := d.fencedEnd(ctx, st)
	if err == nil {
		d.ended(st)
	}
	return err
}

// endSet is the final state's assignment (with its status).
const endSet = `status = ?, next_at = 0, claim_until = 0`

// endWrites is what an end writes besides the row: an AT transaction's
// row locks are freed.
func (d *driver) endWrites() []store.Write {
	if d.g.Mode != txn.ModeAT {
		return nil
	}
	return []store.Write{{Query: `DELETE FROM txn_locks WHERE xid = ?` + guard, Args: append([]any{d.g.XID}, d.guardArgs()...)}}
}

func (d *driver) ended(st txn.Status) {
	d.finished = true
	d.g.Status = st
	d.s.m.ended.WithLabelValues(string(d.g.Mode), string(st)).Inc()
	d.s.m.phaseTwo.WithLabelValues(string(d.g.Mode)).Observe(float64(store.NowMillis()-d.g.UpdatedAt) / 1000)
}

func (s *Server) alarm(ctx context.Context, g txn.Global) {
	if s.cfg.Alarm != nil {
		s.cfg.Alarm(ctx, g)
		return
	}
	s.log.Warn("txn: transaction parked as failed; retry or abort it", "xid", g.XID, "mode", g.Mode, "reason", g.Reason)
	if s.alarms == nil {
		return
	}
	lastErr := map[int]string{}
	for _, e := range g.Events {
		if e.Error != "" {
			lastErr[e.Branch] = fmt.Sprintf("%s: %s", e.Op, e.Error)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Transaction: %s\nMode:        %s\nApp:         %s\nStatus:      %s (decision: %s)\nReason:      %s\nServer:      %s\n",
		g.XID, g.Mode, g.App, g.Status, cmp.Or(g.Phase, "none"), g.Reason, s.cfg.NodeName)
	for _, br := range g.Branches {
		done := make([]string, len(br.Done))
		for i, op := range br.Done {
			done[i] = string(op)
		}
		fmt.Fprintf(&b, "Branch %d:    done [%s], %d failed attempts", br.ID, strings.Join(done, " "), br.Attempts)
		if e := lastErr[br.ID]; e != "" {
			fmt.Fprintf(&b, "; last error %s", e)
		}
		b.WriteString("\n")
	}
	b.WriteString("\nRetry it with `tangram txn retry " + g.XID + "`, or abort it with `tangram txn abort " + g.XID + "`.\n")
	s.alarms.Send(alarm.Message{Webhook: s.cfg.AlarmWebhook, Trusted: true, Emails: s.cfg.AlarmEmails, JSON: g,
		Subject: fmt.Sprintf("[tangram] transaction %s (%s) parked as failed", g.XID, g.Mode), Text: b.String(),
		Log: []any{"xid", g.XID}})
}
