package idgen

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/rpc"
)

// MaxNext is the most IDs one Next call (and one request) may ask for.
const MaxNext = 10_000

// Next calls of one tag are coalesced: while a request for the tag is in
// flight, later calls queue; when it returns, the first of them sends one
// request for all of them (up to MaxNext IDs) and hands each its IDs in
// queue order. Under load this turns many small round trips into few
// larger ones (fewer system calls on both sides, so shorter queues and a
// lower tail); a lone call goes out at once, as before. Each caller's IDs
// still ascend, in the order the calls were made.
type nextQueue struct {
	mu      sync.Mutex
	busy    bool // a request of this tag is in flight
	waiting []*nextCall
}

type nextCall struct {
	ctx   context.Context
	count int
	ids   []int64
	err   error
	send  bool          // set (under the queue's mu) before done: this call sends a batch
	gone  bool          // its caller gave up while it was in a batch
	batch []*nextCall   // the batch it sends (itself first)
	done  chan struct{} // closed once ids/err or send is set
}

func (c *Client) queue(tag string) *nextQueue {
	c.nqMu.Lock()
	defer c.nqMu.Unlock()
	if c.nq == nil {
		c.nq = map[string]*nextQueue{}
	}
	q := c.nq[tag]
	if q == nil {
		q = &nextQueue{}
		c.nq[tag] = q
	}
	return q
}

// next runs one call through tag's queue.
func (c *Client) next(ctx context.Context, tag string, count int) ([]int64, error) {
	q := c.queue(tag)
	me := &nextCall{ctx: ctx, count: count, done: make(chan struct{})}
	q.mu.Lock()
	if !q.busy {
		q.busy = true
		q.mu.Unlock()
		c.sendBatch(tag, q, []*nextCall{me})
		return me.ids, me.err
	}
	q.waiting = append(q.waiting, me)
	q.mu.Unlock()
	select {
	case <-me.done:
	case <-ctx.Done():
		return nil, c.giveUp(tag, q, me)
	}
	if me.send {
		c.sendBatch(tag, q, me.batch)
	}
	return me.ids, me.err
}

// giveUp takes a waiting call whose context ended out of the queue. A
// call already in a batch in flight leaves its IDs unused (a gap, as with
// any ID taken and not used); one chosen to send the next batch passes
// that to the next call of the batch.
func (c *Client) giveUp(tag string, q *nextQueue, me *nextCall) error {
	err := fmt.Errorf("idgen: next of %s: %w", tag, context.Cause(me.ctx))
	q.mu.Lock()
	if i := slices.Index(q.waiting, me); i >= 0 {
		q.waiting = slices.Delete(q.waiting, i, i+1)
		q.mu.Unlock()
		return err
	}
	if !me.send {
		me.gone = true // in a batch: not to be made its sender
		q.mu.Unlock()
		return err
	}
	q.mu.Unlock()
	<-me.done // closed with send set, under way
	q.mu.Lock()
	var rest []*nextCall
	for _, b := range me.batch[1:] {
		if !b.gone {
			rest = append(rest, b)
		}
	}
	if len(rest) == 0 {
		q.mu.Unlock()
		c.handOff(q)
		return err
	}
	b := rest[0]
	b.batch, b.send = rest, true
	q.mu.Unlock()
	close(b.done)
	return err
}

// sendBatch sends one request for the batch (its sender first), hands the
// queue on, then answers the rest of the batch.
func (c *Client) sendBatch(tag string, q *nextQueue, batch []*nextCall) {
	total := 0
	for _, b := range batch {
		total += b.count
	}
	ctx, cancel := batchContext(batch)
	rep, err := rpc.Call[NextReply](ctx, c.rpc, MethodNext, &NextRequest{Tag: tag, Count: total})
	cancel()
	if err == nil && len(rep.IDs) != total {
		err = fmt.Errorf("the server returned %d IDs for %d", len(rep.IDs), total)
	}
	off := 0
	for _, b := range batch {
		if err != nil {
			b.err = fmt.Errorf("idgen: next of %s: %w", tag, err)
		} else {
			b.ids = rep.IDs[off : off+b.count : off+b.count]
			off += b.count
		}
	}
	c.handOff(q) // first, so the next batch is on its way
	for _, b := range batch[1:] {
		close(b.done)
	}
}

// handOff makes the first waiting call the sender of the next batch (as
// many waiting calls as fit in MaxNext), or marks the queue idle.
func (c *Client) handOff(q *nextQueue) {
	q.mu.Lock()
	if len(q.waiting) == 0 {
		q.busy = false
		q.mu.Unlock()
		return
	}
	n, sum := 0, 0
	for n < len(q.waiting) && sum+q.waiting[n].count <= MaxNext {
		sum += q.waiting[n].count
		n++
	}
	next := q.waiting[0]
	next.batch = append([]*nextCall(nil), q.waiting[:n]...)
	next.send = true
	rest := copy(q.waiting, q.waiting[n:])
	clear(q.waiting[rest:])
	q.waiting = q.waiting[:rest]
	q.mu.Unlock()
	close(next.done)
}

// batchContext is the context of one batch's request: a lone call's own;
// for several, one no caller's cancellation cuts short (a caller that gives
// up leaves the others waiting for the same reply), ending at the latest
// of their deadlines (30 s when one has none).
func batchContext(batch []*nextCall) (context.Context, context.CancelFunc) {
	if len(batch) == 1 {
		return batch[0].ctx, func() {}
	}
	var latest time.Time
	for _, b := range batch {
		dl, ok := b.ctx.Deadline()
		if !ok {
			latest = time.Now().Add(30 * time.Second)
			break
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}
