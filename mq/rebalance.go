package mq

import (
	"context"
	"hash/fnv"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

func (cs *Consumer) topics() []string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var ts []string
	for t := range cs.subs {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

func (cs *Consumer) brokerAddrs(ctx context.Context) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range cs.topics() {
		r, err := cs.c.route(ctx, t, false)
		if err != nil {
			continue
		}
		for _, q := range r.queues {
			if !seen[q.Addr] {
				seen[q.Addr] = true
				out = append(out, q.Addr)
			}
		}
	}
	return out
}

func (cs *Consumer) memberLoop() {
	t := time.NewTicker(cs.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-cs.ctx.Done():
			return
		case <-t.C:
		}
		cs.rebalance(cs.ctx)
	}
}

// rebalance heartbeats the brokers, learns the group's members and
// re-allocates queues: new ones are started, lost ones dropped.
func (cs *Consumer) rebalance(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	topics := cs.topics()
	routes := map[string]*route{}
	for _, t := range topics {
		r, err := cs.c.route(ctx, t, false)
		if err != nil {
			cs.c.log.Warn("mq: consumer cannot route a topic", "topic", t, "err", err)
			continue
		}
		routes[t] = r
	}
	members := map[string]bool{cs.c.id: true}
	epoch := int64(-1)
	ok := false
	for _, addr := range cs.brokerAddrs(ctx) {
		b, err := cs.c.broker(ctx, addr)
		if err != nil {
			continue
		}
		rep, err := rpc.Call[wire.HeartbeatReply](ctx, b, wire.MethodHeartbeat, &wire.HeartbeatRequest{Group: cs.cfg.Group, Client: cs.c.id, Topics: topics})
		if err != nil {
			if ctx.Err() == nil {
				cs.c.log.Warn("mq: consumer heartbeat failed", "broker", addr, "err", err)
			}
			continue
		}
		ok = true
		for _, m := range rep.Clients {
			members[m] = true
		}
		epoch = max(epoch, rep.Epoch)
	}
	ids := make([]string, 0, len(members))
	for m := range members {
		ids = append(ids, m)
	}
	sort.Strings(ids)
	cs.mu.Lock()
	if !ok && len(cs.owned) > 0 {
		cs.mu.Unlock()
		return // no broker answered: keep what we have
	}
	reset := cs.epochKnown && epoch > cs.epoch
	if reset {
		clear(cs.local)
	}
	if epoch > cs.epoch || !cs.epochKnown {
		cs.epoch, cs.epochKnown = max(epoch, 0), ok
	}
	cs.members = ids
	want := map[pqKey]*subscription{}
	for _, t := range topics {
		r := routes[t]
		if r == nil {
			continue
		}
		qs := r.queues
		if !cs.cfg.Broadcast {
			qs = allocate(cs.cfg.Allocate, qs, ids, cs.c.id)
		}
		for _, q := range qs {
			want[pqKey{t, q}] = cs.subs[t]
		}
	}
	var drop []*processQueue
	for k, pq := range cs.owned {
		if _, keep := want[k]; !keep || reset {
			drop = append(drop, pq)
			delete(cs.owned, k)
		}
	}
	var add []pqKey
	for k := range want {
		if cs.owned[k] == nil {
			add = append(add, k)
		}
	}
	cs.mu.Unlock()
	for _, pq := range drop {
		// After an offset reset, what this consumer had is not committed.
		cs.drop(pq, !reset)
	}
	if len(add) > 0 {
		cs.addQueues(ctx, add, want)
	}
	if cs.cfg.Orderly {
		cs.renewLocks(ctx)
	}
}

