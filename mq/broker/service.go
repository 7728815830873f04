package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/apirpc"
	"github.com/tangram-dev/tangram/internal/audit"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// newRPCServer builds the broker's RPC server: every method needs an API
// token, resolved by Config.Authenticate (cached for 10 s).
func (b *Broker) newRPCServer() (*rpc.Server, error) {
	cache := &tokenCache{m: map[string]cachedToken{}}
	authn := rpc.ServerAuth(func(ctx context.Context, token string) (context.Context, error) {
		p, err := cache.get(ctx, token, b.cfg.Authenticate)
		if err != nil {
			if errors.Is(err, auth.ErrUnauthenticated) {
				return nil, rpc.Errorf(rpc.Unauthenticated, "invalid or expired API token")
			}
			if rpc.CodeOf(err) == rpc.Unauthenticated {
				return nil, err
			}
			return nil, rpc.Errorf(rpc.Unavailable, "checking the token: %v", err)
		}
		return auth.WithPrincipal(ctx, p), nil
	})
	srv, err := rpc.NewServer(rpc.Config{
		Logger:       b.log.With("component", "broker-rpc"),
		MaxFrameSize: b.cfg.MaxBody*2 + 16<<20,
		Interceptors: []rpc.ServerInterceptor{authn},
		StreamInterceptors: []rpc.StreamServerInterceptor{func(ctx context.Context, info *rpc.CallInfo, next func(context.Context) error) error {
			_, err := authn(ctx, nil, info, func(ctx context.Context, _ any) (any, error) { return nil, next(ctx) })
			return err
		}},
	})
	if err != nil {
		return nil, err
	}
	return srv, errors.Join(
		rpc.Handle(srv, wire.MethodSend, b.handleSend),
		rpc.Handle(srv, wire.MethodPull, b.handlePull),
		rpc.Handle(srv, wire.MethodCommit, b.handleCommit),
		rpc.Handle(srv, wire.MethodOffsets, b.handleOffsets),
		rpc.Handle(srv, wire.MethodHeartbeat, b.handleHeartbeat),
		rpc.Handle(srv, wire.MethodUnregister, func(ctx context.Context, req *wire.HeartbeatRequest) (*wire.HeartbeatReply, error) {
			// Leaving needs what joining needed: read on the topics.
			if len(req.Topics) == 0 {
				req.Topics = []string{req.Group}
			}
			for _, t := range req.Topics {
				if err := authz(ctx, auth.PermRead, t); err != nil {
					return nil, err
				}
			}
			b.consumers.remove(req.Group, req.Client)
			return &wire.HeartbeatReply{Clients: b.consumers.clients(req.Group)}, nil
		}),
		rpc.Handle(srv, wire.MethodLock, b.handleLock),
		rpc.Handle(srv, wire.MethodUnlock, func(ctx context.Context, req *wire.LockRequest) (*wire.LockReply, error) {
			if err := authz(ctx, auth.PermRead, req.Topic); err != nil {
				return nil, err
			}
			b.consumers.unlock(req.Group, req.Client, req.Topic, req.Queues)
			return &wire.LockReply{}, nil
		}),
		rpc.Handle(srv, wire.MethodRetry, b.handleRetry),
		rpc.Handle(srv, wire.MethodEndTx, b.handleEndTx),
		rpc.HandleStream(srv, wire.MethodTxChecks, b.handleTxChecks),
		rpc.HandleStream(srv, wire.MethodReplicate, b.handleReplicate),
		rpc.Handle(srv, wire.MethodCreateTopic, func(ctx context.Context, req *wire.TopicConfig) (*wire.TopicConfig, error) {
			if err := authz(ctx, auth.PermEdit, req.Name); err != nil {
				return nil, err
			}
			if err := b.refuseOnSlave("creating a topic"); err != nil {
				return nil, err
			}
			t, err := b.CreateTopic(*req)
			if err == nil {
				b.audit(ctx, "mq.topic.create", "topic/"+req.Name, map[string]any{"queues": t.Queues, "order": t.Order, "broker": b.cfg.Name})
			}
			return t, rpcError(err)
		}),
		rpc.Handle(srv, wire.MethodDeleteTopic, func(ctx context.Context, req *wire.NameRequest) (*wire.NameRequest, error) {
			if err := authz(ctx, auth.PermAdmin, req.Name); err != nil {
				return nil, err
			}
			if err := b.refuseOnSlave("deleting a topic"); err != nil {
				return nil, err
			}
			if err := b.DeleteTopic(req.Name); err != nil {
				return nil, rpcError(err)
			}
			b.audit(ctx, "mq.topic.delete", "topic/"+req.Name, map[string]any{"broker": b.cfg.Name})
			return req, nil
		}),
		rpc.Handle(srv, wire.MethodTopics, func(ctx context.Context, req *wire.NameRequest) (*wire.TopicsReply, error) {
			if err := authz(ctx, auth.PermRead, ""); err != nil {
				return nil, err
			}
			return &wire.TopicsReply{Topics: b.Topics()}, nil
		}),
		rpc.Handle(srv, wire.MethodLookup, b.handleLookup),
		rpc.Handle(srv, wire.MethodGroups, func(ctx context.Context, req *wire.NameRequest) (*wire.GroupsReply, error) {
			if err := authz(ctx, auth.PermRead, ""); err != nil {
				return nil, err
			}
			return &wire.GroupsReply{Groups: b.Groups(req.Name), Producers: b.Producers(req.Name)}, nil
		}),
		rpc.Handle(srv, wire.MethodResetOffset, b.handleResetOffset),
	)
}

