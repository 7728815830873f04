package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Op record outcomes (the %OP% message's TAGS).
const (
	opCommit   = "commit"
	opRollback = "rollback"
	opMoved    = "moved" // re-stored for its next check; body: old offset, new ID
)

// txService resolves transactional half messages, after RocketMQ: a half
// is stored in %HALF% (invisible to consumers); EndTransaction stores the
// real message (on commit) and then an op record in %OP%. A checker reads
// %HALF% in order: a half without an op record, older than TxCheckAfter,
// is asked about on one of its producer group's check streams, and stored
// again with its check count raised (an op record "moved" retires the old
// copy) — so the checks survive a restart; after TxMaxChecks it is rolled
// back. Commit before op record means a crash between them commits twice
// at worst, never loses a commit.
type txService struct {
	b *Broker

	mu       sync.Mutex
	halfNext int64            // %HALF% queue offset checked up to
	opNext   int64            // %OP% queue offset read up to
	ops      map[int64]string // half commitlog offset -> op outcome
	moved    map[int64]string // half commitlog offset -> the ID it moved to
	streams  map[string][]*rpc.ServerStream[wire.TxChecksRequest, wire.TxCheck]
	conns    map[*rpc.ServerStream[wire.TxChecksRequest, wire.TxCheck]]wire.ProducerConn // who listens, for listings
	rr       int
	dirty    bool
}

type txState struct {
	HalfNext int64 `json:"half_next"`
}

func (t *txService) path() string { return filepath.Join(t.b.cfg.Dir, "tx.json") }

func newTxService(b *Broker) *txService {
	t := &txService{b: b, ops: map[int64]string{}, moved: map[int64]string{},
		streams: map[string][]*rpc.ServerStream[wire.TxChecksRequest, wire.TxCheck]{}}
	if data, err := os.ReadFile(t.path()); err == nil {
		var st txState
		if json.Unmarshal(data, &st) == nil {
			t.halfNext = st.HalfNext
		}
	}
	return t
}

func (t *txService) save() error {
	t.mu.Lock()
	if !t.dirty {
		t.mu.Unlock()
		return nil
	}
	t.dirty = false
	data, _ := json.Marshal(txState{HalfNext: t.halfNext})
	t.mu.Unlock()
	if err := writeFileAtomic(t.path(), data); err != nil {
		t.mu.Lock()
		t.dirty = true // try again next round
		t.mu.Unlock()
		return err
	}
	return nil
}

// readOps folds new %OP% records into the outcome table.
func (t *txService) readOps() {
	for {
		t.mu.Lock()
		from := t.opNext
		t.mu.Unlock()
		ms, next, err := t.b.st.Get(wire.TopicOp, 0, from, 1024)
		if err != nil || len(ms) == 0 {
			return
		}
		t.mu.Lock()
		for _, m := range ms {
			off, id, _ := splitOp(string(m.Body))
			t.ops[off] = m.Properties[wire.PropTags]
			if id != "" {
				t.moved[off] = id
			}
		}
		t.opNext = next
		t.mu.Unlock()
	}
}

func splitOp(body string) (int64, string, error) {
	s, id, _ := cutSpace(body)
	off, err := strconv.ParseInt(s, 10, 64)
	return off, id, err
}

func cutSpace(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func (t *txService) writeOp(half int64, outcome, movedTo string) error {
	body := strconv.FormatInt(half, 10)
	if movedTo != "" {
		body += " " + movedTo
	}
	err := t.b.st.Put(&store.Message{Topic: wire.TopicOp, Properties: map[string]string{wire.PropTags: outcome}, Body: []byte(body)})
	if err != nil {
		return fmt.Errorf("broker: storing a transaction outcome: %w", err)
	}
	t.mu.Lock()
	t.ops[half] = outcome
	if movedTo != "" {
		t.moved[half] = movedTo
	}
	t.mu.Unlock()
	return nil
}

func (b *Broker) handleEndTx(ctx context.Context, req *wire.EndTxRequest) (*wire.NameRequest, error) {
	if err := b.refuseOnSlave("ending a transaction"); err != nil {
		return nil, err
	}
	name, off, size, err := wire.ParseID(req.ID)
	if err != nil {
		return nil, rpcError(err)
	}
	if name != b.cfg.Name {
		return nil, rpc.Errorf(rpc.InvalidArgument, "half message %s is on broker %s, not %s", req.ID, name, b.cfg.Name)
	}
	m, err := b.st.ReadAt(off, size)
	if err != nil || m.Topic != wire.TopicHalf {
		return nil, rpc.Errorf(rpc.NotFound, "half message %s: not found", req.ID)
	}
	if err := authz(ctx, auth.PermEdit, m.Properties[wire.PropRealTopic]); err != nil {
		return nil, err
	}
	outcome, err := b.tx.end(off, m, req.Commit)
	return &wire.NameRequest{Name: outcome}, rpcError(err)
}

// end commits or rolls back a half message (following it if the checker
// moved it); it returns the outcome, which is the earlier one when the
// half was already resolved.
func (t *txService) end(off int64, m *store.Message, commit bool) (string, error) {
	t.readOps()
	for range 64 {
		t.mu.Lock()
		outcome, to := t.ops[off], t.moved[off]
		t.mu.Unlock()
		if outcome != opMoved {
			if outcome != "" {
				return outcome, nil
			}
			break
		}
		_, noff, nsize, err := wire.ParseID(to)
		if err != nil {
			return "", err
		}
		if m, err = t.b.st.ReadAt(noff, nsize); err != nil {
			return "", fmt.Errorf("%w: half message moved to %s: %v", ErrNotFound, to, err)
		}
		off = noff
	}
	if commit {
		real := realMessages([]*store.Message{m})
		if len(real) == 1 {
			delete(real[0].Properties, wire.PropTxChecks)
			if err := t.b.st.Put(real[0]); err != nil {
				return "", fmt.Errorf("broker: committing: %w", err)
			}
		}
		return opCommit, t.writeOp(off, opCommit, "")
	}
	return opRollback, t.writeOp(off, opRollback, "")
}

func (b *Broker) handleTxChecks(ss *rpc.ServerStream[wire.TxChecksRequest, wire.TxCheck]) error {
	req, err := ss.Recv()
	if err != nil {
		return err
	}
	if err := wire.ValidName(req.Group, false); err != nil {
		return rpcError(err)
	}
	if err := auth.Check(ss.Context(), auth.PermEdit, "", "", ""); err != nil {
		return rpcError(err)
	}
	t := b.tx
	peer := ""
	if ci := rpc.Info(ss.Context()); ci != nil {
		peer = ci.Peer
	}
	t.mu.Lock()
	t.streams[req.Group] = append(t.streams[req.Group], ss)
	if t.conns == nil {
		t.conns = map[*rpc.ServerStream[wire.TxChecksRequest, wire.TxCheck]]wire.ProducerConn{}
	}
	t.conns[ss] = wire.ProducerConn{Group: req.Group, Addr: peer, Since: time.Now().UnixMilli(), Broker: b.cfg.Name}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.conns, ss)
		l := t.streams[req.Group]
		for i, s := range l {
			if s == ss {
				t.streams[req.Group] = append(l[:i:i], l[i+1:]...)
				break
			}
		}
		t.mu.Unlock()
	}()
	for {
		if _, err := ss.Recv(); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return nil // the producer went away
		}
	}
}

