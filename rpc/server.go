package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/rpc/codec"
)

// Config configures a Server. The zero value works; DefaultConfig fills in
// the documented defaults.
type Config struct {
	// Logger receives connection errors, recovered panics and shutdown
	// progress. Default: slog.Default().
	Logger *slog.Logger
	// MaxFrameSize bounds a received frame (header section plus body),
	// checked before allocation. Default 16 MiB.
	MaxFrameSize int
	// MaxInFlight bounds the calls and streams running at once across all
	// connections; calls above it are refused with ResourceExhausted.
	// Default 10000; negative means no limit.
	MaxInFlight int
	// HeartbeatInterval is how long a connection may be silent before the
	// server pings it; HeartbeatTimeout how long before it is closed.
	// Defaults 5 s and 15 s.
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	// CompressAbove compresses response bodies larger than this many bytes
	// when the caller compressed its request. 0 means 4096.
	CompressAbove int
	// StreamWindow is the flow-control window of a stream in bytes: how much
	// a sender may have unread at the receiver. Default 256 KiB.
	StreamWindow int
	// Interceptors wrap every unary call, first one outermost.
	Interceptors []ServerInterceptor
	// StreamInterceptors wrap every stream handler.
	StreamInterceptors []StreamServerInterceptor
	// MaxConns bounds the connections open at once; a connection beyond it
	// is closed as soon as it is accepted (counted in RefusedConns).
	// Default 10000; negative means no limit.
	MaxConns int
	// Fallback, when set, answers unary calls to methods nobody registered,
	// with the request body undecoded (a proxy forwards it as it is). The
	// answer is sent in the request's codec.
	Fallback RawHandler
}

// RawHandler handles a call without decoding it: method is
// "Service/Method", codecID the body's codec. Incoming(ctx) has the caller's
// metadata.
type RawHandler func(ctx context.Context, method string, codecID uint8, body []byte) ([]byte, error)

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Logger:            slog.Default(),
		MaxFrameSize:      DefaultMaxFrameSize,
		MaxInFlight:       10000,
		MaxConns:          10000,
		HeartbeatInterval: 5 * time.Second,
		HeartbeatTimeout:  15 * time.Second,
		CompressAbove:     4096,
		StreamWindow:      256 << 10,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = d.MaxFrameSize
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = d.HeartbeatTimeout
	}
	if c.CompressAbove == 0 {
		c.CompressAbove = d.CompressAbove
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = d.StreamWindow
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.MaxFrameSize < 0 || c.MaxFrameSize > 1<<30:
		return fmt.Errorf("rpc: MaxFrameSize %d out of range (0 to 1 GiB)", c.MaxFrameSize)
	case c.HeartbeatInterval < 0 || c.HeartbeatTimeout < 0:
		return errors.New("rpc: negative heartbeat interval or timeout")
	case c.HeartbeatTimeout != 0 && c.HeartbeatInterval != 0 && c.HeartbeatTimeout <= c.HeartbeatInterval:
		return fmt.Errorf("rpc: HeartbeatTimeout %v must exceed HeartbeatInterval %v", c.HeartbeatTimeout, c.HeartbeatInterval)
	case c.StreamWindow < 0:
		return errors.New("rpc: negative StreamWindow")
	}
	return nil
}

// method is one registered handler.
type method struct {
	full   string
	newReq func() any
	call   UnaryHandler                                // unary
	stream func(ctx context.Context, st *stream) error // streaming
	limit  int64
	active atomic.Int64
	raw    bool // served by Config.Fallback
}

// MethodOption configures one registered method.
type MethodOption func(*method)

// MaxConcurrency limits how many calls of the method run at once; calls above
// it are refused with ResourceExhausted.
func MaxConcurrency(n int) MethodOption { return func(m *method) { m.limit = int64(n) } }

// Server dispatches calls to registered handlers. Register handlers before
// Serve; registering later is safe but the new methods answer NotFound until
// registered.
type Server struct {
	cfg Config
	log *slog.Logger

	mu        sync.RWMutex
	services  map[string]map[string]*method
	fallbacks map[string]*method // per-method limits and counters of Fallback calls
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}

	inflight atomic.Int64
	draining atomic.Bool
	badConns atomic.Int64 // connections closed for protocol errors
	refused  atomic.Int64 // connections refused over MaxConns
	warns    sampler      // bounds the log lines bad connections cause
	closed   atomic.Bool

	wg       sync.WaitGroup // readers, handlers, heartbeat
	handlers sync.WaitGroup // calls and streams only
	stop     chan struct{}
	hbOnce   sync.Once
	workers  *workerPool
}