type cachedToken struct {
	p   *auth.Principal
	exp time.Time
}

type tokenCache struct {
	mu sync.Mutex
	m  map[string]cachedToken
}

func (c *tokenCache) get(ctx context.Context, tok string, fn func(context.Context, string) (*auth.Principal, error)) (*auth.Principal, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[tok]
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.p, nil
	}
	p, err := fn(ctx, tok)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) > 10000 {
		clear(c.m)
	}
	c.m[tok] = cachedToken{p, now.Add(10 * time.Second)}
	c.mu.Unlock()
	return p, nil
}

// topicApp is the permission scope of a topic: the topic itself, or for a
// retry or dead-letter topic the group's name.
func topicApp(topic string) string {
	for _, p := range []string{wire.RetryPrefix, wire.DLQPrefix} {
		if g, ok := strings.CutPrefix(topic, p); ok {
			return g
		}
	}
	return topic
}

// authz checks the caller holds perm on a topic (app scope = topic).
func authz(ctx context.Context, perm auth.Perm, topic string) error {
	return rpcError(auth.Check(ctx, perm, "", topicApp(topic), ""))
}

// rpcError maps broker errors to RPC codes: busy is ResourceExhausted
// (retriable), a closed store Unavailable.
func rpcError(err error) error {
	return apirpc.Error(err)
}

// --- send ---

func (b *Broker) handleSend(ctx context.Context, req *wire.SendRequest) (*wire.SendReply, error) {
	if err := req.Check(b.cfg.MaxBody); err != nil {
		return nil, rpcError(err)
	}
	if strings.HasPrefix(req.Topic, wire.DLQPrefix) || strings.HasPrefix(req.Topic, wire.RetryPrefix) {
		// Resending from a dead-letter queue goes through Retry or to the
		// original topic; a client writes system topics only by those.
		return nil, rpc.Errorf(rpc.InvalidArgument, "topic %q is a system topic: send to the original topic", req.Topic)
	}
	if err := authz(ctx, auth.PermEdit, req.Topic); err != nil {
		return nil, err
	}
	if err := b.refuseOnSlave("a send"); err != nil {
		return nil, err
	}
	rep, err := b.Send(req)
	return rep, rpcError(err)
}

