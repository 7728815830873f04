package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Replication, after RocketMQ's HA: a slave (Config.Master set) keeps a
// stream open to its master, which sends the commitlog's records from
// where the slave's log ends — the same bytes at the same offsets — plus,
// every second, its topic table and the groups' offsets. The slave stores
// the records (its dispatcher builds its own consume queues) and
// acknowledges how far it got, sending back the offsets consumers
// committed on it. With SyncReplicas a master acknowledges a send only
// once the slave has stored it.

// replication is a master's view of its slaves.
type replication struct {
	mu        sync.Mutex
	acked     int64 // the furthest commitlog offset a slave stored
	connected int
	changed   chan struct{} // closed and replaced when acked moves
}

func newReplication() *replication { return &replication{changed: make(chan struct{})} }

func (r *replication) ack(off int64) {
	r.mu.Lock()
	if off > r.acked {
		r.acked = off
		close(r.changed)
		r.changed = make(chan struct{})
	}
	r.mu.Unlock()
}

// wait blocks until a slave stored the log up to end.
func (r *replication) wait(end int64, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		acked, n, ch := r.acked, r.connected, r.changed
		r.mu.Unlock()
		if acked >= end {
			return nil
		}
		if n == 0 {
			return fmt.Errorf("%w: no slave is connected, and sync replication acknowledges only what a slave stored (the message is on the master)", ErrBusy)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("%w: the slave did not store the message within %v (it is on the master)", ErrBusy, timeout)
		}
	}
}

func (b *Broker) isSlave() bool { return b.cfg.Master != "" }

var errSlave = errors.New("broker: read-only")

func (b *Broker) refuseOnSlave(what string) error {
	if b.isSlave() {
		return rpc.Errorf(rpc.Unavailable, "broker %s is a slave (%v): %s goes to its master", b.cfg.Name, errSlave, what)
	}
	return nil
}

// handleReplicate serves a slave, which authenticates with the broker
// permission (the broker role, or admin).
func (b *Broker) handleReplicate(ss *rpc.ServerStream[wire.ReplAck, wire.ReplFrame]) error {
	if err := auth.Check(ss.Context(), auth.PermBroker, "", "", ""); err != nil {
		return rpcError(err)
	}
	if b.isSlave() {
		return rpc.Errorf(rpc.FailedPrecondition, "broker %s is itself a slave", b.cfg.Name)
	}
	hello, err := ss.Recv()
	if err != nil {
		return err
	}
	if hello.SegmentSize != b.st.SegmentSize() {
		return rpc.Errorf(rpc.FailedPrecondition, "the slave's segment size %d differs from the master's %d", hello.SegmentSize, b.st.SegmentSize())
	}
	if hello.From > b.st.End() {
		return rpc.Errorf(rpc.FailedPrecondition, "the slave's log ends at %d, beyond the master's end %d: it follows another master", hello.From, b.st.End())
	}
	b.repl.mu.Lock()
	b.repl.connected++
	b.repl.mu.Unlock()
	defer func() {
		b.repl.mu.Lock()
		b.repl.connected--
		b.repl.mu.Unlock()
	}()
	b.offsets.merge(hello.Offsets)
	b.repl.ack(hello.From)
	b.log.Info("broker: slave connected", "from", hello.From)
	ctx := ss.Context()
	go func() {
		for {
			a, err := ss.Recv()
			if err != nil {
				return
			}
			b.repl.ack(a.Acked)
			if len(a.Offsets) > 0 {
				b.offsets.merge(a.Offsets)
			}
		}
	}()
	pos := hello.From
	lastMeta := time.Time{}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if time.Since(lastMeta) > time.Second {
			lastMeta = time.Now()
			var ts []wire.TopicConfig
			for _, t := range b.Topics() {
				ts = append(ts, t.TopicConfig)
			}
			if err := ss.Send(&wire.ReplFrame{Offset: pos, Meta: true, Topics: ts, Offsets: b.offsets.snapshot()}); err != nil {
				return err
			}
		}
		changed := b.st.Changed()
		data, next, err := b.st.ReadRaw(pos, 1<<20)
		if err != nil {
			return rpc.Errorf(rpc.FailedPrecondition, "replicating from %d: %v", pos, err)
		}
		if next > pos {
			if err := ss.Send(&wire.ReplFrame{Offset: pos, Data: data}); err != nil {
				return err
			}
			pos = next
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-b.stop:
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// replicaLoop follows the master until the broker closes.
func (b *Broker) replicaLoop() {
	bo := backoff.New(100*time.Millisecond, 3*time.Second)
	for {
		err := b.follow()
		select {
		case <-b.stop:
			return
		default:
		}
		if err != nil {
			b.log.Warn("broker: replication from the master stopped; reconnecting", "master", b.cfg.Master, "err", err)
		}
		if !bo.Sleep(b.stop) {
			return
		}
	}
}

func (b *Broker) follow() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	opts := []rpc.DialOption{rpc.WithLogger(b.log), rpc.WithMaxFrameSize(64 << 20)}
	if b.cfg.Token != "" {
		opts = append(opts, rpc.WithToken(b.cfg.Token))
	}
	c, err := rpc.Dial(ctx, b.cfg.Master, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := rpc.NewStream[wire.ReplAck, wire.ReplFrame](ctx, c, wire.MethodReplicate)
	if err != nil {
		return err
	}
	defer st.Cancel()
	if err := st.Send(&wire.ReplAck{From: b.st.End(), SegmentSize: b.st.SegmentSize(), Acked: b.st.End(), Offsets: b.offsets.snapshot()}); err != nil {
		return err
	}
	lastOffsets := time.Now()
	for {
		f, err := st.Recv()
		if err != nil {
			return err
		}
		if f.Meta {
			b.applyTopics(f.Topics)
			b.offsets.merge(f.Offsets)
		}
		if len(f.Data) > 0 {
			if err := b.st.AppendRaw(f.Offset, f.Data); err != nil {
				return fmt.Errorf("storing replicated records: %w", err)
			}
		}
		ack := &wire.ReplAck{Acked: b.st.End()}
		if time.Since(lastOffsets) > time.Second {
			lastOffsets = time.Now()
			ack.Offsets = b.offsets.snapshot()
		}
		if len(f.Data) > 0 || ack.Offsets != nil {
			if err := st.Send(ack); err != nil {
				return err
			}
		}
	}
}

// applyTopics takes the master's topic table.
func (b *Broker) applyTopics(ts []wire.TopicConfig) {
	b.tmu.Lock()
	changed := len(ts) != len(b.topics)
	next := make(map[string]*wire.TopicConfig, len(ts))
	for i := range ts {
		t := ts[i]
		if old := b.topics[t.Name]; old == nil || *old != t {
			changed = true
		}
		next[t.Name] = &t
	}
	if !changed {
		b.tmu.Unlock()
		return
	}
	b.topics = next
	err := b.saveTopicsLocked()
	b.tmu.Unlock()
	if err != nil {
		b.log.Error("broker: saving the replicated topic table failed", "err", err)
	}
	signalChan(b.regKick)
}
