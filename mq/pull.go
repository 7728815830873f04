package mq

import (
	"context"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// processQueue is one owned queue: what was pulled and is not yet done.
type processQueue struct {
	key    pqKey
	sub    *subscription
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	next      int64          // offset to pull next
	inflight  map[int64]bool // pulled, not yet done
	committed int64
	locked    bool      // orderly: lock held on the broker
	lockedTil time.Time // orderly: trusted until (a lock not renewed by then is treated as lost)
	refetch   bool      // orderly: lock just taken; read the committed offset again
	gen       int       // bumped by abandon: a pull begun before it is discarded
	orderly   chan *Message
}

func (pq *processQueue) consumedUpTo() int64 {
	pq.mu.Lock()
	defer pq.mu.Unlock()
	low := pq.next
	for o := range pq.inflight {
		low = min(low, o)
	}
	return low
}

// abandon gives up what was pulled from offset from on (not started).
func (pq *processQueue) abandon(from int64) {
	pq.mu.Lock()
	defer pq.mu.Unlock()
	for o := range pq.inflight {
		if o >= from {
			delete(pq.inflight, o)
		}
	}
	pq.next = min(pq.next, from)
	pq.gen++
}

func (pq *processQueue) done(off int64) {
	pq.mu.Lock()
	delete(pq.inflight, off)
	pq.mu.Unlock()
}

// pull long-polls a queue and hands what arrives to the handlers.
func (cs *Consumer) pull(pq *processQueue) {
	b, err := cs.c.broker(pq.ctx, pq.key.Addr)
	if err != nil {
		return
	}
	var tags []string
	if pq.sub != nil {
		tags = pq.sub.tags
	}
	bo := backoff.New(100*time.Millisecond, 3*time.Second)
	for pq.ctx.Err() == nil {
		pq.mu.Lock()
		from, n, locked, refetch, gen := pq.next, len(pq.inflight), pq.locked && time.Now().Before(pq.lockedTil), pq.refetch, pq.gen
		pq.mu.Unlock()
		if refetch && n == 0 {
			rep, err := rpc.Call[wire.OffsetsReply](pq.ctx, b, wire.MethodOffsets, &wire.OffsetsRequest{Group: cs.cfg.Group, Topic: pq.key.topic}, rpc.Idempotent())
			if err != nil || int(pq.key.Queue) >= len(rep.Offsets) {
				sleep(pq.ctx, 100*time.Millisecond)
				continue
			}
			pq.mu.Lock()
			if o := rep.Offsets[pq.key.Queue].Offset; o >= 0 {
				pq.next, pq.committed = o, o
			}
			pq.refetch = false
			pq.mu.Unlock()
			continue
		}
		if n >= 1000 || (cs.cfg.Orderly && (!locked || refetch)) {
			sleep(pq.ctx, 20*time.Millisecond) // flow control, or waiting for the queue's lock
			continue
		}
		rep, err := rpc.Call[wire.PullReply](pq.ctx, b, wire.MethodPull, &wire.PullRequest{Group: cs.cfg.Group, Topic: pq.key.topic,
			Queue: pq.key.Queue, Offset: from, Max: cs.cfg.PullBatch, WaitMs: int(cs.cfg.LongPoll / time.Millisecond), Tags: tags},
			rpc.Timeout(cs.cfg.LongPoll+10*time.Second))
		if err != nil {
			if pq.ctx.Err() != nil {
				return
			}
			cs.c.log.Debug("mq: pull failed", "queue", pq.key.queueRef.String(), "topic", pq.key.topic, "err", err)
			bo.Sleep(pq.ctx.Done())
			continue
		}
		bo.Reset()
		pq.mu.Lock()
		if pq.gen != gen {
			pq.mu.Unlock()
			continue // abandoned meanwhile: pull again from there
		}
		if rep.Moved {
			cs.c.log.Warn("mq: offset outside the queue; moved", "topic", pq.key.topic, "queue", pq.key.queueRef.String(), "from", from, "to", rep.Next)
		}
		pq.next = rep.Next
		for _, sm := range rep.Msgs {
			pq.inflight[sm.QueueOffset] = true
		}
		pq.mu.Unlock()
		ms := make([]*Message, len(rep.Msgs))
		for i := range rep.Msgs {
			ms[i] = fromStored(pq.key.Broker, &rep.Msgs[i])
		}
		if cs.cfg.Orderly {
			for _, m := range ms {
				select {
				case pq.orderly <- m:
				case <-pq.ctx.Done():
					return
				}
			}
			continue
		}
		chunk := min(32, max(1, (len(ms)+cs.cfg.Concurrency-1)/cs.cfg.Concurrency))
		for len(ms) > 0 {
			n := min(chunk, len(ms))
			select {
			case cs.tasks <- task{pq, ms[:n]}:
			case <-pq.ctx.Done():
				pq.abandon(ms[0].QueueOffset) // not started: the next owner gets them
				return
			}
			ms = ms[n:]
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (cs *Consumer) commitLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-cs.ctx.Done():
			return
		case <-t.C:
		}
		cs.mu.Lock()
		pqs := make([]*processQueue, 0, len(cs.owned))
		for _, pq := range cs.owned {
			pqs = append(pqs, pq)
		}
		cs.mu.Unlock()
		ctx, cancel := context.WithTimeout(cs.ctx, 5*time.Second)
		cs.commit(ctx, pqs)
		cancel()
	}
}

// commit records how far each queue is consumed (everything below its
// lowest message still in flight), one call per broker.
func (cs *Consumer) commit(ctx context.Context, pqs []*processQueue) {
	if cs.cfg.Broadcast {
		return // broadcast offsets stay with the consumer
	}
	byAddr := map[string][]wire.QueueOffset{}
	var changed []*processQueue
	var values []int64
	for _, pq := range pqs {
		o := pq.consumedUpTo()
		pq.mu.Lock()
		same := o == pq.committed
		pq.mu.Unlock()
		if same {
			continue
		}
		byAddr[pq.key.Addr] = append(byAddr[pq.key.Addr], wire.QueueOffset{Topic: pq.key.topic, Queue: pq.key.Queue, Offset: o})
		changed = append(changed, pq)
		values = append(values, o)
	}
	cs.mu.Lock()
	epoch := cs.epoch
	cs.mu.Unlock()
	failed := map[string]bool{}
	for addr, offs := range byAddr {
		b, err := cs.c.broker(ctx, addr)
		if err == nil {
			_, err = rpc.Call[wire.OffsetsReply](ctx, b, wire.MethodCommit, &wire.CommitRequest{Group: cs.cfg.Group, Epoch: epoch, Offsets: offs})
		}
		if err != nil {
			failed[addr] = true
			cs.c.log.Warn("mq: committing offsets failed", "broker", addr, "err", err)
		}
	}
	cs.mu.Lock()
	for i, pq := range changed {
		cs.local[localKey{pq.key.topic, pq.key.Broker, pq.key.Queue}] = values[i]
	}
	cs.mu.Unlock()
	for i, pq := range changed {
		if !failed[pq.key.Addr] {
			pq.mu.Lock()
			pq.committed = values[i]
			pq.mu.Unlock()
		}
	}
}