// Send stores a batch (validated and authorized by the caller).
func (b *Broker) Send(req *wire.SendRequest) (*wire.SendReply, error) {
	t := b.topic(req.Topic)
	if t == nil {
		if !b.cfg.AutoCreate || !req.AutoCreate {
			return nil, fmt.Errorf("%w: topic %q does not exist on broker %s (create it, or enable auto-create)", ErrNotFound, req.Topic, b.cfg.Name)
		}
		var err error
		if t, err = b.CreateTopic(wire.TopicConfig{Name: req.Topic, Queues: req.Queues}); err != nil {
			return nil, err
		}
	}
	q := req.Queue
	if q < 0 {
		v, _ := b.rr.LoadOrStore(t.Name, new(atomic.Uint32))
		q = int32(v.(*atomic.Uint32).Add(1) % uint32(t.Queues))
	} else if int(q) >= t.Queues {
		return nil, fmt.Errorf("%w queue %d: topic %q has %d queues on broker %s", wire.ErrInvalid, q, t.Name, t.Queues, b.cfg.Name)
	}
	var bytes int64
	for i := range req.Msgs {
		bytes += int64(len(req.Msgs[i].Body)) + 64
	}
	if err := b.admit(bytes); err != nil {
		return nil, err
	}
	defer b.inflight.Add(-bytes)
	now := time.Now().UnixMilli()
	ms := make([]*store.Message, len(req.Msgs))
	for i := range req.Msgs {
		m := &req.Msgs[i]
		born := m.BornAt
		if born == 0 {
			born = now
		}
		sm := &store.Message{Topic: t.Name, QueueID: uint32(q), BornAt: born, Properties: m.Props, Body: m.Body}
		if err := b.divert(sm, now); err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		ms[i] = sm
	}
	start := time.Now()
	err := b.st.PutBatch(ms)
	b.observePut(start, len(ms), bytes)
	if err != nil {
		return nil, fmt.Errorf("broker: storing: %w", err)
	}
	if b.cfg.SyncReplicas {
		last := ms[len(ms)-1]
		if err := b.repl.wait(last.Offset+int64(last.Size), b.cfg.ReplicaTimeout); err != nil {
			return nil, err
		}
	}
	rep := &wire.SendReply{Queue: uint32(q), IDs: make([]string, len(ms))}
	for i, m := range ms {
		rep.IDs[i] = wire.FormatID(b.cfg.Name, m.Offset, m.Size)
	}
	rep.QueueOffset = ms[0].QueueOffset
	if ms[0].Topic != t.Name {
		rep.QueueOffset = -1 // delayed or half: not in the queue yet
	}
	return rep, nil
}

// admit applies back-pressure: too many bytes being stored, or a recent
// store call slower than BusyAfter (the disk or page cache is saturated).
func (b *Broker) admit(bytes int64) error {
	if n := b.inflight.Add(bytes); n > b.cfg.MaxInFlightBytes && n != bytes {
		b.inflight.Add(-bytes)
		b.metrics.busy.Add(1)
		return fmt.Errorf("%w: %d MiB being stored (limit %d MiB); retry shortly", ErrBusy, n>>20, b.cfg.MaxInFlightBytes>>20)
	}
	if s := b.putStart.Load(); s != 0 && time.Since(time.Unix(0, s)) < b.cfg.BusyAfter {
		b.inflight.Add(-bytes)
		b.metrics.busy.Add(1)
		return fmt.Errorf("%w: a store call took over %v (disk or page cache saturated); retry shortly", ErrBusy, b.cfg.BusyAfter)
	}
	return nil
}

func (b *Broker) observePut(start time.Time, n int, bytes int64) {
	d := time.Since(start)
	if d > b.cfg.BusyAfter {
		b.putStart.Store(time.Now().UnixNano()) // refuse sends for the next BusyAfter
		b.log.Warn("broker: slow store call", "took", d, "messages", n)
	}
	b.metrics.observePut(n, bytes, d)
}

