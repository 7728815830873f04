package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

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
