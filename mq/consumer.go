package mq

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Handler consumes one message; an error (or a panic) sends it back for a
// later retry.
type Handler func(ctx context.Context, m *Message) error

// ErrNotConsumed, returned by a Handler, leaves the message (and what
// follows it in its queue) unconsumed: not retried, not committed, pulled
// again later or by the member that takes the queue. For a consumer that
// is about to stop.
var ErrNotConsumed = errors.New("mq: not consumed")

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Group names the consumer group. Required.
	Group string
	// Broadcast gives every consumer of the group every message (offsets
	// kept by each consumer in memory); otherwise (clustering) each queue
	// belongs to one consumer of the group.
	Broadcast bool
	// Orderly consumes each queue one message at a time, in order, holding
	// the queue's lock on the broker so no two consumers process it.
	Orderly bool
	// Allocate is how queues are shared: "average" (default: contiguous
	// ranges) or "hash" (consistent hashing: a member joining or leaving
	// moves few queues).
	Allocate string
	// Concurrency is the handler goroutines (default 16).
	Concurrency int
	// PullBatch is the messages per pull (default 32).
	PullBatch int
	// MaxRetry is how often a failing message is redelivered before it
	// goes to the group's dead-letter topic (default 16).
	MaxRetry int
	// FromLatest starts a new group at the end of each queue instead of the
	// beginning.
	FromLatest bool
	// Heartbeat paces membership and rebalancing (default 3 s).
	Heartbeat time.Duration
	// LongPoll is how long a pull waits on an empty queue (default 15 s).
	LongPoll time.Duration
}

// Consumer consumes topics as a member of a group.
type Consumer struct {
	c   *Client
	cfg ConsumerConfig

	mu         sync.Mutex
	subs       map[string]*subscription
	owned      map[pqKey]*processQueue
	members    []string
	epoch      int64
	epochKnown bool
	// local caches how far each queue (by broker name, not address) was
	// consumed, so a queue that moves to the broker's slave, or back, goes
	// on from here even if the other side has not heard the last commit.
	local   map[localKey]int64
	started bool

	tasks  chan task
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type subscription struct {
	topic   string
	tags    []string
	handler Handler
}

type pqKey struct {
	topic string
	queueRef
}

type localKey struct {
	topic, broker string
	queue         uint32
}

// task is a run of consecutive messages of one queue for one worker
// (fewer hand-offs than one message each; the runs are short enough that
// every worker has work).
type task struct {
	pq *processQueue
	ms []*Message
}

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
	locked    bool // orderly: lock held on the broker
	refetch   bool // orderly: lock just taken; read the committed offset again
	gen       int  // bumped by abandon: a pull begun before it is discarded
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

// NewConsumer returns a consumer; Subscribe, then Start.
func (c *Client) NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if err := wire.ValidName(cfg.Group, false); err != nil {
		return nil, fmt.Errorf("mq: consumer group: %w", err)
	}
	if cfg.Allocate == "" {
		cfg.Allocate = "average"
	}
	if cfg.Allocate != "average" && cfg.Allocate != "hash" {
		return nil, fmt.Errorf("mq: allocation %q (want average or hash)", cfg.Allocate)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.PullBatch <= 0 || cfg.PullBatch > wire.MaxPull {
		cfg.PullBatch = 32
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = wire.DefaultMaxRetry
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 3 * time.Second
	}
	if cfg.LongPoll <= 0 {
		cfg.LongPoll = 15 * time.Second
	}
	return &Consumer{c: c, cfg: cfg, subs: map[string]*subscription{}, owned: map[pqKey]*processQueue{}, local: map[localKey]int64{}}, nil
}

// Subscribe consumes topic's messages with one of tags (all when none)
// with h. Call before Start.
func (cs *Consumer) Subscribe(topic string, tags []string, h Handler) error {
	if err := wire.ValidName(topic, false); err != nil {
		return fmt.Errorf("mq: subscribe: %w", err)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.started {
		return errors.New("mq: subscribe before Start")
	}
	cs.subs[topic] = &subscription{topic: topic, tags: tags, handler: h}
	return nil
}

// Start joins the group and starts consuming.
func (cs *Consumer) Start(ctx context.Context) error {
	cs.mu.Lock()
	if cs.started {
		cs.mu.Unlock()
		return errors.New("mq: consumer already started")
	}
	if len(cs.subs) == 0 {
		cs.mu.Unlock()
		return errors.New("mq: consumer has no subscriptions")
	}
	cs.started = true
	if !cs.cfg.Broadcast {
		// Failed messages come back through the group's retry topic.
		rt := wire.RetryTopic(cs.cfg.Group)
		cs.subs[rt] = &subscription{topic: rt}
	}
	cs.ctx, cs.cancel = context.WithCancel(context.Background())
	cs.tasks = make(chan task, cs.cfg.Concurrency*4)
	cs.mu.Unlock()
	if !cs.cfg.Orderly {
		for range cs.cfg.Concurrency {
			cs.wg.Add(1)
			go func() { defer cs.wg.Done(); cs.worker() }()
		}
	}
	cs.rebalance(ctx)
	cs.wg.Add(2)
	go func() { defer cs.wg.Done(); cs.memberLoop() }()
	go func() { defer cs.wg.Done(); cs.commitLoop() }()
	return nil
}

// Close leaves the group: stops pulling, lets running handlers finish
// (up to 10 s), commits what was consumed and tells the brokers, so the
// others take the queues at once.
func (cs *Consumer) Close() error {
	cs.mu.Lock()
	if !cs.started || cs.cancel == nil {
		cs.mu.Unlock()
		return nil
	}
	owned := cs.owned
	cs.owned = map[pqKey]*processQueue{}
	cs.mu.Unlock()
	var wg sync.WaitGroup
	for _, pq := range owned {
		wg.Add(1)
		go func() { defer wg.Done(); cs.drop(pq, true) }()
	}
	wg.Wait()
	cs.cancel()
	cs.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, addr := range cs.brokerAddrs(ctx) {
		if b, err := cs.c.broker(ctx, addr); err == nil {
			_, _ = rpc.Call[wire.HeartbeatReply](ctx, b, wire.MethodUnregister, &wire.HeartbeatRequest{Group: cs.cfg.Group, Client: cs.c.id, Topics: cs.topics()})
		}
	}
	return nil
}

// Members is the group's consumers as last seen.
func (cs *Consumer) Members() []string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return slices.Clone(cs.members)
}

// Owned lists the queues this consumer holds ("topic@broker/queue").
func (cs *Consumer) Owned() []string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var out []string
	for k := range cs.owned {
		out = append(out, k.topic+"@"+k.queueRef.String())
	}
	sort.Strings(out)
	return out
}

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
		from, n, locked, refetch, gen := pq.next, len(pq.inflight), pq.locked, pq.refetch, pq.gen
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