// divert rewrites a delayed or transactional message to its system topic,
// remembering the destination.
func (b *Broker) divert(m *store.Message, now int64) error {
	p := m.Properties
	if p == nil {
		return nil
	}
	if p[wire.PropTx] == "true" {
		if p[wire.PropPGroup] == "" {
			return fmt.Errorf("%w: a transactional message needs a producer group (%s)", wire.ErrInvalid, wire.PropPGroup)
		}
		p[wire.PropRealTopic], p[wire.PropRealQueue] = m.Topic, strconv.FormatUint(uint64(m.QueueID), 10)
		m.Topic, m.QueueID = wire.TopicHalf, 0
		return nil
	}
	if v := p[wire.PropDeliverAt]; v != "" {
		at, err := strconv.ParseInt(v, 10, 64)
		if err != nil || at <= 0 {
			return fmt.Errorf("%w %s %q: want unix milliseconds", wire.ErrInvalid, wire.PropDeliverAt, v)
		}
		if at > now+int64(maxTimerDelay/time.Millisecond) {
			return fmt.Errorf("%w %s: at most %v ahead", wire.ErrInvalid, wire.PropDeliverAt, maxTimerDelay)
		}
		if at > now {
			p[wire.PropRealTopic], p[wire.PropRealQueue] = m.Topic, strconv.FormatUint(uint64(m.QueueID), 10)
			m.Topic, m.QueueID = wire.TopicTimer, 0
		}
		delete(p, wire.PropDelay)
		return nil
	}
	if v := p[wire.PropDelay]; v != "" {
		lvl, err := strconv.Atoi(v)
		if err != nil || lvl < 0 || lvl > len(b.cfg.DelayLevels) {
			return fmt.Errorf("%w %s %q: want a level 1–%d", wire.ErrInvalid, wire.PropDelay, v, len(b.cfg.DelayLevels))
		}
		if lvl > 0 {
			p[wire.PropRealTopic], p[wire.PropRealQueue] = m.Topic, strconv.FormatUint(uint64(m.QueueID), 10)
			m.Topic, m.QueueID = wire.TopicSchedule, uint32(lvl-1)
		}
	}
	return nil
}

// --- pull ---

func (b *Broker) handlePull(ctx context.Context, req *wire.PullRequest) (*wire.PullReply, error) {
	if err := req.Check(); err != nil {
		return nil, rpcError(err)
	}
	if err := authz(ctx, auth.PermRead, req.Topic); err != nil {
		return nil, err
	}
	rep, err := b.Pull(ctx, req)
	return rep, rpcError(err)
}

// Pull reads a queue, long-polling up to req.WaitMs when it is empty.
func (b *Broker) Pull(ctx context.Context, req *wire.PullRequest) (*wire.PullReply, error) {
	t := b.topic(req.Topic)
	if t == nil {
		if strings.HasPrefix(req.Topic, wire.RetryPrefix) {
			t = &wire.TopicConfig{Name: req.Topic, Queues: 1} // not created yet: nothing to retry
		} else {
			return nil, fmt.Errorf("%w: topic %q on broker %s", ErrNotFound, req.Topic, b.cfg.Name)
		}
	}
	if int(req.Queue) >= t.Queues {
		return nil, fmt.Errorf("%w queue %d: topic %q has %d queues on broker %s", wire.ErrInvalid, req.Queue, t.Name, t.Queues, b.cfg.Name)
	}
	if req.At > 0 {
		req.Offset = b.st.OffsetAt(t.Name, req.Queue, req.At)
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		changed := b.st.QueueChanged(t.Name, req.Queue)
		lo, hi := b.st.MinOffset(t.Name, req.Queue), b.st.MaxOffset(t.Name, req.Queue)
		rep := &wire.PullReply{Min: lo, Max: hi, Next: req.Offset}
		if req.Offset < lo || req.Offset > hi {
			rep.Next, rep.Moved = max(lo, min(hi, req.Offset)), true
			return rep, nil
		}
		ms, next, err := b.st.GetTags(t.Name, req.Queue, req.Offset, req.Max, req.Tags)
		if err != nil && len(ms) == 0 {
			return nil, fmt.Errorf("broker: reading %s/%d: %w", t.Name, req.Queue, err)
		}
		if len(ms) > 0 || next > req.Offset {
			rep.Next = next
			rep.Msgs = make([]wire.StoredMsg, len(ms))
			dlq := strings.HasPrefix(t.Name, wire.DLQPrefix)
			for i, m := range ms {
				rep.Msgs[i] = b.stored(m)
				if dlq {
					// A listing of dead letters shows which were resent.
					if at, ok := b.resent.get(rep.Msgs[i].ID); ok {
						p := make(map[string]string, len(m.Properties)+1)
						for k, v := range m.Properties {
							p[k] = v
						}
						p[wire.PropResentAt] = strconv.FormatInt(at, 10)
						rep.Msgs[i].Props = p
					}
				}
			}
			b.metrics.observePull(len(ms))
			return rep, nil
		}
		if req.WaitMs == 0 {
			return rep, nil
		}
		if timer == nil {
			timer = time.NewTimer(time.Duration(req.WaitMs) * time.Millisecond)
		}
		select {
		case <-changed:
		case <-timer.C:
			return rep, nil
		case <-ctx.Done():
			return rep, nil
		case <-b.stop:
			return rep, nil
		}
	}
}

