package mq

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Message is a message to send, or one received.
type Message struct {
	Topic string
	// Tag is one tag consumers can filter on (on the broker).
	Tag string
	// Keys are indexed for look-up (`tangram mq lookup --key`).
	Keys []string
	Body []byte
	// Props are user properties (trace context and tangram-xid travel here).
	Props map[string]string
	// ShardingKey sends every message with the same key to the same queue,
	// so they are consumed in order.
	ShardingKey string
	// DelayLevel delays delivery by the broker's level (1 s, 5 s, 10 s,
	// 30 s, 1 m … 2 h by default); DeliverAt to a time (at most 40 days
	// ahead). Both zero: now.
	DelayLevel int
	DeliverAt  time.Time

	// Set on received messages.
	ID          string // the broker's ID (look-up, retries)
	MsgID       string // the producer's unique ID (deduplication)
	Broker      string
	Queue       uint32
	QueueOffset int64
	BornAt      time.Time
	StoredAt    time.Time
	Reconsumed  int // times redelivered after a failure
}

// Prop returns a property.
func (m *Message) Prop(k string) string { return m.Props[k] }

func (m *Message) wire(ctx context.Context, now int64) (wire.Msg, error) {
	if m.Topic == "" {
		return wire.Msg{}, errors.New("mq: message without a topic")
	}
	p := make(map[string]string, len(m.Props)+4)
	maps.Copy(p, m.Props)
	if m.Tag != "" {
		p[wire.PropTags] = m.Tag
	}
	if len(m.Keys) > 0 {
		p[wire.PropKeys] = strings.Join(m.Keys, " ")
	}
	if p[wire.PropID] == "" {
		p[wire.PropID] = newMsgID()
	}
	if m.DelayLevel > 0 {
		p[wire.PropDelay] = strconv.Itoa(m.DelayLevel)
	}
	if !m.DeliverAt.IsZero() {
		// The wire carries milliseconds: round up, so that a message is
		// never delivered before the instant asked for.
		ms := m.DeliverAt.UnixMilli()
		if m.DeliverAt.After(time.UnixMilli(ms)) {
			ms++
		}
		p[wire.PropDeliverAt] = strconv.FormatInt(ms, 10)
	}
	injectContext(ctx, p)
	return wire.Msg{Props: p, Body: m.Body, BornAt: now}, nil
}

func fromStored(broker string, s *wire.StoredMsg) *Message {
	m := &Message{Topic: s.Topic, Body: s.Body, Props: s.Props, ID: s.ID, Broker: broker, Queue: s.Queue,
		QueueOffset: s.QueueOffset, BornAt: time.UnixMilli(s.BornAt), StoredAt: time.UnixMilli(s.StoredAt)}
	m.Tag = s.Props[wire.PropTags]
	if k := s.Props[wire.PropKeys]; k != "" {
		m.Keys = strings.Fields(k)
	}
	m.MsgID = s.Props[wire.PropID]
	if v := s.Props[wire.PropReconsume]; v != "" {
		m.Reconsumed, _ = strconv.Atoi(v)
	}
	if rt := s.Props[wire.PropRealTopic]; rt != "" && strings.HasPrefix(s.Topic, wire.RetryPrefix) {
		m.Topic = rt // a retried message shows its own topic
	}
	return m
}

// SendResult is a stored message's place.
type SendResult struct {
	ID          string // broker ID
	MsgID       string // producer ID
	Broker      string
	Queue       uint32
	QueueOffset int64 // -1 for delayed and half messages
}

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	// Group names the producer group (required for transactional messages:
	// the broker checks unresolved ones with the group).
	Group string
	// Retries is how many other brokers a failed send tries (default 2;
	// negative: none).
	Retries int
	// Timeout bounds one send attempt (default 5 s).
	Timeout time.Duration
	// AutoCreate asks brokers to create unknown topics (if they allow it)
	// with Queues queues (default the broker's).
	AutoCreate bool
	Queues     int
	// TxChecker answers the broker's questions about transactional
	// messages whose outcome it never heard (see TransactionProducer).
	TxChecker func(ctx context.Context, m *Message) TxState
}

