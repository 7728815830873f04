package rpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
)

// endpoint is one server address with its connection pool and statistics.
type endpoint struct {
	c           *Client
	addr        Address                 // as first resolved; Addr never changes
	cur         atomic.Pointer[Address] // latest weight, zone and metadata
	outstanding atomic.Int64
	ewma        atomic.Int64 // ns
	down        atomic.Bool
	next        atomic.Uint32

	mu      sync.Mutex
	conns   []*clientConn
	removed bool
	probing bool
	filling bool
}

func newEndpoint(c *Client, a Address) *endpoint {
	ep := &endpoint{c: c, addr: a, conns: make([]*clientConn, c.o.conns)}
	ep.cur.Store(&a)
	return ep
}

func (ep *endpoint) Addr() string { return ep.addr.Addr }

func (ep *endpoint) Weight() int { return ep.cur.Load().Weight }

func (ep *endpoint) Zone() string { return ep.cur.Load().Zone }

func (ep *endpoint) Outstanding() int64 { return ep.outstanding.Load() }

func (ep *endpoint) Latency() time.Duration { return time.Duration(ep.ewma.Load()) }

func (ep *endpoint) setAddress(a Address) { ep.cur.Store(&a) }

func (ep *endpoint) observe(d time.Duration) {
	old := ep.ewma.Load()
	if old == 0 {
		ep.ewma.Store(int64(d))
		return
	}
	ep.ewma.Store(old + (int64(d)-old)/8)
}

func (ep *endpoint) snapshot() []*clientConn {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	var out []*clientConn
	for _, cc := range ep.conns {
		if cc != nil {
			out = append(out, cc)
		}
	}
	return out
}

// conn returns a usable connection, dialing lazily. A failed dial takes the
// endpoint out of rotation and starts a probe that brings it back.
func (ep *endpoint) conn(ctx context.Context) (*clientConn, error) {
	n := uint32(len(ep.conns))
	i := ep.next.Add(1) % n
	ep.mu.Lock()
	if cc := ep.conns[i]; cc != nil && cc.usable() {
		ep.mu.Unlock()
		return cc, nil
	}
	for _, cc := range ep.conns { // any live connection beats waiting for a dial
		if cc != nil && cc.usable() && n > 1 {
			if !ep.filling {
				ep.filling = true
				ep.c.goFunc(func() { ep.fill(i) })
			}
			ep.mu.Unlock()
			return cc, nil
		}
	}
	defer ep.mu.Unlock()
	if ep.removed {
		return nil, &Error{Code: Unavailable, Message: ep.addr.Addr + " was removed", notSent: true}
	}
	cc, err := ep.dialLocked(ctx)
	if err != nil {
		if ctxEnded(ctx) {
			// The caller's own deadline or cancellation cut the dial short:
			// that says nothing about the endpoint, which stays in rotation.
			e := ctxError(ctx)
			e.notSent = true
			return nil, e
		}
		ep.markDownLocked(err)
		return nil, &Error{Code: Unavailable, Message: "connect " + ep.addr.Addr + ": " + err.Error(), notSent: true}
	}
	ep.conns[i] = cc
	return cc, nil
}

// fill dials slot i in the background (pools of more than one connection).
func (ep *endpoint) fill(i uint32) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.filling = false
	if cc := ep.conns[i]; ep.removed || (cc != nil && cc.usable()) {
		return
	}
	if cc, err := ep.dialLocked(ep.c.ctx); err == nil {
		ep.conns[i] = cc
	}
}

func (ep *endpoint) dialLocked(ctx context.Context) (*clientConn, error) {
	dctx, cancel := context.WithTimeout(ctx, ep.c.o.dialTimeout)
	defer cancel()
	nc, err := ep.c.o.dialer(dctx, ep.addr.Addr)
	if err != nil {
		return nil, err
	}
	cc := &clientConn{conn: newConn(nc, ep.c.o.maxFrame), ep: ep, pending: map[uint64]*call{}, streams: map[uint64]*stream{}}
	ep.c.goFunc(cc.readLoop)
	return cc, nil
}

func (ep *endpoint) markDownLocked(err error) {
	if ep.down.Swap(true) {
		return
	}
	ep.c.o.logger.Warn("rpc: endpoint out of rotation", "addr", ep.addr.Addr, "err", err)
	ep.c.goFunc(ep.c.rebuild) // not here: c.mu is taken before ep.mu elsewhere
	if !ep.probing && !ep.removed {
		ep.probing = true
		ep.c.goFunc(ep.probe)
	}
}

// probe redials a down endpoint with exponential backoff and jitter until it
// answers, then puts it back in rotation.
func (ep *endpoint) probe() {
	bo := backoff.New(50*time.Millisecond, 5*time.Second)
	for {
		if !bo.Sleep(ep.c.ctx.Done()) {
			return
		}
		ep.mu.Lock()
		if ep.removed {
			ep.probing = false
			ep.mu.Unlock()
			return
		}
		cc, err := ep.dialLocked(ep.c.ctx)
		if err == nil {
			ep.conns[0] = cc
			ep.probing = false
			ep.down.Store(false)
			ep.mu.Unlock()
			ep.c.o.logger.Info("rpc: endpoint back in rotation", "addr", ep.addr.Addr)
			ep.c.rebuild()
			return
		}
		ep.mu.Unlock()
	}
}

// remove closes the endpoint's connections once their calls are done.
func (ep *endpoint) remove() {
	ep.mu.Lock()
	ep.removed = true
	conns := ep.conns
	ep.mu.Unlock()
	for _, cc := range conns {
		if cc == nil {
			continue
		}
		if ep.c.closed.Load() {
			cc.close(ErrClientClosed)
		} else {
			cc.drain()
		}
	}
}
