package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/rpc/balance"
	"github.com/tangram-dev/tangram/rpc/codec"
)

// Client calls methods on a set of servers: it keeps a pool of multiplexed
// connections per endpoint, balances calls across healthy endpoints, retries
// what is safe to retry, and takes failing endpoints out of rotation until a
// probe reconnects. It is safe for concurrent use.
type Client struct {
	o        dialOptions
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	wgMu     sync.Mutex
	stopping bool

	mu        sync.Mutex
	endpoints map[string]*endpoint
	picker    atomic.Pointer[pickerBox]
	resolved  chan struct{}
	resolveMu sync.Once

	closed atomic.Bool
	budget atomic.Int64 // retry tokens × 1000
	late   atomic.Int64
}

type pickerBox struct{ p balance.Picker }

// Dial returns a client for target ("host:port[,host:port…]", or any string
// when WithResolver is given). Connections are made lazily, on first use; Dial
// waits only for the resolver's first list (bounded by ctx).
func Dial(ctx context.Context, target string, opts ...DialOption) (*Client, error) {
	o := defaultDialOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.resolver == nil {
		addrs, err := parseTarget(target)
		if err != nil {
			return nil, err
		}
		o.resolver = Static(addrs...)
	}
	if o.zone != "" {
		o.balancer = balance.Zone(o.zone, o.balancer)
	}
	if o.retry.MaxAttempts <= 0 {
		o.retry.MaxAttempts = 1
	}
	if o.hbTimeout <= o.hbInterval {
		return nil, fmt.Errorf("rpc: heartbeat timeout %v must exceed interval %v", o.hbTimeout, o.hbInterval)
	}
	if o.dialer == nil {
		d := &net.Dialer{Timeout: o.dialTimeout, KeepAlive: 30 * time.Second}
		o.dialer = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{o: o, ctx: cctx, cancel: cancel, endpoints: map[string]*endpoint{}, resolved: make(chan struct{})}
	c.budget.Store(int64(o.retry.BudgetMax) * 1000)
	watchErr := make(chan error, 1)
	c.goFunc(func() {
		err := o.resolver.Watch(cctx, c.update)
		if cctx.Err() == nil {
			if err == nil {
				err = errors.New("resolver stopped watching")
			}
			o.logger.Error("rpc: resolver stopped; the endpoint list no longer changes", "err", err)
		}
		watchErr <- err
	})
	c.goFunc(c.heartbeats)
	select {
	case <-c.resolved:
		return c, nil
	case err := <-watchErr:
		c.Close()
		return nil, fmt.Errorf("rpc: dial %q: resolver failed before its first list: %w", target, err)
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("rpc: dial %q: no endpoints from the resolver: %w", target, ctx.Err())
	}
}

// goFunc runs f on a goroutine the client owns (Close waits for it). It
// reports false, without running f, once the client is closing.
func (c *Client) goFunc(f func()) bool {
	c.wgMu.Lock()
	if c.stopping {
		c.wgMu.Unlock()
		return false
	}
	c.wg.Add(1)
	c.wgMu.Unlock()
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// update installs a new endpoint list from the resolver.
func (c *Client) update(addrs []Address) {
	c.mu.Lock()
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		seen[a.Addr] = true
		if ep, ok := c.endpoints[a.Addr]; ok {
			ep.setAddress(a)
			continue
		}
		c.endpoints[a.Addr] = newEndpoint(c, a)
	}
	for addr, ep := range c.endpoints {
		if !seen[addr] {
			delete(c.endpoints, addr)
			ep.remove()
		}
	}
	c.rebuildLocked()
	c.mu.Unlock()
	c.resolveMu.Do(func() { close(c.resolved) })
}

func (c *Client) rebuild() {
	c.mu.Lock()
	c.rebuildLocked()
	c.mu.Unlock()
}

func (c *Client) rebuildLocked() {
	var up []balance.Endpoint
	for _, ep := range c.endpoints {
		if !ep.down.Load() {
			up = append(up, ep)
		}
	}
	if len(up) == 0 {
		c.picker.Store(nil)
		return
	}
	c.picker.Store(&pickerBox{c.o.balancer.Build(up)})
}

// Endpoints lists the endpoints and whether each is in rotation.
func (c *Client) Endpoints() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for a, ep := range c.endpoints {
		out[a] = !ep.down.Load()
	}
	return out
}