// Producer sends messages. It is safe for concurrent use.
type Producer struct {
	c   *Client
	cfg ProducerConfig
	rr  atomic.Uint64

	fmu    sync.Mutex
	faulty map[string]time.Time // broker -> avoid until

	qmu      sync.RWMutex // SendAsync enqueues under R; Close takes W
	bmu      sync.Mutex
	batchers map[string]*batcher
	closing  bool
	stopping chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewProducer returns a producer using c.
func (c *Client) NewProducer(cfg ProducerConfig) (*Producer, error) {
	switch {
	case cfg.Retries == 0:
		cfg.Retries = 2
	case cfg.Retries < 0:
		cfg.Retries = 0 // fail at the first error
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Group != "" {
		if err := wire.ValidName(cfg.Group, false); err != nil {
			return nil, fmt.Errorf("mq: producer group: %w", err)
		}
	}
	p := &Producer{c: c, cfg: cfg, faulty: map[string]time.Time{}, batchers: map[string]*batcher{}, stopping: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	if cfg.TxChecker != nil {
		if cfg.Group == "" {
			cancel()
			return nil, errors.New("mq: a transaction checker needs a producer group")
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.checkLoop(ctx) }()
	}
	return p, nil
}

// Close sends what SendAsync queued and stops the producer's background
// work (transaction checks).
func (p *Producer) Close() error {
	p.qmu.Lock()
	p.bmu.Lock()
	if !p.closing {
		p.closing = true
		close(p.stopping)
	}
	p.bmu.Unlock()
	p.qmu.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

// Send sends one message and waits for the broker's acknowledgement (under
// sync flush: on disk).
func (p *Producer) Send(ctx context.Context, m *Message) (*SendResult, error) {
	rs, err := p.SendBatch(ctx, []*Message{m})
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// SendBatch sends messages of one topic together, to one queue (chosen by
// the first message's ShardingKey, or round robin), in order.
func (p *Producer) SendBatch(ctx context.Context, ms []*Message) ([]*SendResult, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	topic := ms[0].Topic
	ctx, span := p.c.startSend(ctx, topic, len(ms))
	rs, err := p.sendBatch(ctx, topic, ms)
	endSend(span, rs, err)
	return rs, err
}

func (p *Producer) sendBatch(ctx context.Context, topic string, ms []*Message) ([]*SendResult, error) {
	now := time.Now().UnixMilli()
	req := &wire.SendRequest{Topic: topic, Msgs: make([]wire.Msg, len(ms)), AutoCreate: p.cfg.AutoCreate, Queues: p.cfg.Queues}
	for i, m := range ms {
		if m.Topic != topic {
			return nil, fmt.Errorf("mq: a batch is one topic's: %q and %q", topic, m.Topic)
		}
		w, err := m.wire(ctx, now)
		if err != nil {
			return nil, err
		}
		req.Msgs[i] = w
	}
	return p.send(ctx, req, ms[0].ShardingKey)
}

// SendAsync queues m and calls done with the outcome. Messages queued
// together for a topic travel in one batch per queue (natural batching:
// whatever is waiting when a batch leaves, up to 256 messages or 1 MiB,
// at most 4 batches in flight per topic), so throughput grows with load
// without a linger delay. Order across SendAsync calls is not kept: send
// ordered streams with Send.
func (p *Producer) SendAsync(ctx context.Context, m *Message, done func(*SendResult, error)) {
	ctx, span := p.c.startSend(ctx, m.Topic, 1)
	if span != nil {
		userDone := done
		done = func(r *SendResult, err error) {
			if r != nil {
				endSend(span, []*SendResult{r}, err)
			} else {
				endSend(span, nil, err)
			}
			userDone(r, err)
		}
	}
	w, err := m.wire(ctx, time.Now().UnixMilli())
	if err != nil {
		done(nil, err)
		return
	}
	// The read lock keeps Close from finishing the batchers between the
	// check and the enqueue.
	p.qmu.RLock()
	defer p.qmu.RUnlock()
	b := p.batcherFor(m.Topic)
	if b == nil {
		done(nil, errors.New("mq: producer closed"))
		return
	}
	select {
	case b.ch <- &pendingSend{ctx: ctx, w: w, key: m.ShardingKey, done: done}:
	case <-ctx.Done():
		done(nil, ctx.Err())
	}
}

type pendingSend struct {
	ctx  context.Context
	w    wire.Msg
	key  string
	done func(*SendResult, error)
}

type batcher struct {
	topic string
	ch    chan *pendingSend
}

const (
	asyncBatch    = 256
	asyncBytes    = 1 << 20
	asyncInFlight = 4
)

func (p *Producer) batcherFor(topic string) *batcher {
	p.bmu.Lock()
	defer p.bmu.Unlock()
	if p.closing {
		return nil
	}
	if b := p.batchers[topic]; b != nil {
		return b
	}
	b := &batcher{topic: topic, ch: make(chan *pendingSend, asyncBatch*asyncInFlight)}
	p.batchers[topic] = b
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.runBatcher(b) }()
	return b
}

// runBatcher sends what is queued for a topic until the producer closes,
// then what is left.
func (p *Producer) runBatcher(b *batcher) {
	sem := make(chan struct{}, asyncInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var first *pendingSend
		select {
		case first = <-b.ch:
		case <-p.stopping:
			for {
				select {
				case first = <-b.ch:
					p.flushAsync(b.topic, p.drain(b, first))
				default:
					return
				}
			}
		}
		batch := p.drain(b, first)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.flushAsync(b.topic, batch)
		}()
	}
}

func (p *Producer) drain(b *batcher, first *pendingSend) []*pendingSend {
	batch := []*pendingSend{first}
	size := len(first.w.Body)
	for len(batch) < asyncBatch && size < asyncBytes {
		select {
		case ps := <-b.ch:
			batch = append(batch, ps)
			size += len(ps.w.Body)
		default:
			return batch
		}
	}
	return batch
}

// flushAsync sends a batch: keyed messages grouped by their queue, the
// rest together to one queue.
func (p *Producer) flushAsync(topic string, batch []*pendingSend) {
	groups := map[string][]*pendingSend{}
	var order []string
	for _, ps := range batch {
		k := ps.key
		if k != "" {
			k = "k:" + strconv.FormatUint(uint64(keyHash(k)), 10)
		}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], ps)
	}
	for _, k := range order {
		g := groups[k]
		req := &wire.SendRequest{Topic: topic, Msgs: make([]wire.Msg, len(g)), AutoCreate: p.cfg.AutoCreate, Queues: p.cfg.Queues}
		for i, ps := range g {
			req.Msgs[i] = ps.w
		}
		rs, err := p.send(g[0].ctx, req, g[0].key)
		for i, ps := range g {
			if err != nil {
				ps.done(nil, err)
			} else {
				ps.done(rs[i], nil)
			}
		}
	}
}

func keyHash(k string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(k))
	return h.Sum32()
}