func (t *txService) run() {
	tick := min(t.b.cfg.TxCheckAfter/2, time.Second)
	tk := time.NewTicker(max(tick, 10*time.Millisecond))
	defer tk.Stop()
	for {
		select {
		case <-t.b.stop:
			_ = t.save()
			return
		case <-tk.C:
		}
		t.check(time.Now())
		if err := t.save(); err != nil {
			t.b.log.Error("broker: saving transaction progress failed", "err", err)
		}
	}
}

// check walks unresolved halves in order, asking about the old enough
// ones and rolling back those asked TxMaxChecks times.
func (t *txService) check(now time.Time) {
	t.readOps()
	for {
		t.mu.Lock()
		from := t.halfNext
		t.mu.Unlock()
		if lo := t.b.st.MinOffset(wire.TopicHalf, 0); from < lo {
			from = lo
		}
		ms, _, err := t.b.st.Get(wire.TopicHalf, 0, from, 256)
		if err != nil || len(ms) == 0 {
			return
		}
		for _, m := range ms {
			t.mu.Lock()
			resolved := t.ops[m.Offset] != ""
			t.mu.Unlock()
			if !resolved {
				checks, _ := strconv.Atoi(m.Properties[wire.PropTxChecks])
				wait := t.b.cfg.TxCheckInterval
				if checks == 0 {
					wait = t.b.cfg.TxCheckAfter
				}
				if now.Sub(time.UnixMilli(m.StoredAt)) < wait {
					return // halves are in stored order: the rest are younger
				}
				if err := t.checkOne(m, checks); err != nil {
					t.b.log.Error("broker: transaction check failed", "err", err)
					return
				}
			}
			t.mu.Lock()
			t.halfNext = m.QueueOffset + 1
			t.dirty = true
			for o := range t.ops {
				if o < m.Offset {
					delete(t.ops, o)
					delete(t.moved, o)
				}
			}
			t.mu.Unlock()
		}
	}
}