func (b *Broker) stored(m *store.Message) wire.StoredMsg {
	return wire.StoredMsg{ID: wire.FormatID(b.cfg.Name, m.Offset, m.Size), Topic: m.Topic, Queue: m.QueueID,
		QueueOffset: m.QueueOffset, Props: m.Properties, Body: m.Body, BornAt: m.BornAt, StoredAt: m.StoredAt, Offset: m.Offset, Size: m.Size}
}

// --- offsets, membership, locks ---

func (b *Broker) handleCommit(ctx context.Context, req *wire.CommitRequest) (*wire.OffsetsReply, error) {
	if err := wire.ValidName(req.Group, false); err != nil {
		return nil, rpcError(err)
	}
	if len(req.Offsets) > 4*wire.MaxQueues {
		return nil, rpc.Errorf(rpc.InvalidArgument, "%d offsets in one commit (at most %d)", len(req.Offsets), 4*wire.MaxQueues)
	}
	for _, o := range req.Offsets {
		if err := wire.ValidTopic(o.Topic); err != nil {
			return nil, rpcError(err)
		}
		if o.Offset < 0 {
			return nil, rpc.Errorf(rpc.InvalidArgument, "offset %d of %s/%d", o.Offset, o.Topic, o.Queue)
		}
		if err := authz(ctx, auth.PermRead, o.Topic); err != nil {
			return nil, err
		}
	}
	b.offsets.commit(req.Group, req.Epoch, req.Offsets)
	return &wire.OffsetsReply{Epoch: b.offsets.groupEpoch(req.Group)}, nil
}

func (b *Broker) handleOffsets(ctx context.Context, req *wire.OffsetsRequest) (*wire.OffsetsReply, error) {
	if err := wire.ValidName(req.Group, false); err != nil {
		return nil, rpcError(err)
	}
	if err := wire.ValidTopic(req.Topic); err != nil {
		return nil, rpcError(err)
	}
	if err := authz(ctx, auth.PermRead, req.Topic); err != nil {
		return nil, err
	}
	n := 1
	if t := b.topic(req.Topic); t != nil {
		n = t.Queues
	}
	rep := &wire.OffsetsReply{Epoch: b.offsets.groupEpoch(req.Group)}
	for q := uint32(0); q < uint32(n); q++ {
		rep.Offsets = append(rep.Offsets, wire.QueueOffset{Topic: req.Topic, Queue: q, Offset: b.offsets.get(req.Group, req.Topic, q)})
		rep.Min = append(rep.Min, b.st.MinOffset(req.Topic, q))
		rep.Max = append(rep.Max, b.st.MaxOffset(req.Topic, q))
	}
	return rep, nil
}

