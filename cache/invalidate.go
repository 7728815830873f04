package cache

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/kv/resp"
)

// channel is the pub/sub channel of InvalidatePubSub.
func (c *Cache[V]) channel() string { return c.prefix + "invalidate" }

// publish tells the other processes to drop key (pub/sub mode only:
// with tracking, the server tells them of every change itself).
func (c *Cache[V]) publish(ctx context.Context, key string) {
	if c.mode != InvalidatePubSub {
		return
	}
	if err := c.cfg.Remote.Publish(ctx, c.channel(), key).Err(); err != nil {
		c.log.Warn("cache: publishing an invalidation failed; other processes keep the key until their local TTL", "key", key, "err", err)
	}
}

// subscribe drops the keys published on the channel; when a lost
// subscription is back the whole local tier is dropped (messages may
// have been lost meanwhile).
func (c *Cache[V]) subscribe() {
	first := true
	for c.ctx.Err() == nil {
		ps := c.cfg.Remote.Subscribe(c.ctx, c.channel())
		// A blocked receive does not watch the context: closing does.
		stop := context.AfterFunc(c.ctx, func() { _ = ps.Close() })
		if _, err := ps.Receive(c.ctx); err != nil {
			stop()
			_ = ps.Close()
			if c.ctx.Err() != nil {
				return
			}
			c.log.Warn("cache: subscribing to invalidations failed; retrying", "channel", c.channel(), "err", err)
			c.pause(time.Second)
			continue
		}
		c.flushLocal()
		if first {
			close(c.ready)
			first = false
		}
		for {
			msg, err := ps.ReceiveMessage(c.ctx)
			if err != nil {
				break // go-redis would resubscribe, but what was published meanwhile is lost: start over
			}
			c.invalidate(msg.Payload)
		}
		stop()
		_ = ps.Close()
	}
}

func (c *Cache[V]) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
}

// track keeps a RESP3 connection with CLIENT TRACKING ON BCAST PREFIX
// <prefix>: the server pushes the keys of the prefix that change (or a
// null: everything) and they leave the local tier. Connected again after
// any error; the local tier is dropped when the connection is back, as
// pushes may have been lost meanwhile.
func (c *Cache[V]) track(opts *redis.Options) {
	first := true
	backoff := 100 * time.Millisecond
	for c.ctx.Err() == nil {
		err := c.trackOnce(opts, func() {
			c.flushLocal()
			backoff = 100 * time.Millisecond
			if first {
				close(c.ready)
				first = false
			}
		})
		if c.ctx.Err() != nil {
			return
		}
		// The local tier keeps serving (a remote restart does not empty
		// it); it is dropped once the connection is back, since changes
		// made meanwhile were not pushed.
		c.log.Warn("cache: the invalidation connection failed; reconnecting", "addr", opts.Addr, "err", err)
		c.pause(backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (c *Cache[V]) trackOnce(opts *redis.Options, subscribed func()) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	var conn net.Conn
	var err error
	if opts.TLSConfig != nil {
		conn, err = (&tls.Dialer{NetDialer: &d, Config: opts.TLSConfig}).DialContext(c.ctx, "tcp", opts.Addr)
	} else {
		conn, err = d.DialContext(c.ctx, "tcp", opts.Addr)
	}
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	stop := context.AfterFunc(c.ctx, func() { _ = conn.Close() })
	defer stop()
	defer conn.Close()
	rd := resp.NewReader(bufio.NewReaderSize(conn, 4096), 4096)
	rd.Limits = resp.Limits{MaxBulk: 1 << 20, MaxArgs: 1 << 16, MaxRequest: 64 << 20}
	call := func(args ...string) (resp.Value, error) {
		bs := make([][]byte, len(args))
		for i, a := range args {
			bs[i] = []byte(a)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(resp.AppendCommand(nil, bs...)); err != nil {
			return resp.Value{}, err
		}
		for {
			v, err := rd.ReadValue()
			if err != nil {
				return v, err
			}
			if v.Type == '>' { // a push before the reply
				c.push(v)
				continue
			}
			if v.Type == '-' {
				return v, fmt.Errorf("%s: %s", args[0], v.Str)
			}
			return v, nil
		}
	}
	hello := []string{"HELLO", "3"}
	if opts.Password != "" {
		user := opts.Username
		if user == "" {
			user = "default"
		}
		hello = append(hello, "AUTH", user, opts.Password)
	}
	if _, err := call(hello...); err != nil {
		return err
	}
	if opts.DB != 0 {
		if _, err := call("SELECT", fmt.Sprint(opts.DB)); err != nil {
			return err
		}
	}
	if _, err := call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", c.prefix); err != nil {
		return err
	}
	subscribed()
	idle := 0
	for {
		// Idle is normal; a PING every 30 s finds a dead peer.
		_ = conn.SetDeadline(time.Now().Add(45 * time.Second))
		v, err := rd.ReadValue()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && idle == 0 {
				idle++
				if _, err := conn.Write(resp.AppendCommand(nil, []byte("PING"))); err != nil {
					return err
				}
				continue
			}
			return err
		}
		idle = 0
		if v.Type == '>' {
			c.push(v)
		}
	}
}

// push handles an invalidation push: ["invalidate", [keys…] | null].
func (c *Cache[V]) push(v resp.Value) {
	if len(v.Elems) != 2 || !strings.EqualFold(string(v.Elems[0].Str), "invalidate") {
		return
	}
	if v.Elems[1].Null {
		c.flushLocal()
		return
	}
	for _, k := range v.Elems[1].Elems {
		if key, ok := strings.CutPrefix(string(k.Str), c.prefix); ok && !c.ownPush(key) {
			c.invalidate(key)
		}
	}
}
