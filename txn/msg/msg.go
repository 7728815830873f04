// Package msg sends two-phase messages: a local database transaction and
// a message to Tangram MQ that both happen or neither does — the
// reliable-message pattern, DTM's "2-phase message", built on the
// broker's transactional (half) messages with the sub-transaction barrier
// making the broker's check-back exact.
//
// Send stores the message as a half message (invisible to consumers),
// runs the caller's local transaction together with a barrier row keyed
// by the message's ID, and commits the message if and only if that local
// transaction committed. When the outcome cannot be told to the broker (a
// crash, a lost connection, a commit whose result was lost), the broker
// asks the producer group later; Sender.check answers from the barrier
// table: the row is there (committed), or it was never written — and the
// check writes it as "closed", so a local transaction still running can
// no longer commit. The answer is therefore never a guess.
//
// On the consuming side Once runs a handler's database work in one local
// transaction with a barrier row keyed by the message and the consumer
// group, so a redelivered message changes nothing twice.
//
// The broker is this mode's coordinator: two-phase messages are not
// global transactions of Tangram's coordinator and carry no tangram-xid
// of their own.
package msg

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"

	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/txn"
)

// Branch is the barrier branch a message's local transaction writes (op
// "msg", the message's ID as the XID).
const Branch = "msg"

// Config configures a Sender.
type Config struct {
	// Client is the MQ client the sender's producer uses. Required.
	Client *mq.Client
	// Group is the producer group; the broker asks it about half messages
	// whose outcome it never heard. One group per Sender: every half
	// message of the group must be answerable from Barrier. Required.
	Group string
	// Barrier is the barrier table in the database the local transactions
	// write to. Required; Init it first.
	Barrier *txn.Barrier
	// Producer sets the producer's other options (Group and TxChecker are
	// the sender's).
	Producer mq.ProducerConfig
	Logger   *slog.Logger
}

// Sender sends two-phase messages. It is safe for concurrent use.
type Sender struct {
	cfg Config
	p   *mq.Producer
	log *slog.Logger

	// afterLocal, when set (tests), runs after a local transaction
	// committed and before the broker hears of it; an error stands for a
	// sender that died there.
	afterLocal func(id string) error
}

// New starts a sender: its producer opens a check stream to every broker
// so it can answer check-backs.
func New(cfg Config) (*Sender, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("msg: Config.Client is nil")
	case cfg.Group == "":
		return nil, errors.New("msg: Config.Group is empty: the broker needs a producer group to check back with")
	case cfg.Barrier == nil || cfg.Barrier.DB == nil:
		return nil, errors.New("msg: Config.Barrier (with its DB) is nil")
	}
	s := &Sender{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	pc := cfg.Producer
	pc.Group = cfg.Group
	pc.TxChecker = s.check
	p, err := cfg.Client.NewProducer(pc)
	if err != nil {
		return nil, fmt.Errorf("msg: producer: %w", err)
	}
	s.p = p
	return s, nil
}

// Close stops the sender's producer (and its check streams).
func (s *Sender) Close() error { return s.p.Close() }