func (t *txService) checkOne(m *store.Message, checks int) error {
	if checks >= t.b.cfg.TxMaxChecks {
		t.b.log.Warn("broker: transactional message unresolved after its checks; rolled back",
			"topic", m.Properties[wire.PropRealTopic], "group", m.Properties[wire.PropPGroup], "checks", checks)
		return t.writeOp(m.Offset, opRollback, "")
	}
	p := make(map[string]string, len(m.Properties)+1)
	for k, v := range m.Properties {
		p[k] = v
	}
	p[wire.PropTxChecks] = strconv.Itoa(checks + 1)
	nm := &store.Message{Topic: wire.TopicHalf, BornAt: m.BornAt, Properties: p, Body: m.Body}
	if err := t.b.st.Put(nm); err != nil {
		return fmt.Errorf("broker: re-storing a half message: %w", err)
	}
	id := wire.FormatID(t.b.cfg.Name, nm.Offset, nm.Size)
	if err := t.writeOp(m.Offset, opMoved, id); err != nil {
		return err
	}
	group := m.Properties[wire.PropPGroup]
	t.mu.Lock()
	ss := t.streams[group]
	var s *rpc.ServerStream[wire.TxChecksRequest, wire.TxCheck]
	if len(ss) > 0 {
		t.rr++
		s = ss[t.rr%len(ss)]
	}
	t.mu.Unlock()
	if s == nil {
		t.b.log.Info("broker: no producer of the group is connected to check a half message", "group", group, "check", checks+1)
		return nil
	}
	nm.Properties = p
	if ok, err := s.TrySend(&wire.TxCheck{Msg: t.b.stored(nm)}); !ok || err != nil {
		t.b.log.Warn("broker: could not send a transaction check", "group", group, "err", err)
	}
	t.b.metrics.txChecks.Add(1)
	return nil
}

// Producers lists the producers connected for transaction check-backs
// (of group, or of every group when it is empty).
func (b *Broker) Producers(group string) []wire.ProducerConn {
	b.tx.mu.Lock()
	defer b.tx.mu.Unlock()
	var out []wire.ProducerConn
	for _, pc := range b.tx.conns {
		if group == "" || pc.Group == group {
			out = append(out, pc)
		}
	}
	slices.SortFunc(out, func(a, c wire.ProducerConn) int { return strings.Compare(a.Group+a.Addr, c.Group+c.Addr) })
	return out
}

// TxCheckers is how many producers of group listen for transaction
// check-backs on this broker.
func (b *Broker) TxCheckers(group string) int {
	b.tx.mu.Lock()
	defer b.tx.mu.Unlock()
	return len(b.tx.streams[group])
}