// LateReplies counts replies that arrived after their call had given up.
func (c *Client) LateReplies() int64 { return c.late.Load() }

func (c *Client) heartbeats() {
	t := time.NewTicker(max(c.o.hbInterval/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			eps := make([]*endpoint, 0, len(c.endpoints))
			for _, ep := range c.endpoints {
				eps = append(eps, ep)
			}
			c.mu.Unlock()
			for _, ep := range eps {
				for _, cc := range ep.snapshot() {
					cc.heartbeat(now, c.o.hbInterval, c.o.hbTimeout)
				}
			}
		}
	}
}

// Close closes every connection (calls in flight fail with Canceled) and
// waits for the client's goroutines.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.wgMu.Lock()
	c.stopping = true
	c.wgMu.Unlock()
	c.cancel()
	c.mu.Lock()
	for _, ep := range c.endpoints {
		ep.remove()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

func (c *Client) pick(key string, tried []*endpoint) (*endpoint, error) {
	pb := c.picker.Load()
	if pb == nil {
		return nil, &Error{Code: Unavailable, Message: "no healthy endpoint", notSent: true, exhausted: true}
	}
	info := balance.Info{Key: key}
	if len(tried) > 0 {
		info.Exclude = func(e balance.Endpoint) bool {
			for _, t := range tried {
				if balance.Endpoint(t) == e {
					return true
				}
			}
			return false
		}
	}
	ep, ok := pb.p.Pick(info)
	if !ok {
		return nil, &Error{Code: Unavailable, Message: "no healthy endpoint left to try", notSent: true, exhausted: true}
	}
	return ep.(*endpoint), nil
}

func (c *Client) deposit() {
	if c.budget.Load() < int64(c.o.retry.BudgetMax)*1000 {
		c.budget.Add(int64(c.o.retry.BudgetRatio * 1000))
	}
}

func (c *Client) withdraw() bool {
	for {
		t := c.budget.Load()
		if t < 1000 {
			return false
		}
		if c.budget.CompareAndSwap(t, t-1000) {
			return true
		}
	}
}

// Invoke calls method ("Service/Method") with req and decodes the answer
// into resp (a pointer). Errors are *Error values with a Code.
func (c *Client) Invoke(ctx context.Context, method string, req, resp any, opts ...CallOption) error {
	var co callOptions
	if extra, _ := ctx.Value(callOptsKey{}).([]CallOption); extra != nil {
		opts = append(extra, opts...)
	}
	for _, o := range opts {
		o(&co)
	}
	info := &CallInfo{Method: method}
	if len(c.o.interceptors) == 0 {
		return c.invoke(ctx, info, req, resp, &co, FrameRequest)
	}
	return chainClient(c.o.interceptors, func(ctx context.Context, info *CallInfo, req, resp any) error {
		return c.invoke(ctx, info, req, resp, &co, FrameRequest)
	})(ctx, info, req, resp)
}

// rawCodec passes bytes through under another codec's wire ID: proxies
// forward bodies without decoding them.
type rawCodec struct{ id uint8 }

func (r rawCodec) ID() uint8    { return r.id }
func (r rawCodec) Name() string { return "raw" }
func (r rawCodec) Append(dst []byte, v any) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return append(dst, b...), nil
	case rawBody:
		return append(dst, b...), nil
	}
	return dst, fmt.Errorf("raw codec: %T is not []byte", v)
}
func (r rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}