// NewServer returns a server configured by cfg.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	s := &Server{
		cfg: cfg, log: cfg.Logger,
		services:  map[string]map[string]*method{},
		fallbacks: map[string]*method{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*serverConn]struct{}{},
		stop:      make(chan struct{}),
	}
	s.workers = newWorkerPool(s.stop, &s.wg)
	return s, nil
}

func (s *Server) add(full string, m *method, opts []MethodOption) error {
	svc, name, ok := strings.Cut(full, "/")
	if !ok || svc == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("rpc: method name %q: want Service/Method", full)
	}
	m.full = full
	for _, o := range opts {
		o(m)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.services[svc]
	if ms == nil {
		ms = map[string]*method{}
		s.services[svc] = ms
	}
	if _, dup := ms[name]; dup {
		return fmt.Errorf("rpc: method %s registered twice", full)
	}
	ms[name] = m
	return nil
}

// Handle registers fn as the handler of the unary method name
// ("Service/Method"). No reflection is involved when a call runs.
func Handle[Req, Resp any](s *Server, name string, fn func(ctx context.Context, req *Req) (*Resp, error), opts ...MethodOption) error {
	return s.add(name, &method{
		newReq: func() any { return new(Req) },
		call: func(ctx context.Context, req any) (any, error) {
			r, err := fn(ctx, req.(*Req))
			if r == nil {
				return nil, err
			}
			return r, err
		},
	}, opts)
}

// ServerStream is the server's side of a stream: it receives Req messages
// and sends Resp messages.
type ServerStream[Req, Resp any] struct{ st *stream }

// Context is the stream's context: canceled when the client cancels, the
// deadline passes or the connection is lost.
func (s *ServerStream[Req, Resp]) Context() context.Context { return s.st.ctx }

// Recv returns the next message, or io.EOF after the client closed its side.
func (s *ServerStream[Req, Resp]) Recv() (*Req, error) {
	r := new(Req)
	if err := s.st.recv(r); err != nil {
		return nil, err
	}
	return r, nil
}

// Send sends a message, waiting while the client's window is full.
func (s *ServerStream[Req, Resp]) Send(m *Resp) error { return s.st.send(m) }

// TrySend sends a message if the client's window has room and reports
// whether it did; it never waits (a fan-out loop serving many streams must
// not stall on one slow reader).
func (s *ServerStream[Req, Resp]) TrySend(m *Resp) (bool, error) { return s.st.sendMsg(m, false) }

// TrySendBatch is TrySend with the write held back until b.Flush.
func (s *ServerStream[Req, Resp]) TrySendBatch(b *SendBatch, m *Resp) (bool, error) {
	b.add(s.st.c)
	return s.st.sendMsg(m, false)
}

// SetTrailer sets metadata sent with the stream's final status.
func (s *ServerStream[Req, Resp]) SetTrailer(md Metadata) { s.st.trailer = md }

// HandleStream registers fn as the handler of the streaming method name. The
// stream ends when fn returns: with the status of its error.
func HandleStream[Req, Resp any](s *Server, name string, fn func(ss *ServerStream[Req, Resp]) error, opts ...MethodOption) error {
	return s.add(name, &method{
		stream: func(ctx context.Context, st *stream) error {
			st.ctx = ctx
			return fn(&ServerStream[Req, Resp]{st: st})
		},
	}, opts)
}

var (
	ctxType = reflect.TypeFor[context.Context]()
	errType = reflect.TypeFor[error]()
)