// allocate gives this client its share of queues.
func allocate(strategy string, qs []queueRef, clients []string, me string) []queueRef {
	idx := slices.Index(clients, me)
	if idx < 0 || len(clients) == 0 {
		return nil
	}
	if strategy == "hash" {
		var out []queueRef
		for _, q := range qs {
			best, bestH := "", uint64(0)
			for _, c := range clients {
				h := fnv.New64a()
				h.Write([]byte(c + "|" + q.Broker + "/" + strconv.Itoa(int(q.Queue))))
				if v := h.Sum64(); best == "" || v > bestH {
					best, bestH = c, v
				}
			}
			if best == me {
				out = append(out, q)
			}
		}
		return out
	}
	// Average: contiguous ranges, the first len(qs)%n clients one more.
	n := len(clients)
	size := len(qs) / n
	extra := len(qs) % n
	start := idx*size + min(idx, extra)
	if idx < extra {
		size++
	}
	if start >= len(qs) {
		return nil
	}
	return qs[start:min(start+size, len(qs))]
}

// addQueues starts consuming newly owned queues from the group's
// committed offsets.
func (cs *Consumer) addQueues(ctx context.Context, keys []pqKey, subs map[pqKey]*subscription) {
	type bt struct{ addr, topic string }
	offsets := map[bt]*wire.OffsetsReply{}
	for _, k := range keys {
		id := bt{k.Addr, k.topic}
		if _, done := offsets[id]; done {
			continue
		}
		b, err := cs.c.broker(ctx, k.Addr)
		if err != nil {
			continue
		}
		rep, err := rpc.Call[wire.OffsetsReply](ctx, b, wire.MethodOffsets, &wire.OffsetsRequest{Group: cs.cfg.Group, Topic: k.topic}, rpc.Idempotent())
		if err != nil {
			if ctx.Err() == nil {
				cs.c.log.Warn("mq: reading the group's offsets failed", "topic", k.topic, "broker", k.Broker, "err", err)
			}
			continue
		}
		offsets[id] = rep
	}
	for _, k := range keys {
		rep := offsets[bt{k.Addr, k.topic}]
		if rep == nil || int(k.Queue) >= len(rep.Offsets) {
			continue // next rebalance tries again
		}
		start := rep.Offsets[k.Queue].Offset
		committed := start // -1 when the group has none here: the first commit records where it starts
		cs.mu.Lock()
		local, haveLocal := cs.local[localKey{k.topic, k.Broker, k.Queue}]
		cs.mu.Unlock()
		if start < 0 || cs.cfg.Broadcast {
			start = rep.Min[k.Queue]
			if cs.cfg.FromLatest {
				start = rep.Max[k.Queue]
			}
		}
		if haveLocal && local > start && local <= rep.Max[k.Queue] {
			start = local // the broker has not heard our last commit (a failover)
		}
		pctx, cancel := context.WithCancel(cs.ctx)
		pq := &processQueue{key: k, sub: subs[k], ctx: pctx, cancel: cancel, next: start, committed: committed, inflight: map[int64]bool{}}
		cs.mu.Lock()
		if cs.owned[k] != nil || cs.ctx.Err() != nil {
			cs.mu.Unlock()
			cancel()
			continue
		}
		cs.owned[k] = pq
		cs.mu.Unlock()
		if cs.cfg.Orderly {
			pq.orderly = make(chan *Message, cs.cfg.PullBatch)
			pq.wg.Add(1)
			go func() { defer pq.wg.Done(); cs.consumeOrderly(pq) }()
		}
		pq.wg.Add(1)
		go func() { defer pq.wg.Done(); cs.pull(pq) }()
	}
}

// drop stops consuming a queue: pulling stops, handlers running on it
// finish (up to 10 s), its offset is committed, its lock released.
func (cs *Consumer) drop(pq *processQueue, commit bool) {
	pq.cancel()
	pq.wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) { // concurrent: handlers running what was pulled
		pq.mu.Lock()
		n := len(pq.inflight)
		pq.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	pq.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if commit {
		cs.commit(ctx, []*processQueue{pq})
	}
	if cs.cfg.Orderly {
		if b, err := cs.c.broker(ctx, pq.key.Addr); err == nil {
			_, _ = rpc.Call[wire.LockReply](ctx, b, wire.MethodUnlock, &wire.LockRequest{Group: cs.cfg.Group, Client: cs.c.id, Topic: pq.key.topic, Queues: []uint32{pq.key.Queue}})
		}
	}
}