// InvokeRaw calls method with a body already encoded in the codec with wire
// ID codecID and returns the answer's body undecoded — what a proxy needs.
// Metadata comes from ctx as for any call.
func (c *Client) InvokeRaw(ctx context.Context, method string, codecID uint8, body []byte, opts ...CallOption) ([]byte, error) {
	if codec.ByID(codecID) == nil {
		return nil, Errorf(InvalidArgument, "unknown codec id %d", codecID)
	}
	var out []byte
	err := c.Invoke(ctx, method, body, &out, append(opts, Codec(rawCodec{id: codecID}))...)
	return out, err
}

// Oneway sends a call without waiting for (or getting) an answer; the error
// says only whether it could be sent.
func (c *Client) Oneway(ctx context.Context, method string, req any, opts ...CallOption) error {
	var co callOptions
	if extra, _ := ctx.Value(callOptsKey{}).([]CallOption); extra != nil {
		opts = append(extra, opts...)
	}
	for _, o := range opts {
		o(&co)
	}
	return c.invoke(ctx, &CallInfo{Method: method}, req, nil, &co, FrameOneway)
}

func (c *Client) invoke(ctx context.Context, info *CallInfo, req, resp any, co *callOptions, typ uint8) error {
	if c.closed.Load() {
		return ErrClientClosed
	}
	svc, name, ok := strings.Cut(info.Method, "/")
	if !ok {
		return Errorf(InvalidArgument, "method name %q: want Service/Method", info.Method)
	}
	cd := co.codec
	if cd == nil {
		if cd = c.o.codec; cd == nil {
			cd = codec.For(req)
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	body, err := cd.Append((*bp)[:0], req)
	*bp = body
	if err != nil {
		return Errorf(InvalidArgument, "encoding the request of %s: %v", info.Method, err)
	}
	f := Frame{Type: typ, Service: svc, Method: name, Codec: cd.ID(), Body: body, Meta: c.metadata(ctx)}
	if c.o.compressAbove > 0 && len(body) > c.o.compressAbove {
		if z, err := compress(body); err == nil {
			f.Body, f.Flags = z, FlagCompressed
		}
	}
	if len(f.Body) > c.o.maxFrame-maxHeaderSection {
		// A frame past the peer's limit would cost the whole connection.
		return Errorf(ResourceExhausted, "request of %d bytes exceeds the %d-byte frame limit", len(f.Body), c.o.maxFrame)
	}
	if t := co.timeout; t > 0 || c.o.timeout > 0 {
		if t <= 0 {
			t = c.o.timeout
		}
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > t {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t)
			defer cancel()
		}
	}
	idem := co.idempotent || c.o.idempotent[info.Method]
	hedge := co.hedge
	if hedge == 0 && idem {
		hedge = c.o.hedge
	}
	c.deposit()
	var tried []*endpoint
	var last *Error
	for attempt := 1; ; attempt++ {
		var rf *Frame
		var err error
		if hedge > 0 && typ == FrameRequest {
			rf, err = c.hedged(ctx, info, &f, co.key, hedge, &tried)
		} else {
			var ep *endpoint
			if ep, err = c.pick(co.key, tried); err == nil {
				tried = append(tried, ep)
				info.Peer = ep.addr.Addr
				rf, err = c.roundTrip(ctx, ep, &f)
			}
		}
		if err == nil {
			if typ == FrameOneway {
				return nil
			}
			return decodeResponse(rf, resp, info.Method, cd)
		}
		e := toError(err)
		if last != nil && e.exhausted {
			return last // nowhere left to retry: report what the last attempt got
		}
		last = e
		retryable := e.notSent || (idem && e.Code == Unavailable)
		if !retryable || attempt >= c.o.retry.MaxAttempts || ctx.Err() != nil || !c.withdraw() {
			return e
		}
	}
}

// metadata is what a call carries: the client's static pairs under the
// context's.
func (c *Client) metadata(ctx context.Context) Metadata {
	md := Outgoing(ctx)
	if len(c.o.meta) == 0 {
		return md
	}
	out := make(Metadata, len(md)+len(c.o.meta))
	for k, v := range c.o.meta {
		out[k] = v
	}
	for k, v := range md {
		out[k] = v
	}
	return out
}

func decodeResponse(rf *Frame, resp any, method string, sent codec.Codec) error {
	if rf.Status != OK {
		return &Error{Code: rf.Status, Message: rf.Message}
	}
	if resp == nil {
		return nil
	}
	cd := sent
	if cd.ID() != rf.Codec {
		cd = codec.ByID(rf.Codec)
	}
	if cd == nil {
		return Errorf(Internal, "%s: response in unknown codec %d", method, rf.Codec)
	}
	body := rf.Body
	if rf.Flags&FlagCompressed != 0 {
		var err error
		if body, err = decompress(body, maxInflate); err != nil {
			return Errorf(Internal, "%s: %v", method, err)
		}
	}
	if err := cd.Unmarshal(body, resp); err != nil {
		return Errorf(Internal, "%s: response does not decode into %T: %v", method, resp, err)
	}
	return nil
}

// hedged runs the call on one endpoint and, if no answer comes within delay,
// on a second; the first success (or the last failure) is returned and the
// other attempt canceled.
func (c *Client) hedged(ctx context.Context, info *CallInfo, f *Frame, key string, delay time.Duration, tried *[]*endpoint) (*Frame, error) {
	type result struct {
		f   *Frame
		err error
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2)
	running := 0
	start := func() error {
		ep, err := c.pick(key, *tried)
		if err != nil {
			return err
		}
		*tried = append(*tried, ep)
		info.Peer = ep.addr.Addr
		fc := *f
		if !c.goFunc(func() {
			rf, err := c.roundTrip(hctx, ep, &fc)
			results <- result{rf, err}
		}) {
			return ErrClientClosed
		}
		running++
		return nil
	}
	if err := start(); err != nil {
		return nil, err
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var last error
	for running > 0 {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				cancel()
				for ; running > 0; running-- {
					<-results
				}
				return r.f, nil
			}
			last = r.err
			if e := toError(r.err); !e.notSent && e.Code != Unavailable {
				cancel()
				for ; running > 0; running-- {
					<-results
				}
				return nil, r.err
			}
		case <-timer.C:
			if c.withdraw() {
				_ = start() // no second endpoint: keep waiting on the first
			}
		}
	}
	return nil, last
}

