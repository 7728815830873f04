package mq

import (
	"context"
	"errors"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// consumeOrderly runs a queue's messages one at a time; a failure is
// retried here (the queue waits, keeping order) up to MaxRetry times,
// then the message goes to the dead-letter topic.
func (cs *Consumer) consumeOrderly(pq *processQueue) {
	for {
		select {
		case <-pq.ctx.Done():
			// What was pulled and not run goes to the next owner.
			pq.mu.Lock()
			low := pq.next
			for o := range pq.inflight {
				low = min(low, o)
			}
			pq.mu.Unlock()
			pq.abandon(low)
			return
		case m := <-pq.orderly:
			for attempt := 0; ; attempt++ {
				pq.mu.Lock()
				locked := pq.locked && time.Now().Before(pq.lockedTil)
				pq.mu.Unlock()
				if !locked {
					sleep(pq.ctx, 50*time.Millisecond)
					if pq.ctx.Err() != nil {
						break
					}
					attempt--
					continue
				}
				err := cs.run(m, pq)
				if err == nil {
					pq.done(m.QueueOffset)
					break
				}
				if errors.Is(err, ErrNotConsumed) {
					pq.abandon(m.QueueOffset)
					for drained := false; !drained; {
						select {
						case <-pq.orderly:
						default:
							drained = true
						}
					}
					sleep(pq.ctx, 50*time.Millisecond)
					break
				}
				if attempt+1 >= cs.cfg.MaxRetry {
					ctx, cancel := context.WithTimeout(pq.ctx, 5*time.Second)
					derr := cs.sendBack(ctx, pq.key.Addr, m, true)
					cancel()
					if derr == nil {
						cs.c.log.Warn("mq: ordered message failed every retry; sent to the dead-letter topic", "id", m.ID, "err", err)
						pq.done(m.QueueOffset)
						break
					}
				}
				sleep(pq.ctx, time.Second)
				if pq.ctx.Err() != nil {
					break
				}
			}
		}
	}
}

// clientLockTTL is how long a consumer trusts a queue lock it could not
// renew: half the broker's default LockTTL (60 s), as RocketMQ's client
// does (30 s against 60 s).
const clientLockTTL = 30 * time.Second

// renewLocks takes or renews the broker locks of owned queues (ordered
// consumption).
func (cs *Consumer) renewLocks(ctx context.Context) {
	type bt struct{ addr, topic string }
	groups := map[bt][]*processQueue{}
	cs.mu.Lock()
	for k, pq := range cs.owned {
		groups[bt{k.Addr, k.topic}] = append(groups[bt{k.Addr, k.topic}], pq)
	}
	cs.mu.Unlock()
	for id, pqs := range groups {
		b, err := cs.c.broker(ctx, id.addr)
		if err != nil {
			continue
		}
		req := &wire.LockRequest{Group: cs.cfg.Group, Client: cs.c.id, Topic: id.topic}
		for _, pq := range pqs {
			req.Queues = append(req.Queues, pq.key.Queue)
		}
		sent := time.Now()
		rep, err := rpc.Call[wire.LockReply](ctx, b, wire.MethodLock, req)
		got := map[uint32]bool{}
		if err == nil {
			for _, q := range rep.Queues {
				got[q] = true
			}
		}
		for _, pq := range pqs {
			pq.mu.Lock()
			if got[pq.key.Queue] && !pq.locked {
				// The previous owner committed before it let go: start there.
				pq.refetch = true
			}
			pq.locked = got[pq.key.Queue]
			if pq.locked {
				// Trusted for half the broker's lock TTL from before the
				// request: a consumer cut off from its broker stops taking
				// messages well before the broker could hand the queue on.
				pq.lockedTil = sent.Add(clientLockTTL)
			}
			pq.mu.Unlock()
		}
	}
}