// Register registers every exported method of impl shaped like
//
//	func (T) Name(ctx context.Context, req *Req) (*Resp, error)
//
// as "service/Name", found and called by reflection (dispatch by
// name). Methods of other shapes are skipped; an impl with none is an error.
func (s *Server) Register(service string, impl any, opts ...MethodOption) error {
	v := reflect.ValueOf(impl)
	t := v.Type()
	n := 0
	for i := 0; i < t.NumMethod(); i++ {
		mt := t.Method(i)
		ft := mt.Type // includes the receiver
		if ft.NumIn() != 3 || ft.NumOut() != 2 || ft.In(1) != ctxType || ft.Out(1) != errType ||
			ft.In(2).Kind() != reflect.Pointer || ft.Out(0).Kind() != reflect.Pointer {
			s.log.Debug("rpc: method skipped by Register: not func(ctx, *Req) (*Resp, error)", "service", service, "method", mt.Name)
			continue
		}
		fn := v.Method(i)
		reqType := ft.In(2).Elem()
		err := s.add(service+"/"+mt.Name, &method{
			newReq: func() any { return reflect.New(reqType).Interface() },
			call: func(ctx context.Context, req any) (any, error) {
				out := fn.Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(req)})
				var err error
				if e := out[1].Interface(); e != nil {
					err = e.(error)
				}
				if out[0].IsNil() {
					return nil, err
				}
				return out[0].Interface(), err
			},
		}, opts)
		if err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("rpc: %T has no method of the form func(ctx context.Context, req *Req) (*Resp, error)", impl)
	}
	return nil
}

// Methods lists the registered "Service/Method" names.
func (s *Server) Methods() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for _, ms := range s.services {
		for _, m := range ms {
			out = append(out, m.full)
		}
	}
	return out
}

func (s *Server) lookup(svc, name string) *method {
	s.mu.RLock()
	m := s.services[svc][name]
	s.mu.RUnlock()
	return m
}

// Serve accepts connections on ln until Shutdown or Close, and then returns
// ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed.Load() || s.draining.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	s.hbOnce.Do(func() { s.goFunc(s.heartbeats) })
	bo := backoff.New(5*time.Millisecond, time.Second)
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closed.Load() || s.draining.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.log.Warn("rpc: accept failed; retrying", "err", err, "delay", bo.Current())
				bo.Sleep(nil) // accept errors are transient (EMFILE): wait them out
				continue
			}
			return fmt.Errorf("rpc: accept: %w", err)
		}
		bo.Reset()
		s.serveConn(nc)
	}
}

func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *Server) heartbeats() {
	t := time.NewTicker(max(s.cfg.HeartbeatInterval/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.RLock()
			for sc := range s.conns {
				sc.heartbeat(now, s.cfg.HeartbeatInterval, s.cfg.HeartbeatTimeout)
			}
			s.mu.RUnlock()
		}
	}
}

// badConn notes a connection closed for a protocol error. Anyone can open
// such connections without a token, so they are counted (BadConns) and
// logged at most about once a second, with the number left unlogged.
func (s *Server) badConn(sc *serverConn, reason error) {
	s.badConns.Add(1)
	if n, ok := s.warns.allow(); ok {
		s.log.Warn("rpc: closing connection", "peer", sc.peer, "reason", reason, "suppressed", n)
	}
}

// BadConns counts the connections closed for protocol errors (garbage,
// oversized frames, frames out of place).
func (s *Server) BadConns() int64 { return s.badConns.Load() }

// RefusedConns counts the connections refused over Config.MaxConns.
func (s *Server) RefusedConns() int64 { return s.refused.Load() }

// sampler lets through a burst of 10 events, then one a second; it counts
// what it holds back and hands the count to the next event it lets
// through.
type sampler struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int64
}

func (m *sampler) allow() (suppressed int64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.last.IsZero() {
		m.tokens = 10
	} else {
		m.tokens = min(10, m.tokens+now.Sub(m.last).Seconds())
	}
	m.last = now
	if m.tokens < 1 {
		m.suppressed++
		return 0, false
	}
	m.tokens--
	n := m.suppressed
	m.suppressed = 0
	return n, true
}

// serverConn is one accepted connection.
type serverConn struct {
	*conn
	s      *Server
	peer   string
	ctx    context.Context
	cancel context.CancelFunc
	lastID atomic.Uint64

	mu      sync.Mutex
	calls   map[uint64]context.CancelFunc
	streams map[uint64]*stream
}

func (s *Server) serveConn(nc net.Conn) {
	base, cancel := context.WithCancel(context.Background())
	ctx := context.WithValue(base, connKey{}, base)
	sc := &serverConn{
		conn: newConn(nc, s.cfg.MaxFrameSize), s: s, peer: nc.RemoteAddr().String(),
		ctx: ctx, cancel: cancel,
		calls: map[uint64]context.CancelFunc{}, streams: map[uint64]*stream{},
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		cancel()
		nc.Close()
		return
	}
	if s.cfg.MaxConns > 0 && len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		s.refused.Add(1)
		if n, ok := s.warns.allow(); ok {
			s.log.Warn("rpc: connection refused: at the connection limit", "peer", sc.peer, "max_conns", s.cfg.MaxConns, "suppressed", n)
		}
		cancel()
		nc.Close()
		return
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	s.goFunc(sc.readLoop)
}