// call is one pending unary call.
type call struct {
	done chan struct{}
	f    *Frame
	err  *Error
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// roundTrip sends f on a connection of ep and waits for the answer.
func (c *Client) roundTrip(ctx context.Context, ep *endpoint, f *Frame) (*Frame, error) {
	cc, err := ep.conn(ctx)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		if f.Timeout = time.Until(dl); f.Timeout <= 0 {
			return nil, ctxError(ctx)
		}
	}
	ep.outstanding.Add(1)
	start := time.Now()
	defer func() {
		ep.outstanding.Add(-1)
		ep.observe(time.Since(start))
	}()
	if f.Type == FrameOneway {
		if err := cc.send(f); err != nil {
			return nil, &Error{Code: Unavailable, Message: err.Error(), notSent: true}
		}
		return nil, nil
	}
	cl := callPool.Get().(*call)
	id := cc.nextID.Add(1)
	f.ID = id
	cc.mu.Lock()
	if cc.pending == nil {
		cc.mu.Unlock()
		callPool.Put(cl)
		return nil, &Error{Code: Unavailable, Message: "connection closed", notSent: true}
	}
	cc.pending[id] = cl
	cc.mu.Unlock()
	cc.active.Add(1)
	defer cc.active.Add(-1)
	if err := cc.send(f); err != nil {
		cc.mu.Lock()
		_, mine := cc.pending[id]
		delete(cc.pending, id)
		cc.mu.Unlock()
		if !mine {
			<-cl.done
		}
		cl.f, cl.err = nil, nil
		callPool.Put(cl)
		return nil, &Error{Code: Unavailable, Message: err.Error(), notSent: true}
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		cc.mu.Lock()
		_, mine := cc.pending[id]
		delete(cc.pending, id)
		cc.mu.Unlock()
		if mine {
			if f.Timeout == 0 || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// On a deadline the server's own timer (it got the deadline
				// with the request) cancels the handler; no frame needed.
				_ = cc.send(&Frame{Type: FrameCancel, ID: id})
			}
			cl.f, cl.err = nil, nil
			callPool.Put(cl)
			return nil, ctxError(ctx)
		}
		<-cl.done // the reader is delivering it right now
	}
	rf, cerr := cl.f, cl.err
	cl.f, cl.err = nil, nil
	callPool.Put(cl)
	if cerr != nil {
		// A connection lost mid-call counts as a very slow call, so
		// latency-aware balancers steer away until fresh calls succeed.
		ep.observe(time.Second)
		return nil, cerr
	}
	if rf.Status != OK && rf.Flags&FlagRefused != 0 {
		return nil, &Error{Code: rf.Status, Message: rf.Message, notSent: true}
	}
	return rf, nil
}

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