func (b *Broker) handleHeartbeat(ctx context.Context, req *wire.HeartbeatRequest) (*wire.HeartbeatReply, error) {
	if err := wire.ValidName(req.Group, false); err != nil {
		return nil, rpcError(err)
	}
	if req.Client == "" || len(req.Client) > 256 || len(req.Topics) > 1024 {
		return nil, rpc.Errorf(rpc.InvalidArgument, "heartbeat: a client ID of 1–256 bytes and at most 1024 topics")
	}
	for _, t := range req.Topics {
		if err := authz(ctx, auth.PermRead, t); err != nil {
			return nil, err
		}
	}
	// The group's retry topic exists before its first failure, so its
	// consumers route it from the start (RocketMQ does the same).
	if !b.isSlave() {
		if err := b.ensureSystemTopic(wire.RetryTopic(req.Group)); err != nil {
			return nil, rpcError(err)
		}
	}
	b.consumers.attach(req.Client, rpc.ConnContext(ctx))
	peer := ""
	if ci := rpc.Info(ctx); ci != nil {
		peer = ci.Peer
	}
	return &wire.HeartbeatReply{Clients: b.consumers.beat(req.Group, req.Client, req.Topics, time.Now(), peer),
		Epoch: b.offsets.groupEpoch(req.Group)}, nil
}

func (b *Broker) handleLock(ctx context.Context, req *wire.LockRequest) (*wire.LockReply, error) {
	if err := wire.ValidName(req.Group, false); err != nil {
		return nil, rpcError(err)
	}
	if err := authz(ctx, auth.PermRead, req.Topic); err != nil {
		return nil, err
	}
	if req.Client == "" || len(req.Queues) > wire.MaxQueues {
		return nil, rpc.Errorf(rpc.InvalidArgument, "lock: a client ID and at most %d queues", wire.MaxQueues)
	}
	b.consumers.attach(req.Client, rpc.ConnContext(ctx))
	return &wire.LockReply{Queues: b.consumers.lock(req.Group, req.Client, req.Topic, req.Queues, time.Now())}, nil
}

// --- retry and dead letters ---

func (b *Broker) handleRetry(ctx context.Context, req *wire.RetryRequest) (*wire.RetryReply, error) {
	if err := b.refuseOnSlave("a retry"); err != nil {
		return nil, err
	}
	if err := wire.ValidName(req.Group, false); err != nil {
		return nil, rpcError(err)
	}
	name, off, size, err := wire.ParseID(req.ID)
	if err != nil {
		return nil, rpcError(err)
	}
	if name != b.cfg.Name {
		return nil, rpc.Errorf(rpc.InvalidArgument, "message %s is on broker %s, not %s", req.ID, name, b.cfg.Name)
	}
	m, err := b.st.ReadAt(off, size)
	if err != nil {
		return nil, rpc.Errorf(rpc.NotFound, "message %s: %v", req.ID, err)
	}
	if req.Resend {
		if m.Topic != wire.DLQTopic(req.Group) {
			return nil, rpc.Errorf(rpc.InvalidArgument, "message %s is in %q, not group %s's dead-letter topic", req.ID, m.Topic, req.Group)
		}
		if err := authz(ctx, auth.PermEdit, m.Topic); err != nil {
			return nil, err
		}
		if at, ok := b.resent.get(req.ID); ok && !req.Force {
			return nil, rpc.Errorf(rpc.AlreadyExists, "dead letter %s was resent at %s; resending it again delivers it twice (force to do it anyway)",
				req.ID, time.UnixMilli(at).UTC().Format(time.RFC3339))
		}
		topic, err := b.Resend(req.Group, m)
		if err == nil {
			b.resent.mark(req.ID, time.Now().UnixMilli())
			b.audit(ctx, "mq.dlq.resend", "group/"+req.Group, map[string]any{"id": req.ID, "to": topic})
		}
		return &wire.RetryReply{Topic: topic}, rpcError(err)
	}
	if err := authz(ctx, auth.PermRead, m.Topic); err != nil {
		return nil, err
	}
	maxRetry := req.MaxRetry
	if req.DLQ {
		maxRetry = -1
	}
	topic, err := b.Retry(req.Group, req.ID, m, maxRetry, req.DelayLevel)
	return &wire.RetryReply{Topic: topic}, rpcError(err)
}

