package rpc

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/tangram-dev/tangram/rpc/codec"
)

// stream is one stream's state on either side. Flow control: each side may
// have at most `window` bytes of messages unread at the other; the reader
// grants more with window-update frames as its application consumes them.
// A sender waits while its window is used up, so a slow reader bounds the
// sender's memory (and its own: window plus one frame).
type stream struct {
	id       uint64
	c        *conn
	codec    codec.Codec
	window   int
	isClient bool

	ctx     context.Context
	cancel  context.CancelFunc
	trailer Metadata    // server: sent with the close; client: received
	stopCtx func() bool // client: unregisters the context watcher

	mu         sync.Mutex
	recvQ      [][]byte
	recvClosed bool  // peer closed its sending side (or the stream ended)
	recvErr    error // final status; nil means io.EOF at the end
	inflight   int   // bytes received and not yet granted back
	credit     int   // bytes consumed and not yet granted back
	sendWin    int   // bytes this side may still send
	sendClosed bool  // CloseSend called
	failed     error // local failure: stops both directions
	recvSig    chan struct{}
	sendSig    chan struct{}
	done       chan struct{} // closed once the stream has ended for good
	doneOnce   sync.Once
}

func newStream(id uint64, c *conn, cd codec.Codec, window int, isClient bool) *stream {
	return &stream{
		id: id, c: c, codec: cd, window: window, isClient: isClient, sendWin: window,
		recvSig: make(chan struct{}, 1), sendSig: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// onFrame handles a frame addressed to the stream; an error is a protocol
// violation by the peer.
func (st *stream) onFrame(f *Frame) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch f.Type {
	case FrameStreamData:
		if st.recvClosed {
			return nil // after a local failure; drop
		}
		if st.inflight >= st.window {
			return fmt.Errorf("stream %d: peer sent past its flow-control window of %d bytes", st.id, st.window)
		}
		body := f.Body
		if f.Flags&FlagCompressed != 0 {
			return fmt.Errorf("stream %d: compressed stream messages are not supported", st.id)
		}
		st.inflight += len(body)
		if len(body) == 0 {
			st.inflight++ // empty messages still count, so they cannot flood
		}
		st.recvQ = append(st.recvQ, body)
		signal(st.recvSig)
	case FrameStreamClose:
		st.recvClosed = true
		if f.Status != OK {
			st.recvErr = &Error{Code: f.Status, Message: f.Message}
		}
		if st.isClient {
			st.trailer = f.Meta
			// The server's close ends the whole stream.
			st.finishLocked()
		}
		signal(st.recvSig)
	case FrameWindowUpdate:
		if len(f.Body) != 4 {
			return fmt.Errorf("stream %d: window update of %d bytes, want 4", st.id, len(f.Body))
		}
		st.sendWin += int(binary.BigEndian.Uint32(f.Body))
		signal(st.sendSig)
	}
	return nil
}

// fail ends the stream locally with err (connection lost, canceled).
func (st *stream) fail(err error) {
	st.mu.Lock()
	if st.failed == nil {
		st.failed = err
	}
	st.recvClosed = true
	if st.recvErr == nil {
		st.recvErr = err
	}
	st.finishLocked()
	st.mu.Unlock()
	signal(st.recvSig)
	signal(st.sendSig)
	if st.cancel != nil {
		st.cancel()
	}
}

func (st *stream) finishLocked() {
	st.doneOnce.Do(func() { close(st.done) })
}

func (st *stream) send(v any) error {
	_, err := st.sendMsg(v, true)
	return err
}

// sendMsg sends v; without wait it returns false, sending nothing, when the
// peer's window is used up.
func (st *stream) sendMsg(v any, wait bool) (bool, error) {
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	body, err := st.codec.Append((*bp)[:0], v)
	*bp = body
	if err != nil {
		return false, Errorf(InvalidArgument, "encoding a stream message: %v", err)
	}
	if len(body) > st.c.fr.max-maxHeaderSection {
		return false, Errorf(ResourceExhausted, "stream message of %d bytes exceeds the %d-byte frame limit", len(body), st.c.fr.max)
	}
	for {
		st.mu.Lock()
		switch {
		case st.failed != nil:
			err := st.failed
			st.mu.Unlock()
			return false, err
		case st.sendClosed:
			st.mu.Unlock()
			return false, Errorf(FailedPrecondition, "send after CloseSend")
		case !st.isClient && st.doneClosed():
			st.mu.Unlock()
			return false, Errorf(Canceled, "stream ended")
		case st.sendWin > 0:
			st.sendWin -= max(len(body), 1)
			st.mu.Unlock()
			return true, st.c.send(&Frame{Type: FrameStreamData, ID: st.id, Codec: st.codec.ID(), Body: body})
		}
		st.mu.Unlock()
		if !wait {
			return false, nil
		}
		select {
		case <-st.sendSig:
		case <-st.ctx.Done():
			return false, ctxError(st.ctx)
		case <-st.done:
		case <-st.c.closed:
			return false, st.c.closeErr
		}
	}
}

func (st *stream) doneClosed() bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

// recv decodes the next message into v; io.EOF after a clean end.
func (st *stream) recv(v any) error {
	for {
		st.mu.Lock()
		if len(st.recvQ) > 0 {
			body := st.recvQ[0]
			st.recvQ[0] = nil
			st.recvQ = st.recvQ[1:]
			st.credit += max(len(body), 1)
			var grant int
			if st.credit >= st.window/4 && !st.recvClosed {
				grant = st.credit
				st.inflight -= grant
				st.credit = 0
			}
			st.mu.Unlock()
			if grant > 0 {
				var b [4]byte
				binary.BigEndian.PutUint32(b[:], uint32(grant))
				_ = st.c.send(&Frame{Type: FrameWindowUpdate, ID: st.id, Body: b[:]})
			}
			if err := st.codec.Unmarshal(body, v); err != nil {
				return Errorf(InvalidArgument, "stream message does not decode: %v", err)
			}
			return nil
		}
		if st.recvClosed {
			err := st.recvErr
			st.mu.Unlock()
			if err == nil {
				return io.EOF
			}
			return err
		}
		st.mu.Unlock()
		if st.isClient {
			// A client stream is failed (and recvSig signalled) when its
			// context ends or its connection closes: one channel to wait
			// on, which matters with thousands of watch streams.
			<-st.recvSig
			continue
		}
		select {
		case <-st.recvSig:
		case <-st.ctx.Done():
			if !st.doneClosed() { // ended cleanly: drain what was queued first
				return ctxError(st.ctx)
			}
		case <-st.c.closed:
			st.fail(st.c.closeErr)
		}
	}
}

// closeSend half-closes the client's side.
func (st *stream) closeSend() error {
	st.mu.Lock()
	if st.sendClosed || st.failed != nil {
		st.mu.Unlock()
		return nil
	}
	st.sendClosed = true
	st.mu.Unlock()
	return st.c.send(&Frame{Type: FrameStreamClose, ID: st.id})
}

var errEOF = io.EOF

// abort cancels a client stream: tells the server, fails it locally.
func (st *stream) abort() {
	if st.doneClosed() {
		return
	}
	_ = st.c.send(&Frame{Type: FrameCancel, ID: st.id})
	st.fail(&Error{Code: Canceled, Message: "stream canceled"})
}