func (ep *endpoint) Addr() string           { return ep.addr.Addr }
func (ep *endpoint) Weight() int            { return ep.cur.Load().Weight }
func (ep *endpoint) Zone() string           { return ep.cur.Load().Zone }
func (ep *endpoint) Outstanding() int64     { return ep.outstanding.Load() }
func (ep *endpoint) Latency() time.Duration { return time.Duration(ep.ewma.Load()) }
func (ep *endpoint) setAddress(a Address)   { ep.cur.Store(&a) }
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

// clientConn is one connection of an endpoint.
type clientConn struct {
	*conn
	ep       *endpoint
	nextID   atomic.Uint64
	draining atomic.Bool
	goaway   atomic.Bool   // a GOAWAY arrived
	goawayID atomic.Uint64 // the last request ID it says the server accepted

	mu      sync.Mutex
	pending map[uint64]*call // nil once the connection is closed
	streams map[uint64]*stream
}

func (cc *clientConn) usable() bool { return !cc.draining.Load() && !cc.isClosed() }

// drain stops new calls on the connection and closes it after the last one.
func (cc *clientConn) drain() {
	cc.draining.Store(true)
	cc.mu.Lock()
	idle := len(cc.pending) == 0 && len(cc.streams) == 0
	cc.mu.Unlock()
	if idle {
		cc.close(&Error{Code: Unavailable, Message: "connection drained"})
	}
}

func (cc *clientConn) readLoop() {
	c := cc.ep.c
	var err error
	for {
		f := new(Frame)
		if err = cc.fr.read(f); err != nil {
			break
		}
		if cc.onRead(f) {
			continue
		}
		switch f.Type {
		case FrameResponse:
			cc.mu.Lock()
			cl := cc.pending[f.ID]
			delete(cc.pending, f.ID)
			idle := cc.draining.Load() && len(cc.pending) == 0 && len(cc.streams) == 0
			cc.mu.Unlock()
			if cl == nil {
				c.late.Add(1)
				if c.o.onLateReply != nil {
					c.o.onLateReply()
				}
			} else {
				cl.f = f
				cl.done <- struct{}{}
			}
			if idle {
				cc.close(&Error{Code: Unavailable, Message: "connection drained"})
			}
		case FrameStreamData, FrameStreamClose, FrameWindowUpdate:
			cc.mu.Lock()
			st := cc.streams[f.ID]
			if f.Type == FrameStreamClose {
				delete(cc.streams, f.ID)
			}
			cc.mu.Unlock()
			if st != nil {
				if perr := st.onFrame(f); perr != nil {
					err = perr
				} else if f.Type == FrameStreamClose {
					if st.stopCtx != nil {
						st.stopCtx()
					}
					st.cancel()
				}
			}
		case FrameGoAway:
			c.o.logger.Info("rpc: server going away", "addr", cc.ep.addr.Addr, "reason", f.Message)
			cc.goawayID.Store(f.ID)
			cc.goaway.Store(true)
			cc.drain()
		default:
			err = fmt.Errorf("unexpected frame type %d from a server", f.Type)
		}
		if err != nil {
			break
		}
	}
	if !cc.isClosed() && !errors.Is(err, net.ErrClosed) {
		c.o.logger.Debug("rpc: connection lost", "addr", cc.ep.addr.Addr, "err", err)
	}
	e := readErr(err)
	if cc.isClosed() && cc.closeErr != nil {
		e = toError(cc.closeErr)
	}
	cc.close(e)
	cc.mu.Lock()
	pending, streams := cc.pending, cc.streams
	cc.pending, cc.streams = nil, nil
	cc.mu.Unlock()
	last, refused := cc.goawayID.Load(), cc.goaway.Load()
	for id, cl := range pending {
		cl.err = e
		if refused && id > last {
			// The server said it accepted nothing after last: this call
			// never ran, so it may go elsewhere.
			cl.err = &Error{Code: e.Code, Message: e.Message + " (not started by the server)", notSent: true}
		}
		cl.done <- struct{}{}
	}
	for _, st := range streams {
		st.fail(e)
	}
}