// Retry sends a message a group failed to consume to its retry topic
// after a delay (level 3 + times reconsumed, unless given), or to its
// dead-letter topic once it was reconsumed maxRetry times (at once when
// maxRetry < 0).
func (b *Broker) Retry(group, id string, m *store.Message, maxRetry, level int) (string, error) {
	if maxRetry == 0 {
		maxRetry = wire.DefaultMaxRetry
	}
	if maxRetry < 0 {
		maxRetry = 0
	}
	props := make(map[string]string, len(m.Properties)+4)
	for k, v := range m.Properties {
		props[k] = v
	}
	times, _ := strconv.Atoi(props[wire.PropReconsume])
	if props[wire.PropOriginID] == "" {
		props[wire.PropOriginID] = id
	}
	origin := m.Topic // the topic it was first consumed from
	if strings.HasPrefix(m.Topic, wire.RetryPrefix) && props[wire.PropRealTopic] != "" {
		origin = props[wire.PropRealTopic]
	}
	props[wire.PropRealTopic] = origin
	delete(props, wire.PropDelay)
	delete(props, wire.PropDeliverAt)
	props[wire.PropReconsume] = strconv.Itoa(times + 1)
	nm := &store.Message{BornAt: m.BornAt, Properties: props, Body: m.Body}
	if times+1 > maxRetry {
		nm.Topic = wire.DLQTopic(group)
		if err := b.ensureSystemTopic(nm.Topic); err != nil {
			return "", err
		}
		b.metrics.dlq.Add(1)
	} else {
		rt := wire.RetryTopic(group)
		if err := b.ensureSystemTopic(rt); err != nil {
			return "", err
		}
		if level <= 0 {
			level = 3 + times
		}
		level = min(level, len(b.cfg.DelayLevels))
		props[wire.PropRealTopic], props[wire.PropRealQueue] = rt, "0"
		props[retryOrigin] = origin
		nm.Topic, nm.QueueID = wire.TopicSchedule, uint32(level-1)
		b.metrics.retried.Add(1)
	}
	if err := b.st.Put(nm); err != nil {
		return "", fmt.Errorf("broker: storing a retry: %w", err)
	}
	if nm.Topic == wire.TopicSchedule {
		return wire.RetryTopic(group), nil
	}
	return nm.Topic, nil
}

// Resend puts a dead letter into its group's retry topic, retry count reset.
func (b *Broker) Resend(group string, m *store.Message) (string, error) {
	rt := wire.RetryTopic(group)
	if err := b.ensureSystemTopic(rt); err != nil {
		return "", err
	}
	props := make(map[string]string, len(m.Properties))
	for k, v := range m.Properties {
		props[k] = v
	}
	delete(props, wire.PropReconsume)
	if err := b.st.Put(&store.Message{Topic: rt, BornAt: m.BornAt, Properties: props, Body: m.Body}); err != nil {
		return "", fmt.Errorf("broker: resending: %w", err)
	}
	return rt, nil
}

// retryOrigin keeps, on a message waiting to be retried, the topic it was
// consumed from.
const retryOrigin = "RETRY_FROM"

// --- admin ---

func (b *Broker) handleLookup(ctx context.Context, req *wire.LookupRequest) (*wire.LookupReply, error) {
	if req.Max <= 0 || req.Max > 64 {
		req.Max = 64
	}
	rep := &wire.LookupReply{}
	switch {
	case req.ID != "" && strings.Contains(req.ID, "@"):
		name, off, size, err := wire.ParseID(req.ID)
		if err != nil {
			return nil, rpcError(err)
		}
		if name != b.cfg.Name {
			return rep, nil
		}
		m, err := b.st.ReadAt(off, size)
		if err != nil {
			return nil, rpc.Errorf(rpc.NotFound, "message %s: %v", req.ID, err)
		}
		if err := authz(ctx, auth.PermRead, m.Topic); err != nil {
			return nil, err
		}
		rep.Msgs = append(rep.Msgs, b.stored(m))
	case req.Topic != "" && req.Key != "":
		if err := wire.ValidTopic(req.Topic); err != nil {
			return nil, rpcError(err)
		}
		if err := authz(ctx, auth.PermRead, req.Topic); err != nil {
			return nil, err
		}
		key := req.Key
		ms, err := b.st.Lookup(req.Topic, key, req.Max)
		if err != nil {
			return nil, rpcError(err)
		}
		for _, m := range ms {
			rep.Msgs = append(rep.Msgs, b.stored(m))
		}
	default:
		return nil, rpc.Errorf(rpc.InvalidArgument, "lookup: give a broker message ID (…@broker), or a topic and a key")
	}
	return rep, nil
}