// handlerFor finds a message's handler. The subscriptions do not change
// after Start, so no lock is needed.
func (cs *Consumer) handlerFor(m *Message, pq *processQueue) Handler {
	if s := cs.subs[m.Topic]; s != nil && s.handler != nil {
		return s.handler
	}
	if pq.sub != nil && pq.sub.handler != nil {
		return pq.sub.handler
	}
	return nil
}

// run calls the handler, turning a panic into an error.
func (cs *Consumer) run(m *Message, pq *processQueue) (err error) {
	h := cs.handlerFor(m, pq)
	if h == nil {
		return fmt.Errorf("mq: no handler for topic %q", m.Topic)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mq: handler panicked: %v", r)
		}
	}()
	return h(handlerContext(cs.ctx, m), m)
}

func (cs *Consumer) worker() {
	for {
		select {
		case <-cs.ctx.Done():
			return
		case t := <-cs.tasks:
			cs.consume(t)
		}
	}
}

// consume runs a task's messages in order.
func (cs *Consumer) consume(t task) {
	for _, m := range t.ms {
		if !cs.consumeOne(t.pq, m) {
			return // the rest of the run was given up with this one
		}
	}
}

// consumeOne runs one message; a failure goes back through the retry
// topic (or, if the broker cannot be told, is run again here later). It
// returns false when the message and those after it were left unconsumed.
func (cs *Consumer) consumeOne(pq *processQueue, m *Message) bool {
	err := cs.run(m, pq)
	if err == nil {
		pq.done(m.QueueOffset)
		return true
	}
	if errors.Is(err, ErrNotConsumed) {
		pq.abandon(m.QueueOffset)
		sleep(cs.ctx, 50*time.Millisecond)
		return false
	}
	if cs.cfg.Broadcast {
		cs.c.log.Warn("mq: broadcast message failed; not retried", "topic", m.Topic, "id", m.ID, "err", err)
		pq.done(m.QueueOffset)
		return true
	}
	ctx, cancel := context.WithTimeout(cs.ctx, 5*time.Second)
	defer cancel()
	if rerr := cs.sendBack(ctx, pq.key.Addr, m, false); rerr != nil {
		cs.c.log.Warn("mq: sending a failed message back failed; retrying it here", "id", m.ID, "err", rerr)
		time.AfterFunc(time.Second, func() {
			select {
			case cs.tasks <- task{pq, []*Message{m}}:
			case <-cs.ctx.Done():
			}
		})
		return true
	}
	pq.done(m.QueueOffset)
	return true
}

func (cs *Consumer) sendBack(ctx context.Context, addr string, m *Message, dlq bool) error {
	b, err := cs.c.broker(ctx, addr)
	if err != nil {
		return err
	}
	_, err = rpc.Call[wire.RetryReply](ctx, b, wire.MethodRetry, &wire.RetryRequest{Group: cs.cfg.Group, ID: m.ID, MaxRetry: cs.cfg.MaxRetry, DLQ: dlq})
	return err
}

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
				locked := pq.locked
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
			pq.mu.Unlock()
		}
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