// openStream picks an endpoint and opens a stream on it.
func (c *Client) openStream(ctx context.Context, info *CallInfo, cd codec.Codec, co *callOptions) (*stream, error) {
	if c.closed.Load() {
		return nil, ErrClientClosed
	}
	svc, name, ok := strings.Cut(info.Method, "/")
	if !ok {
		return nil, Errorf(InvalidArgument, "method name %q: want Service/Method", info.Method)
	}
	var tried []*endpoint
	for attempt := 1; ; attempt++ {
		ep, err := c.pick(co.key, tried)
		if err != nil {
			return nil, err
		}
		tried = append(tried, ep)
		info.Peer = ep.addr.Addr
		st, err := c.openOn(ctx, ep, svc, name, cd, co)
		if err == nil {
			return st, nil
		}
		if e := toError(err); !e.notSent || attempt >= c.o.retry.MaxAttempts || !c.withdraw() {
			return nil, e
		}
	}
}

func (c *Client) openOn(ctx context.Context, ep *endpoint, svc, name string, cd codec.Codec, co *callOptions) (*stream, error) {
	cc, err := ep.conn(ctx)
	if err != nil {
		return nil, err
	}
	id := cc.nextID.Add(1)
	st := newStream(id, cc.conn, cd, c.o.streamWindow, true)
	sctx, cancel := context.WithCancel(ctx)
	if co.timeout > 0 {
		sctx, cancel = context.WithTimeout(ctx, co.timeout)
	}
	st.ctx, st.cancel = sctx, cancel
	f := Frame{Type: FrameStreamOpen, ID: id, Service: svc, Method: name, Codec: cd.ID(), Meta: c.metadata(ctx)}
	if dl, ok := sctx.Deadline(); ok {
		if f.Timeout = time.Until(dl); f.Timeout <= 0 {
			cancel()
			return nil, ctxError(sctx)
		}
	}
	cc.mu.Lock()
	if cc.streams == nil {
		cc.mu.Unlock()
		cancel()
		return nil, &Error{Code: Unavailable, Message: "connection closed", notSent: true}
	}
	cc.streams[id] = st
	cc.mu.Unlock()
	st.stopCtx = context.AfterFunc(sctx, func() {
		cc.mu.Lock()
		_, open := cc.streams[id]
		delete(cc.streams, id)
		cc.mu.Unlock()
		if open {
			_ = cc.send(&Frame{Type: FrameCancel, ID: id})
			st.fail(ctxError(sctx))
		}
	})
	if err := cc.send(&f); err != nil {
		st.stopCtx()
		cc.mu.Lock()
		delete(cc.streams, id)
		cc.mu.Unlock()
		cancel()
		return nil, &Error{Code: Unavailable, Message: err.Error(), notSent: true}
	}
	return st, nil
}
