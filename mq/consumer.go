package mq

import (
	"go.opentelemetry.io/otel/codes"

	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

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
	ctx, span := cs.startProcess(handlerContext(cs.ctx, m), m)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mq: handler panicked: %v", r)
		}
		if span != nil {
			if err != nil && !errors.Is(err, ErrNotConsumed) {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
	}()
	return h(ctx, m)
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
