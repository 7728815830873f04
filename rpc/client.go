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
	// Through the interceptors like any call (tracing, metrics, the
	// caller's identity); they see resp nil and info.Oneway set.
	info := &CallInfo{Method: method, Oneway: true}
	if len(c.o.interceptors) == 0 {
		return c.invoke(ctx, info, req, nil, &co, FrameOneway)
	}
	return chainClient(c.o.interceptors, func(ctx context.Context, info *CallInfo, req, resp any) error {
		return c.invoke(ctx, info, req, nil, &co, FrameOneway)
	})(ctx, info, req, nil)
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
