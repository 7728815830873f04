package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// maxPendingWrite bounds the bytes queued for one connection; senders wait
// above it so a peer that stops reading cannot make this process grow.
const maxPendingWrite = 4 << 20

// conn is the framing half of a connection, shared by client and server.
//
// Writes are combined: a sender appends its encoded frame to wbuf; if nobody
// is writing, it becomes the writer and writes everything queued, looping
// while other senders keep appending during its system call. Under load one
// write carries many frames; a lone caller writes its own frame at once,
// without handing it to another goroutine.
//
// Lock order: a component's own mutex (clientConn.mu, serverConn.mu) may be
// held while calling send (which takes wmu); never the reverse.
type conn struct {
	nc net.Conn
	fr *frameReader

	wmu     sync.Mutex
	wcond   sync.Cond
	wbuf    []byte
	spare   []byte
	writing bool
	corked  int // open SendBatches holding this connection's writes back
	werr    error

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error // set before closed is closed

	// active counts calls in flight on the connection. When more than one
	// is, the sender that becomes the writer yields once before writing so
	// the others can add their frames to the same system call.
	active atomic.Int64

	lastRead atomic.Int64 // unix nanoseconds of the last frame read
}

func newConn(nc net.Conn, maxFrame int) *conn {
	c := &conn{nc: nc, fr: newFrameReader(nc, maxFrame), closed: make(chan struct{})}
	c.wcond.L = &c.wmu
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// send queues f and writes it unless another sender is already writing, in
// which case that sender writes it. A nil error means the frame was queued;
// it may still be lost if the connection fails afterwards.
func (c *conn) send(f *Frame) error {
	c.wmu.Lock()
	for len(c.wbuf) > maxPendingWrite && c.writing && c.werr == nil {
		c.wcond.Wait()
	}
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	c.wbuf = appendFrame(c.wbuf, f)
	if c.writing || (c.corked > 0 && len(c.wbuf) <= maxPendingWrite) {
		c.wmu.Unlock()
		return nil
	}
	c.writing = true
	if c.active.Load() > 1 {
		c.wmu.Unlock()
		runtime.Gosched()
		c.wmu.Lock()
	}
	c.writeLocked()
	return nil
}

// writeLocked writes wbuf until it is empty (c.writing set, wmu held; it is
// released on return).
func (c *conn) writeLocked() {
	for len(c.wbuf) > 0 && c.werr == nil {
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.wmu.Unlock()
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		if cap(buf) <= 1<<20 {
			c.spare = buf[:0]
		} else {
			c.spare = nil
		}
		if err != nil {
			c.werr = &Error{Code: Unavailable, Message: "write: " + err.Error()}
		}
		c.wcond.Broadcast()
	}
	c.writing = false
	werr := c.werr
	c.wmu.Unlock()
	if werr != nil {
		c.close(werr)
	}
}

// A SendBatch holds back the writes of stream messages sent through it
// (ServerStream.TrySendBatch) until Flush, so a fan-out to many streams
// costs one system call per connection rather than one per message. The
// zero value is ready; it is not safe for concurrent use.
type SendBatch struct {
	conns []*conn
}

func (b *SendBatch) add(c *conn) {
	for _, x := range b.conns {
		if x == c {
			return
		}
	}
	c.wmu.Lock()
	c.corked++
	c.wmu.Unlock()
	b.conns = append(b.conns, c)
}

// Flush writes what the batch held back and empties it.
func (b *SendBatch) Flush() {
	for _, c := range b.conns {
		c.wmu.Lock()
		c.corked--
		if c.corked > 0 || c.writing || len(c.wbuf) == 0 {
			c.wmu.Unlock()
			continue
		}
		c.writing = true
		c.writeLocked()
	}
	clear(b.conns)
	b.conns = b.conns[:0]
}

// close shuts the connection once; err is what pending work fails with.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		if err == nil {
			err = &Error{Code: Unavailable, Message: "connection closed"}
		}
		c.closeErr = err
		c.wmu.Lock()
		if c.werr == nil {
			c.werr = err
		}
		c.wcond.Broadcast()
		c.wmu.Unlock()
		c.nc.Close()
		close(c.closed)
	})
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// readErr turns a read failure into the error pending calls fail with.
func readErr(err error) *Error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return &Error{Code: Unavailable, Message: "connection closed by peer"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Code: Unavailable, Message: "connection lost mid-frame"}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return &Error{Code: Unavailable, Message: "read: " + err.Error()}
	}
	return &Error{Code: Unavailable, Message: "protocol error: " + err.Error()}
}

// heartbeat is called periodically by the connection's owner. It sends a ping
// when nothing was read for interval and closes the connection when nothing
// was read for timeout, so a peer that vanished (power loss, partition) fails
// the calls waiting on it instead of leaving them hanging.
func (c *conn) heartbeat(now time.Time, interval, timeout time.Duration) {
	idle := now.Sub(time.Unix(0, c.lastRead.Load()))
	if idle >= timeout {
		c.close(&Error{Code: Unavailable, Message: "heartbeat timeout: peer silent for " + idle.Round(time.Millisecond).String()})
		return
	}
	if idle >= interval {
		_ = c.send(&Frame{Type: FramePing, ID: uint64(now.UnixNano())})
	}
}

// onRead records liveness and answers pings; it reports whether the frame
// was a heartbeat frame (and so consumed).
func (c *conn) onRead(f *Frame) bool {
	c.lastRead.Store(time.Now().UnixNano())
	switch f.Type {
	case FramePing:
		_ = c.send(&Frame{Type: FramePong, ID: f.ID})
		return true
	case FramePong:
		return true
	}
	return false
}

// Ping connects to a Tangram RPC server, sends a PING frame and waits for
// its PONG: a health probe that needs no service registered on the server.
func Ping(ctx context.Context, addr string) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stamp := uint64(time.Now().UnixNano())
	if _, err := nc.Write(appendFrame(nil, &Frame{Type: FramePing, ID: stamp})); err != nil {
		return err
	}
	fr := newFrameReader(nc, 1<<20)
	for {
		var f Frame
		if err := fr.read(&f); err != nil {
			return fmt.Errorf("rpc ping %s: %w", addr, err)
		}
		if f.Type == FramePong && f.ID == stamp {
			return nil
		}
	}
}