// SendOneway sends without waiting for the broker (no acknowledgement, no
// retry: the fastest, and may lose the message).
func (p *Producer) SendOneway(ctx context.Context, m *Message) (err error) {
	ctx, span := p.c.startSend(ctx, m.Topic, 1)
	defer func() { endSend(span, nil, err) }()
	w, err := m.wire(ctx, time.Now().UnixMilli())
	if err != nil {
		return err
	}
	r, err := p.c.route(ctx, m.Topic, false)
	if err != nil {
		return err
	}
	q, ok := p.pick(r, m.ShardingKey, nil)
	if !ok {
		return fmt.Errorf("mq: topic %q has no queues", m.Topic)
	}
	b, err := p.c.broker(ctx, q.Addr)
	if err != nil {
		return err
	}
	return b.Oneway(ctx, wire.MethodSend, &wire.SendRequest{Topic: m.Topic, Queue: int32(q.Queue), Msgs: []wire.Msg{w}})
}

func (p *Producer) send(ctx context.Context, req *wire.SendRequest, key string) ([]*SendResult, error) {
	var tried []string
	var lastErr error
	refresh := false
	for attempt := 0; attempt <= p.cfg.Retries; attempt++ {
		r, err := p.c.route(ctx, req.Topic, refresh)
		if err != nil {
			return nil, err
		}
		var q queueRef
		if len(r.queues) == 0 {
			if len(r.creator) == 0 || !p.cfg.AutoCreate {
				return nil, fmt.Errorf("mq: topic %q does not exist (create it with `tangram mq topic create`, or enable auto-create)", req.Topic)
			}
			c := r.creator[int(p.rr.Add(1))%len(r.creator)]
			q = queueRef{Broker: c.Broker, Addr: c.Addr, Role: c.Role}
			req.Queue = -1
		} else {
			var ok bool
			if q, ok = p.pick(r, key, tried); !ok {
				break
			}
			req.Queue = int32(q.Queue)
		}
		if q.Role == "slave" {
			return nil, fmt.Errorf("mq: topic %q: its broker %s is down (only its slave is up); sends wait for the master", req.Topic, q.Broker)
		}
		rep, err := p.sendTo(ctx, q, req)
		if err == nil {
			out := make([]*SendResult, len(rep.IDs))
			for i, id := range rep.IDs {
				qoff := rep.QueueOffset
				if qoff >= 0 {
					qoff += int64(i)
				}
				out[i] = &SendResult{ID: id, MsgID: req.Msgs[i].Props[wire.PropID], Broker: q.Broker, Queue: rep.Queue, QueueOffset: qoff}
			}
			if len(r.queues) == 0 {
				_, _ = p.c.route(ctx, req.Topic, true) // created: learn its route
			}
			return out, nil
		}
		lastErr = err
		if !retriable(err) || ctx.Err() != nil {
			return nil, err
		}
		p.markFaulty(q.Broker, err)
		tried = append(tried, q.Broker)
		refresh = true
		if key != "" {
			// An ordered stream stays on its queue: wait and try it again.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
			}
			tried = nil
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no broker left to try")
	}
	return nil, fmt.Errorf("mq: send to %q failed after %d attempts: %w", req.Topic, p.cfg.Retries+1, lastErr)
}