func (sc *serverConn) readLoop() {
	s := sc.s
	defer func() {
		sc.cancel()
		sc.mu.Lock()
		for _, st := range sc.streams {
			st.fail(&Error{Code: Canceled, Message: "connection closed"})
		}
		sc.mu.Unlock()
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
	}()
	for {
		f := new(Frame)
		if err := sc.fr.read(f); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !sc.isClosed() {
				s.badConn(sc, err)
			}
			sc.close(readErr(err))
			return
		}
		if sc.onRead(f) {
			continue
		}
		switch f.Type {
		case FrameRequest, FrameOneway:
			sc.lastID.Store(f.ID)
			sc.dispatch(f)
		case FrameStreamOpen:
			sc.lastID.Store(f.ID)
			sc.openStream(f)
		case FrameStreamData, FrameStreamClose, FrameWindowUpdate:
			sc.mu.Lock()
			st := sc.streams[f.ID]
			sc.mu.Unlock()
			if st != nil {
				if err := st.onFrame(f); err != nil {
					s.badConn(sc, err)
					sc.close(&Error{Code: Internal, Message: err.Error()})
					return
				}
			}
		case FrameCancel:
			sc.mu.Lock()
			if cancel := sc.calls[f.ID]; cancel != nil {
				cancel()
			}
			if st := sc.streams[f.ID]; st != nil {
				st.fail(&Error{Code: Canceled, Message: "canceled by the client"})
			}
			sc.mu.Unlock()
		case FrameGoAway:
			// The client is leaving; its calls in flight still complete.
		default:
			s.badConn(sc, fmt.Errorf("unexpected frame type %d from a client", f.Type))
			sc.close(&Error{Code: Internal, Message: "protocol error"})
			return
		}
	}
}

// refuse answers a call the server will not start.
func (sc *serverConn) refuse(f *Frame, code Code, msg string) {
	if f.Type == FrameOneway {
		return
	}
	typ := FrameResponse
	if f.Type == FrameStreamOpen {
		typ = FrameStreamClose
	}
	var flags uint8
	if code == Unavailable || code == ResourceExhausted {
		flags = FlagRefused // not started here; another server may take it
	}
	_ = sc.send(&Frame{Type: typ, Flags: flags, ID: f.ID, Status: code, Message: msg})
}

// admit checks the server-wide and per-method limits and counts the call in.
func (sc *serverConn) admit(f *Frame) (*method, bool) {
	s := sc.s
	if s.draining.Load() {
		sc.refuse(f, Unavailable, "server shutting down")
		return nil, false
	}
	m := s.lookup(f.Service, f.Method)
	if m == nil && s.cfg.Fallback != nil && f.Type != FrameStreamOpen {
		m = s.fallbackMethod(f)
	}
	if m == nil {
		if s.lookupService(f.Service) {
			sc.refuse(f, Unimplemented, "unknown method "+f.Service+"/"+f.Method)
		} else {
			sc.refuse(f, Unimplemented, "unknown service "+f.Service)
		}
		return nil, false
	}
	if (m.stream != nil) != (f.Type == FrameStreamOpen) {
		sc.refuse(f, InvalidArgument, m.full+": streaming and unary calls do not mix")
		return nil, false
	}
	if n := s.inflight.Add(1); s.cfg.MaxInFlight > 0 && n > int64(s.cfg.MaxInFlight) {
		s.inflight.Add(-1)
		sc.refuse(f, ResourceExhausted, fmt.Sprintf("server has %d calls in flight", s.cfg.MaxInFlight))
		return nil, false
	}
	if n := m.active.Add(1); m.limit > 0 && n > m.limit {
		m.active.Add(-1)
		s.inflight.Add(-1)
		sc.refuse(f, ResourceExhausted, fmt.Sprintf("%s has %d calls in flight (its limit)", m.full, m.limit))
		return nil, false
	}
	s.handlers.Add(1)
	return m, true
}