// Send sends m if and only if local's transaction commits. local runs in
// a transaction of the barrier's database, which also holds the barrier
// row; its error rolls both back and is returned (and the message is
// dropped). A nil error means the local transaction committed and the
// message will be delivered — at once when the broker heard the outcome,
// after its check-back otherwise. The result's MsgID is the message's ID
// (the barrier's key, and Once's).
func (s *Sender) Send(ctx context.Context, m *mq.Message, local func(ctx context.Context, tx *sql.Tx) error) (*mq.SendResult, error) {
	if m == nil {
		return nil, errors.New("msg: nil message")
	}
	id := m.Props[wire.PropID]
	if id == "" {
		id = newID()
	}
	if err := txn.ValidXID(id); err != nil {
		return nil, fmt.Errorf("msg: message ID: %w", err)
	}
	mc := *m
	mc.Props = make(map[string]string, len(m.Props)+1)
	maps.Copy(mc.Props, m.Props)
	mc.Props[wire.PropID] = id
	bi := txn.BranchInfo{XID: id, Branch: Branch, Op: txn.OpMsg}
	var localErr, unknownErr error
	res, state, err := s.p.SendTransaction(ctx, &mc, func(ctx context.Context, _ *mq.SendResult) (mq.TxState, error) {
		err := s.cfg.Barrier.Call(ctx, bi, func(tx *sql.Tx) error {
			localErr = local(ctx, tx)
			return localErr
		})
		switch {
		case err == nil:
		case localErr != nil || errors.Is(err, txn.ErrSuspended):
			// Rolled back for certain: local failed, or a check-back
			// closed the door first.
			return mq.TxRollback, err
		default:
			// Begin, the barrier row or the commit failed: a commit's
			// error may hide a commit that happened. Settle asks the
			// database, and makes a rollback final.
			committed, serr := s.cfg.Barrier.Settle(context.WithoutCancel(ctx), bi)
			switch {
			case serr != nil:
				s.log.Warn("msg: the local transaction's outcome is unknown; the broker's check-back will settle it", "id", id, "err", err, "settle", serr)
				unknownErr = fmt.Errorf("msg: %s: local transaction: %w (outcome unknown until the broker's check-back: %v)", id, err, serr)
				return mq.TxUnknown, nil
			case !committed:
				return mq.TxRollback, err
			}
		}
		if s.afterLocal != nil {
			if herr := s.afterLocal(id); herr != nil {
				return mq.TxUnknown, nil
			}
		}
		return mq.TxCommit, nil
	})
	switch {
	case localErr != nil:
		return res, localErr
	case state == mq.TxCommit:
		// Committed locally; an EndTransaction that failed leaves the
		// message to the check-back, which will find the barrier row.
		if err != nil {
			s.log.Warn("msg: committing the half message failed; the broker's check-back will deliver it", "id", id, "err", err)
		}
		return res, nil
	case unknownErr != nil:
		return res, unknownErr
	case state == mq.TxUnknown && err == nil:
		return res, nil // afterLocal: the test's "crash"
	case err != nil:
		return res, fmt.Errorf("msg: %w", err)
	}
	return res, fmt.Errorf("msg: %s: the local transaction did not commit", id)
}

// check answers the broker: commit when the message's local transaction
// committed; rollback when it did not (and now never will); unknown when
// the database cannot be asked (the broker asks again later).
func (s *Sender) check(ctx context.Context, m *mq.Message) mq.TxState {
	if m.MsgID == "" || txn.ValidXID(m.MsgID) != nil {
		s.log.Warn("msg: a half message of this group was not sent by msg.Sender; rolling it back", "id", m.ID, "group", s.cfg.Group)
		return mq.TxRollback
	}
	committed, err := s.cfg.Barrier.Settle(ctx, txn.BranchInfo{XID: m.MsgID, Branch: Branch, Op: txn.OpMsg})
	if err != nil {
		s.log.Warn("msg: check-back: the barrier cannot be read", "id", m.MsgID, "err", err)
		return mq.TxUnknown
	}
	if committed {
		return mq.TxCommit
	}
	return mq.TxRollback
}

// Once wraps fn, a consumer group's database work for a message, so it
// runs once per message however often the message is delivered: fn runs
// in one local transaction with a barrier row keyed by the message's ID
// and group (at most 64 characters); a repeat finds the row and does
// nothing. fn's error rolls both back, and the message is redelivered.
func Once(b *txn.Barrier, group string, fn func(ctx context.Context, tx *sql.Tx, m *mq.Message) error) mq.Handler {
	return func(ctx context.Context, m *mq.Message) error {
		id := m.MsgID
		if id == "" {
			id = m.ID
		}
		bi := txn.BranchInfo{XID: id, Branch: group, Op: txn.OpAction}
		if err := txn.ValidXID(id); err != nil {
			return fmt.Errorf("msg: once: message %s: %w", m.ID, err)
		}
		if group == "" || len(group) > 64 {
			return fmt.Errorf("msg: once: group %q: want 1-64 characters", group)
		}
		return b.Call(ctx, bi, func(tx *sql.Tx) error { return fn(ctx, tx, m) })
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