func (p *Producer) sendTo(ctx context.Context, q queueRef, req *wire.SendRequest) (*wire.SendReply, error) {
	b, err := p.c.broker(ctx, q.Addr)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rep, err := rpc.Call[wire.SendReply](ctx, b, wire.MethodSend, req, rpc.Timeout(p.cfg.Timeout))
	if err == nil && time.Since(start) > time.Second {
		p.markFaulty(q.Broker, fmt.Errorf("slow send: %v", time.Since(start)))
	}
	return rep, err
}

// markFaulty avoids a broker for a while (latency fault tolerance).
func (p *Producer) markFaulty(broker string, err error) {
	p.fmu.Lock()
	p.faulty[broker] = time.Now().Add(3 * time.Second)
	p.fmu.Unlock()
	p.c.log.Debug("mq: avoiding a broker", "broker", broker, "err", err)
}

// pick chooses a queue: by key (hash, stable while the topic's queues
// stay), else round robin over brokers not marked faulty and not tried.
func (p *Producer) pick(r *route, key string, tried []string) (queueRef, bool) {
	qs := r.queues
	if len(qs) == 0 {
		return queueRef{}, false
	}
	if key != "" {
		return qs[keyHash(key)%uint32(len(qs))], true
	}
	now := time.Now()
	start := int(p.rr.Add(1))
	p.fmu.Lock()
	defer p.fmu.Unlock()
	for pass := 0; pass < 2; pass++ {
		for i := range qs {
			q := qs[(start+i)%len(qs)]
			if containsStr(tried, q.Broker) && pass == 0 {
				continue
			}
			if until, bad := p.faulty[q.Broker]; bad && now.Before(until) && pass == 0 {
				continue
			}
			return q, true
		}
	}
	return qs[start%len(qs)], true
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
