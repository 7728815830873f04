package rpc

import (
	"context"

	"github.com/tangram-dev/tangram/rpc/codec"
)

// Call calls method ("Service/Method") and returns its typed answer:
//
//	resp, err := rpc.Call[pb.EchoReply](ctx, c, "Echo/Echo", &pb.EchoRequest{…})
func Call[Resp any](ctx context.Context, c *Client, method string, req any, opts ...CallOption) (*Resp, error) {
	resp := new(Resp)
	if err := c.Invoke(ctx, method, req, resp, opts...); err != nil {
		return nil, err
	}
	return resp, nil
}

// Future is the pending result of an asynchronous call.
type Future[Resp any] struct {
	done chan struct{}
	resp *Resp
	err  error
}

// Done is closed when the call has finished.
func (f *Future[Resp]) Done() <-chan struct{} { return f.done }

// Wait blocks until the call finishes and returns its result.
func (f *Future[Resp]) Wait() (*Resp, error) {
	<-f.done
	return f.resp, f.err
}

// Go starts a call and returns at once with a Future for its result. The call
// is bounded by ctx and by the client's lifetime (Close fails it).
func Go[Resp any](ctx context.Context, c *Client, method string, req any, opts ...CallOption) *Future[Resp] {
	f := &Future[Resp]{done: make(chan struct{})}
	if !c.goFunc(func() {
		f.resp, f.err = Call[Resp](ctx, c, method, req, opts...)
		close(f.done)
	}) {
		f.err = ErrClientClosed
		close(f.done)
	}
	return f
}

// CallFunc starts a call and runs cb with its result on another goroutine.
func CallFunc[Resp any](ctx context.Context, c *Client, method string, req any, cb func(*Resp, error), opts ...CallOption) {
	if !c.goFunc(func() { cb(Call[Resp](ctx, c, method, req, opts...)) }) {
		cb(nil, ErrClientClosed)
	}
}

// ClientStream is the client's side of a stream: it sends Req messages and
// receives Resp messages. Send and Recv may run on two goroutines at once.
type ClientStream[Req, Resp any] struct {
	st   *stream
	done func(error)
}

// NewStream opens a stream to method. For a server-streaming call, Send one
// request, CloseSend, then Recv until io.EOF. Canceling ctx aborts the stream.
func NewStream[Req, Resp any](ctx context.Context, c *Client, method string, opts ...CallOption) (*ClientStream[Req, Resp], error) {
	var co callOptions
	for _, o := range opts {
		o(&co)
	}
	cd := co.codec
	if cd == nil {
		if cd = c.o.codec; cd == nil {
			cd = codec.For(new(Req))
		}
	}
	info := &CallInfo{Method: method, Stream: true}
	var done func(error)
	for _, ic := range c.o.streamIcs {
		var d func(error)
		ctx, d = ic(ctx, info)
		if d != nil {
			prev := done
			done = func(err error) {
				d(err)
				if prev != nil {
					prev(err)
				}
			}
		}
	}
	st, err := c.openStream(ctx, info, cd, &co)
	if err != nil {
		if done != nil {
			done(err)
		}
		return nil, err
	}
	return &ClientStream[Req, Resp]{st: st, done: done}, nil
}

// Send sends a message; it waits while the server's window is full.
func (s *ClientStream[Req, Resp]) Send(m *Req) error { return s.st.send(m) }

// CloseSend tells the server no more messages will be sent.
func (s *ClientStream[Req, Resp]) CloseSend() error { return s.st.closeSend() }

// Recv returns the next message; io.EOF when the server ended the stream with
// OK, or the server's error.
func (s *ClientStream[Req, Resp]) Recv() (*Resp, error) {
	r := new(Resp)
	if err := s.st.recv(r); err != nil {
		s.finish(err)
		return nil, err
	}
	return r, nil
}

func (s *ClientStream[Req, Resp]) finish(err error) {
	if s.done != nil {
		d := s.done
		s.done = nil
		if err == errEOF {
			err = nil
		}
		d(err)
	}
}

// Trailer returns the metadata the server sent with its final status.
func (s *ClientStream[Req, Resp]) Trailer() Metadata {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return s.st.trailer
}

// Cancel aborts the stream: the server's context is canceled.
func (s *ClientStream[Req, Resp]) Cancel() {
	s.st.abort()
	s.finish(&Error{Code: Canceled, Message: "stream canceled"})
}