// Groups reports consumer groups (all, or the one named): live clients,
// committed offsets, the queues' ends and the total lag.
func (b *Broker) Groups(only string) []wire.GroupStats {
	byGroup := map[string]*wire.GroupStats{}
	get := func(g string) *wire.GroupStats {
		s := byGroup[g]
		if s == nil {
			s = &wire.GroupStats{Group: g, Clients: b.consumers.clients(g), Conns: b.consumers.conns(g)}
			for i := range s.Conns {
				s.Conns[i].Broker = b.cfg.Name
			}
			byGroup[g] = s
		}
		return s
	}
	for _, o := range b.offsets.all() {
		if only != "" && o.Group != only {
			continue
		}
		s := get(o.Group)
		hi := b.st.MaxOffset(o.Topic, o.Queue)
		s.Offsets = append(s.Offsets, o.QueueOffset)
		s.Max = append(s.Max, hi)
		s.Lag += max(0, hi-o.Offset)
	}
	for _, g := range b.consumers.groupNames() {
		if only == "" || g == only {
			get(g)
		}
	}
	out := make([]wire.GroupStats, 0, len(byGroup))
	for _, s := range byGroup {
		out = append(out, *s)
	}
	sortGroups(out)
	return out
}

func (b *Broker) handleResetOffset(ctx context.Context, req *wire.ResetOffsetRequest) (*wire.OffsetsReply, error) {
	if err := wire.ValidName(req.Group, false); err != nil {
		return nil, rpcError(err)
	}
	if err := wire.ValidTopic(req.Topic); err != nil {
		return nil, rpcError(err)
	}
	if err := authz(ctx, auth.PermAdmin, req.Topic); err != nil {
		return nil, err
	}
	t := b.topic(req.Topic)
	if t == nil {
		return nil, rpc.Errorf(rpc.NotFound, "topic %q on broker %s", req.Topic, b.cfg.Name)
	}
	var offs []wire.QueueOffset
	for q := uint32(0); q < uint32(t.Queues); q++ {
		var o int64
		switch {
		case req.To == 0:
			o = b.st.MinOffset(t.Name, q)
		case req.To < 0:
			o = b.st.MaxOffset(t.Name, q)
		default:
			o = b.st.OffsetAt(t.Name, q, req.To)
		}
		offs = append(offs, wire.QueueOffset{Topic: t.Name, Queue: q, Offset: o})
	}
	e := b.offsets.reset(req.Group, offs)
	b.log.Info("broker: group offsets reset", "group", req.Group, "topic", t.Name, "to", req.To)
	b.audit(ctx, "mq.group.reset", "group/"+req.Group, map[string]any{"topic": t.Name, "to": req.To, "epoch": e, "broker": b.cfg.Name})
	return &wire.OffsetsReply{Epoch: e, Offsets: offs}, nil
}

// audit records an administrative change made by the call's principal.
func (b *Broker) audit(ctx context.Context, action, resource string, after any) {
	actor := ""
	if p := auth.FromContext(ctx); p != nil {
		actor = p.Name
	}
	e := auth.AuditRequest{Actor: actor, Action: action, Resource: resource, After: audit.Value(after), Remote: audit.Remote(ctx)}
	if b.cfg.Audit == nil {
		b.log.Info("broker: audit", "actor", e.Actor, "action", e.Action, "resource", e.Resource, "after", e.After)
		return
	}
	// The change is made; its record must not be lost to the call ending.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := b.cfg.Audit(actx, e); err != nil {
		b.log.Error("broker: recording an audit entry failed", "action", e.Action, "resource", e.Resource, "actor", e.Actor, "err", err)
	}
}
