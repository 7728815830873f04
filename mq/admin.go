package mq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// TopicInfo is a topic across the brokers holding it.
type TopicInfo struct {
	Name     string        `json:"name"`
	Queues   int           `json:"queues"`
	Messages int64         `json:"messages"` // stored and not yet deleted by retention
	Brokers  []TopicBroker `json:"brokers"`
}

// TopicBroker is a topic's part on one broker.
type TopicBroker struct {
	Broker string  `json:"broker"`
	Addr   string  `json:"addr"`
	Queues int     `json:"queues"`
	Min    []int64 `json:"min"`
	Max    []int64 `json:"max"`
}

// GroupInfo is a consumer group across brokers.
type GroupInfo struct {
	Group   string   `json:"group"`
	Clients []string `json:"clients"`
	// Conns are the members' connections, per broker (address, last
	// heartbeat, subscriptions).
	Conns  []wire.ClientConn `json:"conns,omitempty"`
	Lag    int64             `json:"lag"`
	Queues []GroupQueue      `json:"queues"`
}

// GroupQueue is a group's position in one queue.
type GroupQueue struct {
	Topic  string `json:"topic"`
	Broker string `json:"broker"`
	Queue  uint32 `json:"queue"`
	Offset int64  `json:"offset"`
	Max    int64  `json:"max"`
	Lag    int64  `json:"lag"`
}

func (c *Client) masters(ctx context.Context, only []string) ([]wire.BrokerInfo, error) {
	bs, err := c.Brokers(ctx)
	if err != nil {
		return nil, err
	}
	var out []wire.BrokerInfo
	for _, b := range bs {
		if b.Role == "master" && (len(only) == 0 || slices.Contains(only, b.Name)) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		if len(only) > 0 {
			return nil, fmt.Errorf("mq: no registered broker named %s", strings.Join(only, ", "))
		}
		return nil, errors.New("mq: no broker is registered with the name service")
	}
	return out, nil
}

func (c *Client) eachBroker(ctx context.Context, only []string, f func(b wire.BrokerInfo, cl *rpc.Client) error) error {
	bs, err := c.masters(ctx, only)
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range bs {
		cl, err := c.broker(ctx, b.Addr)
		if err == nil {
			err = f(b, cl)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("broker %s: %w", b.Name, err))
		}
	}
	return errors.Join(errs...)
}

