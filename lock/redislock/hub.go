package redislock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// hub is a Client's one pub/sub connection: waiters join a lock's
// channel and are woken when a release is published on it.
type hub struct {
	c *Client

	mu      sync.Mutex
	ps      *redis.PubSub
	running bool
	closed  bool
	subs    map[string]*sub
}

type sub struct {
	waiters map[chan struct{}]struct{}
	ready   chan struct{} // closed when the server confirmed the subscription
}

// join subscribes wake to channel and returns once the server has
// confirmed the subscription (so a later publish is heard).
func (h *hub) join(ctx context.Context, channel string) (chan struct{}, error) {
	wake := make(chan struct{}, 1)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if h.ps == nil {
		h.ps = h.c.rdb.Subscribe(context.Background())
	}
	if !h.running {
		if !h.c.goFunc(h.dispatch) {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		h.running = true
	}
	s := h.subs[channel]
	first := s == nil
	if first {
		s = &sub{waiters: map[chan struct{}]struct{}{}, ready: make(chan struct{})}
		h.subs[channel] = s
	}
	s.waiters[wake] = struct{}{}
	ps := h.ps
	h.mu.Unlock()
	if first {
		if err := ps.Subscribe(ctx, channel); err != nil {
			h.leave(channel, wake)
			return nil, fmt.Errorf("redislock: subscribe %s: %w", channel, err)
		}
	}
	select {
	case <-s.ready:
		return wake, nil
	case <-ctx.Done():
		h.leave(channel, wake)
		return nil, fmt.Errorf("redislock: subscribe %s: %w", channel, context.Cause(ctx))
	}
}

// leave takes wake off channel, unsubscribing after the last waiter.
func (h *hub) leave(channel string, wake chan struct{}) {
	h.mu.Lock()
	s := h.subs[channel]
	if s == nil {
		h.mu.Unlock()
		return
	}
	delete(s.waiters, wake)
	last := len(s.waiters) == 0
	if last {
		delete(h.subs, channel)
	}
	ps, closed := h.ps, h.closed
	h.mu.Unlock()
	if last && !closed {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = ps.Unsubscribe(ctx, channel)
		cancel()
	}
}

// dispatch reads the pub/sub connection until the hub closes.
func (h *hub) dispatch() {
	h.mu.Lock()
	ps := h.ps
	h.mu.Unlock()
	for {
		msg, err := ps.Receive(context.Background())
		if err != nil {
			h.mu.Lock()
			closed := h.closed
			h.mu.Unlock()
			if closed {
				return
			}
			// go-redis reconnects and subscribes again on the next
			// Receive; waiters meanwhile retry every MaxWait.
			t := time.NewTimer(50 * time.Millisecond)
			<-t.C
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
				continue
			}
			h.mu.Lock()
			if s := h.subs[m.Channel]; s != nil {
				select {
				case <-s.ready:
				default:
					close(s.ready)
				}
			}
			h.mu.Unlock()
		case *redis.Message:
			h.mu.Lock()
			if s := h.subs[m.Channel]; s != nil {
				for w := range s.waiters {
					select {
					case w <- struct{}{}:
					default:
					}
				}
			}
			h.mu.Unlock()
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	ps := h.ps
	h.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}