// fallbackMethod wraps Config.Fallback as a method for one call; its request
// is the raw body.
func (s *Server) fallbackMethod(f *Frame) *method {
	full := f.Service + "/" + f.Method
	s.mu.Lock()
	m := s.fallbacks[full]
	if m == nil && len(s.fallbacks) < 4096 {
		m = &method{full: full, raw: true}
		s.fallbacks[full] = m
	}
	s.mu.Unlock()
	if m == nil {
		m = &method{full: full, raw: true}
	}
	return m
}

func (s *Server) lookupService(svc string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.services[svc] != nil
}

func (sc *serverConn) done(m *method) {
	m.active.Add(-1)
	sc.s.inflight.Add(-1)
	sc.s.handlers.Done()
}

func (sc *serverConn) dispatch(f *Frame) {
	m, ok := sc.admit(f)
	if !ok {
		return
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if f.Timeout > 0 {
		ctx, cancel = context.WithTimeout(sc.ctx, f.Timeout)
	} else {
		ctx, cancel = context.WithCancel(sc.ctx)
	}
	if f.Type == FrameRequest {
		sc.mu.Lock()
		sc.calls[f.ID] = cancel
		sc.mu.Unlock()
	}
	sc.active.Add(1)
	sc.s.workers.run(func() { sc.runCall(ctx, cancel, f, m) })
}

func (sc *serverConn) runCall(ctx context.Context, cancel context.CancelFunc, f *Frame, m *method) {
	defer sc.done(m)
	defer sc.active.Add(-1)
	resp, err := sc.invoke(ctx, f, m)
	if f.Type == FrameRequest {
		sc.mu.Lock()
		delete(sc.calls, f.ID)
		sc.mu.Unlock()
	}
	cancel()
	if f.Type == FrameOneway {
		if err != nil {
			sc.s.log.Debug("rpc: oneway call failed", "method", m.full, "err", err)
		}
		return
	}
	out := Frame{Type: FrameResponse, ID: f.ID, Codec: f.Codec}
	bp := bufPool.Get().(*[]byte)
	if err == nil && resp != nil {
		var c codec.Codec = codec.ByID(f.Codec)
		if _, ok := resp.(rawBody); ok {
			c = rawCodec{id: f.Codec}
		}
		body, merr := c.Append((*bp)[:0], resp)
		*bp = body
		if merr != nil {
			err = &Error{Code: Internal, Message: "encoding the response: " + merr.Error()}
		} else {
			out.Body = body
			if f.Flags&FlagCompressed != 0 && len(body) > sc.s.cfg.CompressAbove {
				if z, zerr := compress(body); zerr == nil {
					out.Body, out.Flags = z, FlagCompressed
				}
			}
			if len(out.Body) > sc.s.cfg.MaxFrameSize-maxHeaderSection {
				err = Errorf(ResourceExhausted, "%s: response of %d bytes exceeds the %d-byte frame limit", m.full, len(out.Body), sc.s.cfg.MaxFrameSize)
			}
		}
	}
	if err != nil {
		e := toError(err)
		out.Status, out.Message, out.Body, out.Flags = e.Code, e.Message, nil, 0
		if out.Status == OK {
			out.Status = Unknown
		}
	}
	_ = sc.send(&out)
	putBuf(bp)
}

// invoke decodes the request and runs the interceptors and the handler,
// turning a panic into an Internal error.
func (sc *serverConn) invoke(ctx context.Context, f *Frame, m *method) (resp any, err error) {
	c := codec.ByID(f.Codec)
	if c == nil {
		return nil, Errorf(InvalidArgument, "unknown codec id %d", f.Codec)
	}
	body := f.Body
	if f.Flags&FlagCompressed != 0 {
		if body, err = decompress(body, sc.s.cfg.MaxFrameSize); err != nil {
			return nil, Errorf(InvalidArgument, "%v", err)
		}
	}
	if m.raw {
		info := &CallInfo{Method: m.full, Peer: sc.peer}
		ctx = context.WithValue(withIncoming(ctx, f.Meta), callInfoKey{}, info)
		out, err := sc.s.cfg.Fallback(ctx, m.full, f.Codec, body)
		if err != nil {
			return nil, err
		}
		return rawBody(out), nil
	}
	req := m.newReq()
	if err := c.Unmarshal(body, req); err != nil {
		return nil, Errorf(InvalidArgument, "%s: request does not decode as %s into %T: %v", m.full, c.Name(), req, err)
	}
	info := &CallInfo{Method: m.full, Peer: sc.peer}
	ctx = context.WithValue(withIncoming(ctx, f.Meta), callInfoKey{}, info)
	defer func() {
		if p := recover(); p != nil {
			sc.s.log.Error("rpc: handler panicked", "method", m.full, "panic", p, "stack", string(debug.Stack()))
			resp, err = nil, Errorf(Internal, "%s panicked: %v", m.full, p)
		}
	}()
	if len(sc.s.cfg.Interceptors) == 0 {
		return m.call(ctx, req)
	}
	return chainServer(sc.s.cfg.Interceptors, m.call, info)(ctx, req)
}

func (sc *serverConn) openStream(f *Frame) {
	m, ok := sc.admit(f)
	if !ok {
		return
	}
	c := codec.ByID(f.Codec)
	if c == nil {
		sc.done(m)
		sc.refuse(f, InvalidArgument, fmt.Sprintf("unknown codec id %d", f.Codec))
		return
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if f.Timeout > 0 {
		ctx, cancel = context.WithTimeout(sc.ctx, f.Timeout)
	} else {
		ctx, cancel = context.WithCancel(sc.ctx)
	}
	info := &CallInfo{Method: m.full, Peer: sc.peer, Stream: true}
	ctx = context.WithValue(withIncoming(ctx, f.Meta), callInfoKey{}, info)
	st := newStream(f.ID, sc.conn, c, sc.s.cfg.StreamWindow, false)
	st.ctx, st.cancel = ctx, cancel
	sc.mu.Lock()
	sc.streams[f.ID] = st
	sc.mu.Unlock()
	sc.active.Add(1) // streams count too: many waking at once batch their writes
	go func() {
		defer sc.done(m)
		defer sc.active.Add(-1)
		err := sc.runStream(ctx, st, m, info)
		sc.mu.Lock()
		delete(sc.streams, f.ID)
		sc.mu.Unlock()
		cancel()
		out := Frame{Type: FrameStreamClose, ID: f.ID, Meta: st.trailer}
		if err != nil {
			e := toError(err)
			out.Status, out.Message = e.Code, e.Message
			if out.Status == OK {
				out.Status = Unknown
			}
		}
		_ = sc.send(&out)
	}()
}

func (sc *serverConn) runStream(ctx context.Context, st *stream, m *method, info *CallInfo) (err error) {
	defer func() {
		if p := recover(); p != nil {
			sc.s.log.Error("rpc: stream handler panicked", "method", m.full, "panic", p, "stack", string(debug.Stack()))
			err = Errorf(Internal, "%s panicked: %v", m.full, p)
		}
	}()
	h := func(ctx context.Context) error { return m.stream(ctx, st) }
	if len(sc.s.cfg.StreamInterceptors) > 0 {
		h = chainStreamServer(sc.s.cfg.StreamInterceptors, h, info)
	}
	return h(ctx)
}

// InFlight returns the number of calls and streams running.
func (s *Server) InFlight() int { return int(s.inflight.Load()) }

// Shutdown drains the server: it stops accepting, tells every client to go
// away (they send new calls elsewhere; calls that still arrive are refused
// as Unavailable and marked safe to retry), waits for the calls in flight
// until ctx ends, and then closes everything.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closed.Load() {
		return ErrServerClosed
	}
	s.draining.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		_ = sc.send(&Frame{Type: FrameGoAway, ID: sc.lastID.Load(), Message: "server shutting down"})
	}
	drained := make(chan struct{})
	go func() { s.handlers.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = fmt.Errorf("rpc: shutdown: %d calls still running: %w", s.inflight.Load(), ctx.Err())
	}
	if cerr := s.Close(); err == nil && cerr != nil && cerr != ErrServerClosed {
		err = cerr
	}
	<-drained
	return err
}

// Close closes listeners and connections at once, cancels the contexts of
// running handlers and waits for every goroutine the server started.
func (s *Server) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrServerClosed
	}
	s.draining.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	for sc := range s.conns {
		// Say which calls were accepted: the client may safely retry the
		// ones it sent after them elsewhere.
		_ = sc.send(&Frame{Type: FrameGoAway, ID: sc.lastID.Load(), Message: "server closed"})
		sc.close(&Error{Code: Unavailable, Message: "server closed"})
	}
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	s.handlers.Wait()
	return nil
}

// rawBody is a Fallback answer: already encoded.
type rawBody []byte

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func putBuf(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		bufPool.Put(bp)
	}
}