// CreateTopic creates a topic with queues queues on each named broker (all
// masters when none are named), or grows its queue count.
func (c *Client) CreateTopic(ctx context.Context, name string, queues int, order bool, brokers ...string) error {
	if err := wire.ValidName(name, false); err != nil {
		return fmt.Errorf("mq: topic %w", err)
	}
	if queues < 1 || queues > wire.MaxQueues {
		return fmt.Errorf("%w: topic %s: %d queues (want 1–%d)", wire.ErrInvalid, name, queues, wire.MaxQueues)
	}
	var made []string
	err := c.eachBroker(ctx, brokers, func(b wire.BrokerInfo, cl *rpc.Client) error {
		_, err := rpc.Call[wire.TopicConfig](ctx, cl, wire.MethodCreateTopic, &wire.TopicConfig{Name: name, Queues: queues, Order: order}, rpc.Idempotent())
		if err == nil {
			made = append(made, b.Name)
		}
		return err
	})
	// Brokers register the new topic with the name service on their own;
	// return once it routes, so a send right after finds it.
	for deadline := time.Now().Add(5 * time.Second); len(made) > 0 && time.Now().Before(deadline); {
		r, rerr := c.route(ctx, name, true)
		if rerr == nil && routesAll(r, made) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return err
}

func routesAll(r *route, brokers []string) bool {
	for _, b := range brokers {
		found := false
		for _, q := range r.queues {
			if q.Broker == b {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// DeleteTopic deletes a topic from every broker holding it.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	r, err := c.route(ctx, name, true)
	if err != nil {
		return err
	}
	if len(r.queues) == 0 {
		return fmt.Errorf("mq: topic %q does not exist", name)
	}
	var only []string
	for _, q := range r.queues {
		if !slices.Contains(only, q.Broker) {
			only = append(only, q.Broker)
		}
	}
	err = c.eachBroker(ctx, only, func(_ wire.BrokerInfo, cl *rpc.Client) error {
		_, err := rpc.Call[wire.NameRequest](ctx, cl, wire.MethodDeleteTopic, &wire.NameRequest{Name: name})
		return err
	})
	c.mu.Lock()
	delete(c.routes, name)
	c.mu.Unlock()
	return err
}

// Topics lists topics across brokers (system topics included when all).
func (c *Client) Topics(ctx context.Context, all bool) ([]TopicInfo, error) {
	byName := map[string]*TopicInfo{}
	err := c.eachBroker(ctx, nil, func(b wire.BrokerInfo, cl *rpc.Client) error {
		rep, err := rpc.Call[wire.TopicsReply](ctx, cl, wire.MethodTopics, &wire.NameRequest{}, rpc.Idempotent())
		if err != nil {
			return err
		}
		for _, t := range rep.Topics {
			if !all && strings.HasPrefix(t.Name, "%") {
				continue
			}
			ti := byName[t.Name]
			if ti == nil {
				ti = &TopicInfo{Name: t.Name}
				byName[t.Name] = ti
			}
			ti.Queues += t.Queues
			for i := range t.Max {
				ti.Messages += t.Max[i] - t.Min[i]
			}
			ti.Brokers = append(ti.Brokers, TopicBroker{Broker: b.Name, Addr: b.Addr, Queues: t.Queues, Min: t.Min, Max: t.Max})
		}
		return nil
	})
	out := make([]TopicInfo, 0, len(byName))
	for _, t := range byName {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b TopicInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// Producers lists, across brokers, the producers connected for
// transaction check-backs, by producer group (one when group is set).
func (c *Client) Producers(ctx context.Context, group string) ([]wire.ProducerConn, error) {
	var out []wire.ProducerConn
	err := c.eachBroker(ctx, nil, func(b wire.BrokerInfo, cl *rpc.Client) error {
		rep, err := rpc.Call[wire.GroupsReply](ctx, cl, wire.MethodGroups, &wire.NameRequest{Name: group}, rpc.Idempotent())
		if err != nil {
			return err
		}
		out = append(out, rep.Producers...)
		return nil
	})
	return out, err
}

// Groups reports consumer groups (one when group is set) across brokers.
func (c *Client) Groups(ctx context.Context, group string) ([]GroupInfo, error) {
	byName := map[string]*GroupInfo{}
	err := c.eachBroker(ctx, nil, func(b wire.BrokerInfo, cl *rpc.Client) error {
		rep, err := rpc.Call[wire.GroupsReply](ctx, cl, wire.MethodGroups, &wire.NameRequest{Name: group}, rpc.Idempotent())
		if err != nil {
			return err
		}
		for _, g := range rep.Groups {
			gi := byName[g.Group]
			if gi == nil {
				gi = &GroupInfo{Group: g.Group}
				byName[g.Group] = gi
			}
			gi.Conns = append(gi.Conns, g.Conns...)
			for _, cl := range g.Clients {
				if !slices.Contains(gi.Clients, cl) {
					gi.Clients = append(gi.Clients, cl)
				}
			}
			for i, o := range g.Offsets {
				lag := max(0, g.Max[i]-o.Offset)
				gi.Queues = append(gi.Queues, GroupQueue{Topic: o.Topic, Broker: b.Name, Queue: o.Queue, Offset: o.Offset, Max: g.Max[i], Lag: lag})
				gi.Lag += lag
			}
		}
		return nil
	})
	out := make([]GroupInfo, 0, len(byName))
	for _, g := range byName {
		slices.Sort(g.Clients)
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b GroupInfo) int { return strings.Compare(a.Group, b.Group) })
	return out, err
}

// ResetOffset moves a group's offsets on a topic, on every broker holding
// it: to a time (unix ms), 0 for the start, -1 for the end. The group's
// consumers notice at their next heartbeat and re-read from there.
func (c *Client) ResetOffset(ctx context.Context, group, topic string, to int64) error {
	r, err := c.route(ctx, topic, true)
	if err != nil {
		return err
	}
	var only []string
	for _, q := range r.queues {
		if !slices.Contains(only, q.Broker) {
			only = append(only, q.Broker)
		}
	}
	if len(only) == 0 {
		return fmt.Errorf("mq: topic %q does not exist", topic)
	}
	return c.eachBroker(ctx, only, func(_ wire.BrokerInfo, cl *rpc.Client) error {
		_, err := rpc.Call[wire.OffsetsReply](ctx, cl, wire.MethodResetOffset, &wire.ResetOffsetRequest{Group: group, Topic: topic, To: to})
		return err
	})
}

// Lookup finds messages by broker ID (…@broker), or in a topic by key.
func (c *Client) Lookup(ctx context.Context, topic, id, key string) ([]*Message, error) {
	req := &wire.LookupRequest{Topic: topic, ID: id, Key: key}
	var only []string
	if name, _, _, err := wire.ParseID(id); err == nil {
		only = []string{name}
	} else if topic == "" {
		return nil, fmt.Errorf("mq: lookup needs a broker message ID (…@broker), or a topic and a key")
	}
	var out []*Message
	err := c.eachBroker(ctx, only, func(b wire.BrokerInfo, cl *rpc.Client) error {
		rep, err := rpc.Call[wire.LookupReply](ctx, cl, wire.MethodLookup, req, rpc.Idempotent())
		if rpc.CodeOf(err) == rpc.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		for i := range rep.Msgs {
			out = append(out, fromStored(b.Name, &rep.Msgs[i]))
		}
		return nil
	})
	return out, err
}

// DeadLetters lists up to max messages of a group's dead-letter topic,
// from offset from of each broker's queue.
func (c *Client) DeadLetters(ctx context.Context, group string, from int64, max int) ([]*Message, error) {
	topic := wire.DLQTopic(group)
	var out []*Message
	err := c.eachBroker(ctx, nil, func(b wire.BrokerInfo, cl *rpc.Client) error {
		rep, err := rpc.Call[wire.PullReply](ctx, cl, wire.MethodPull, &wire.PullRequest{Group: group, Topic: topic, Offset: from, Max: max}, rpc.Idempotent())
		if rpc.CodeOf(err) == rpc.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		if rep.Moved {
			rep, err = rpc.Call[wire.PullReply](ctx, cl, wire.MethodPull, &wire.PullRequest{Group: group, Topic: topic, Offset: rep.Next, Max: max}, rpc.Idempotent())
			if err != nil {
				return err
			}
		}
		for i := range rep.Msgs {
			m := fromStored(b.Name, &rep.Msgs[i])
			if rt := rep.Msgs[i].Props[wire.PropRealTopic]; rt != "" {
				m.Topic = rt
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// Browse reads up to max messages of one queue of topic on one broker,
// from offset from, without consuming or committing anything (the
// console's message browser); next is the offset to read on from.
func (c *Client) Browse(ctx context.Context, topic, broker string, queue uint32, from int64, max int) (msgs []*Message, next int64, err error) {
	return c.browse(ctx, &wire.PullRequest{Topic: topic, Queue: queue, Offset: from, Max: max}, broker)
}

// BrowseAt is Browse from the first message stored at or after at.
func (c *Client) BrowseAt(ctx context.Context, topic, broker string, queue uint32, at time.Time, limit int) (msgs []*Message, next int64, err error) {
	return c.browse(ctx, &wire.PullRequest{Topic: topic, Queue: queue, At: max(at.UnixMilli(), 1), Max: limit}, broker)
}

func (c *Client) browse(ctx context.Context, req *wire.PullRequest, broker string) (msgs []*Message, next int64, err error) {
	if req.Max <= 0 || req.Max > 256 {
		req.Max = 50
	}
	req.Group = "console-browse"
	err = c.eachBroker(ctx, []string{broker}, func(b wire.BrokerInfo, cl *rpc.Client) error {
		rep, err := rpc.Call[wire.PullReply](ctx, cl, wire.MethodPull, req, rpc.Idempotent())
		if err != nil {
			return err
		}
		if rep.Moved { // from was below what is kept: start at the first kept
			req.Offset, req.At = rep.Next, 0
			if rep, err = rpc.Call[wire.PullReply](ctx, cl, wire.MethodPull, req, rpc.Idempotent()); err != nil {
				return err
			}
		}
		for i := range rep.Msgs {
			msgs = append(msgs, fromStored(b.Name, &rep.Msgs[i]))
		}
		next = rep.Next
		return nil
	})
	return msgs, next, err
}

// ResentAt is when a dead letter listed by DeadLetters was resent (zero:
// never).
func (m *Message) ResentAt() time.Time {
	ms, err := strconv.ParseInt(m.Props[wire.PropResentAt], 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Resend sends a dead letter (by broker ID) back to its group through the
// retry topic, with its retry count reset. One already resent is refused
// (AlreadyExists): see ResendAgain.
func (c *Client) Resend(ctx context.Context, group, id string) error {
	return c.resend(ctx, group, id, false)
}

// ResendAgain resends a dead letter that was resent already (Resend
// refuses it, AlreadyExists: it would be delivered twice).
func (c *Client) ResendAgain(ctx context.Context, group, id string) error {
	return c.resend(ctx, group, id, true)
}

func (c *Client) resend(ctx context.Context, group, id string, force bool) error {
	name, _, _, err := wire.ParseID(id)
	if err != nil {
		return err
	}
	return c.eachBroker(ctx, []string{name}, func(_ wire.BrokerInfo, cl *rpc.Client) error {
		_, err := rpc.Call[wire.RetryReply](ctx, cl, wire.MethodRetry, &wire.RetryRequest{Group: group, ID: id, Resend: true, Force: force})
		return err
	})
}
