package server

import (
	"sync"

	"github.com/tangram-dev/tangram/kv/resp"
)

func pubsubCommands() []*cmdSpec {
	return []*cmdSpec{
		noKey("publish", 3, flagPubSubOK, cmdPublish),
		noKey("subscribe", -2, flagPubSubOK|flagNoMulti, func(x *ctx, a [][]byte) { subscribe(x, a[1:], false) }),
		noKey("psubscribe", -2, flagPubSubOK|flagNoMulti, func(x *ctx, a [][]byte) { subscribe(x, a[1:], true) }),
		noKey("unsubscribe", -1, flagPubSubOK|flagNoMulti, func(x *ctx, a [][]byte) { unsubscribe(x, a[1:], false) }),
		noKey("punsubscribe", -1, flagPubSubOK|flagNoMulti, func(x *ctx, a [][]byte) { unsubscribe(x, a[1:], true) }),
		noKey("pubsub", -2, flagPubSubOK, cmdPubSub),
	}
}

// pubsub is the channel table. Publishing copies the message into each
// subscriber's output queue; it never waits for a subscriber's socket.
type pubsub struct {
	mu       sync.Mutex
	channels map[string]map[*client]struct{}
	patterns map[string]map[*client]struct{}
}

func (p *pubsub) init() {
	p.channels = map[string]map[*client]struct{}{}
	p.patterns = map[string]map[*client]struct{}{}
}

func (p *pubsub) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.channels)
}

func subscribe(x *ctx, names [][]byte, pattern bool) {
	c := x.c
	c.goAsync()
	p := &x.s.pubsub
	var out []byte
	kind := "subscribe"
	if pattern {
		kind = "psubscribe"
	}
	p.mu.Lock()
	for _, n := range names {
		tab, mine := p.channels, &c.subs
		if pattern {
			tab, mine = p.patterns, &c.psubs
		}
		if *mine == nil {
			*mine = map[string]struct{}{}
		}
		k := string(n)
		(*mine)[k] = struct{}{}
		if tab[k] == nil {
			tab[k] = map[*client]struct{}{}
		}
		tab[k][c] = struct{}{}
		out = resp.AppendPush(out, 3, c.v3)
		out = resp.AppendBulkString(out, kind)
		out = resp.AppendBulk(out, n)
		out = resp.AppendInt(out, int64(len(c.subs)+len(c.psubs)))
	}
	p.mu.Unlock()
	// Through the output queue, so that no message can overtake the
	// confirmation.
	c.flush()
	c.push(out)
}

func unsubscribe(x *ctx, names [][]byte, pattern bool) {
	c := x.c
	p := &x.s.pubsub
	kind := "unsubscribe"
	if pattern {
		kind = "punsubscribe"
	}
	p.mu.Lock()
	mine, tab := c.subs, p.channels
	if pattern {
		mine, tab = c.psubs, p.patterns
	}
	if len(names) == 0 {
		for k := range mine {
			names = append(names, []byte(k))
		}
	}
	var out []byte
	for _, n := range names {
		k := string(n)
		delete(mine, k)
		if m := tab[k]; m != nil {
			delete(m, c)
			if len(m) == 0 {
				delete(tab, k)
			}
		}
		out = resp.AppendPush(out, 3, c.v3)
		out = resp.AppendBulkString(out, kind)
		out = resp.AppendBulk(out, n)
		out = resp.AppendInt(out, int64(len(c.subs)+len(c.psubs)))
	}
	if len(names) == 0 {
		out = resp.AppendPush(out, 3, c.v3)
		out = resp.AppendBulkString(out, kind)
		out = resp.AppendNull(out, c.v3)
		out = resp.AppendInt(out, int64(len(c.subs)+len(c.psubs)))
	}
	p.mu.Unlock()
	c.out = append(c.out, out...)
}

func (p *pubsub) unsubscribeAll(c *client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range c.subs {
		if m := p.channels[k]; m != nil {
			delete(m, c)
			if len(m) == 0 {
				delete(p.channels, k)
			}
		}
	}
	for k := range c.psubs {
		if m := p.patterns[k]; m != nil {
			delete(m, c)
			if len(m) == 0 {
				delete(p.patterns, k)
			}
		}
	}
	c.subs, c.psubs = nil, nil
}

func cmdPublish(x *ctx, a [][]byte) {
	p := &x.s.pubsub
	type target struct {
		c   *client
		pat string
	}
	var ts []target
	p.mu.Lock()
	for c := range p.channels[string(a[1])] {
		ts = append(ts, target{c: c})
	}
	for pat, m := range p.patterns {
		if globMatch([]byte(pat), a[1], false) {
			for c := range m {
				ts = append(ts, target{c: c, pat: pat})
			}
		}
	}
	p.mu.Unlock()
	for _, t := range ts {
		t.c.mu.Lock() // v3 is the subscriber's, changed by its HELLO
		v3 := t.c.v3
		t.c.mu.Unlock()
		var msg []byte
		if t.pat == "" {
			msg = resp.AppendPush(msg, 3, v3)
			msg = resp.AppendBulkString(msg, "message")
		} else {
			msg = resp.AppendPush(msg, 4, v3)
			msg = resp.AppendBulkString(msg, "pmessage")
			msg = resp.AppendBulkString(msg, t.pat)
		}
		msg = resp.AppendBulk(msg, a[1])
		msg = resp.AppendBulk(msg, a[2])
		t.c.push(msg)
	}
	x.int(int64(len(ts)))
}

func cmdPubSub(x *ctx, a [][]byte) {
	p := &x.s.pubsub
	switch lowerName(a[1]) {
	case "channels":
		p.mu.Lock()
		var out []string
		for k := range p.channels {
			if len(a) < 3 || globMatch(a[2], []byte(k), false) {
				out = append(out, k)
			}
		}
		p.mu.Unlock()
		x.array(len(out))
		for _, k := range out {
			x.bulkStr(k)
		}
	case "numsub":
		x.mapHdr(len(a) - 2)
		p.mu.Lock()
		for _, n := range a[2:] {
			x.bulk(n)
			x.int(int64(len(p.channels[string(n)])))
		}
		p.mu.Unlock()
	case "numpat":
		p.mu.Lock()
		n := len(p.patterns)
		p.mu.Unlock()
		x.int(int64(n))
	default:
		x.err("ERR unknown subcommand '" + clip(string(a[1]), 64) + "'. Try PUBSUB HELP.")
	}
}
