// Package park holds idle HTTP/1.1 long-poll connections without a
// goroutine, buffers or a request each, and hands them back to the HTTP
// server once answered, so keep-alive clients keep their connection.
//
// net/http spends about 25 KiB per held request (two goroutines, 10 KiB of
// bufio buffers, the request). A parked connection costs the socket and a
// small struct. A handler hijacks the connection with Park; later, from any
// goroutine, Respond (or Send then Release) writes a complete HTTP/1.1
// response. The answered connection then waits, on Linux, in one epoll set
// until its client sends the next request, and only then goes to Listener,
// which the HTTP server also serves: net/http reads that request as on a
// new connection. Elsewhere it goes to Listener at once.
package park

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotSupported is returned by Park when the connection cannot be
// hijacked (HTTP/2, or a ResponseWriter that neither hijacks nor unwraps).
var ErrNotSupported = errors.New("park: connection cannot be parked")

// Parker parks connections and hands them back through its listener.
type Parker struct {
	ln   *listener
	idle *idler
}

// New returns a Parker. Serve its Listener with the same http.Server, and
// Close it when done.
func New(addr net.Addr) *Parker {
	p := &Parker{ln: &listener{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}}
	p.idle = newIdler(p.ln.handoff)
	return p
}

// Listener yields answered connections for the HTTP server to serve.
func (p *Parker) Listener() net.Listener { return p.ln }

// Close closes the listener and the connections waiting for their client's
// next request; connections answered afterwards are closed.
func (p *Parker) Close() error {
	err := p.ln.Close() // first: a hand-off blocked on the listener returns
	p.idle.close()
	return err
}

// Idle returns how many answered connections wait for their client's next
// request outside the HTTP server.
func (p *Parker) Idle() int { return p.idle.len() }

// ConnState must be called from the HTTP server's ConnState hook: it tracks
// connections handed back until the server reads a request from them.
func (p *Parker) ConnState(c net.Conn, st http.ConnState) {
	if st != http.StateNew {
		p.ln.forget(c)
	}
}

// CloseIdle closes connections handed back on which no new request has
// arrived yet (those still waiting outside the server are closed by
// Close). http.Server.Shutdown treats such connections as new ones and
// waits up to 5 s for them; to the client they are idle keep-alive
// connections, which Shutdown closes at once.
func (p *Parker) CloseIdle() {
	p.ln.mu.Lock()
	defer p.ln.mu.Unlock()
	for c := range p.ln.pending {
		c.Close()
		delete(p.ln.pending, c)
	}
}

// Conn is a parked connection.
type Conn struct {
	p        *Parker
	conn     net.Conn
	buffered []byte // bytes the server had read ahead (pipelined requests)
	keep     bool
	ok       bool // answered without a write error
	once     sync.Once
	released sync.Once
}

// Park hijacks the connection of a request whose body has been read. The
// handler must return right after; the connection belongs to the caller
// until Respond.
func (p *Parker) Park(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	if r.ProtoMajor != 1 {
		return nil, ErrNotSupported
	}
	// ResponseController follows Unwrap through middleware wrappers.
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSupported, err)
	}
	c := &Conn{p: p, conn: conn, keep: r.ProtoMinor >= 1 && !r.Close}
	if n := brw.Reader.Buffered(); n > 0 {
		c.buffered, _ = brw.Reader.Peek(n)
		c.buffered = bytes.Clone(c.buffered)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// Respond writes a complete response and returns the connection to the
// HTTP server: Answer then Release.
func (c *Conn) Respond(status int, contentType string, body []byte) {
	c.Answer(status, contentType, body)
	c.Release()
}

// Response is a complete HTTP/1.1 response, formatted once in its
// keep-alive and its closing form, to be sent to many parked connections.
type Response struct {
	keep, close []byte
}

// NewResponse formats a response.
func NewResponse(status int, contentType string, body []byte) *Response {
	head := func(closing bool) []byte {
		var b bytes.Buffer
		b.Grow(160 + len(body))
		b.WriteString("HTTP/1.1 ")
		b.WriteString(strconv.Itoa(status))
		b.WriteByte(' ')
		b.WriteString(http.StatusText(status))
		b.WriteString("\r\nContent-Type: ")
		b.WriteString(contentType)
		b.WriteString("\r\nContent-Length: ")
		b.WriteString(strconv.Itoa(len(body)))
		b.WriteString("\r\nDate: ")
		b.WriteString(httpDate())
		if closing {
			b.WriteString("\r\nConnection: close")
		}
		b.WriteString("\r\n\r\n")
		b.Write(body)
		return b.Bytes()
	}
	return &Response{keep: head(false), close: head(true)}
}

// Answer writes a complete response; it runs at most once per Conn. Call
// Release afterwards. Splitting the two lets a fan-out write every answer
// first and hand the connections back after.
func (c *Conn) Answer(status int, contentType string, body []byte) {
	c.Send(NewResponse(status, contentType, body))
}

// Send writes a preformatted response (once per Conn), like Answer.
func (c *Conn) Send(r *Response) {
	c.once.Do(func() {
		c.p.idle.unwatch(c.conn)
		out := r.keep
		if !c.keep {
			out = r.close
		}
		// No write deadline: the client of a parked request is waiting for
		// exactly this answer, so a response of a few hundred bytes fits in
		// the socket's empty send buffer and the write does not block.
		// (Setting and clearing a deadline costs two timer updates per
		// answer, a tenth of the fan-out's CPU.)
		_, err := c.conn.Write(out)
		c.ok = err == nil
	})
}

// Release returns an answered connection to the HTTP server, or closes it
// when it was not answered, the write failed, the client asked to close, or
// the Parker is closed. It runs at most once per Conn.
func (c *Conn) Release() {
	c.once.Do(func() { c.p.idle.unwatch(c.conn) }) // an unanswered connection is closed below
	c.released.Do(func() {
		if !c.ok || !c.keep {
			c.conn.Close()
			return
		}
		if len(c.buffered) > 0 {
			// The next request is already here.
			c.p.ln.handoff(&replayConn{Conn: c.conn, r: io.MultiReader(bytes.NewReader(c.buffered), c.conn)})
			return
		}
		if !c.p.idle.add(c.conn) {
			c.p.ln.handoff(c.conn)
		}
	})
}

// Close drops a parked connection without answering.
func (c *Conn) Close() {
	c.once.Do(func() { c.p.idle.unwatch(c.conn) })
	c.released.Do(func() { c.conn.Close() })
}

// OnHangup calls fn, once, if the client closes or resets the connection
// while it is parked (Linux; elsewhere a vanished client is noticed when
// its answer is written). fn must not block; it typically drops the
// parked request with Close.
func (c *Conn) OnHangup(fn func()) { c.p.idle.onHangup(c.conn, fn) }

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

type listener struct {
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	addr      net.Addr

	mu      sync.Mutex
	pending map[net.Conn]struct{} // handed back, no request read yet
}

func (l *listener) handoff(c net.Conn) {
	l.mu.Lock()
	if l.pending == nil {
		l.pending = map[net.Conn]struct{}{}
	}
	l.pending[c] = struct{}{}
	l.mu.Unlock()
	select {
	case l.ch <- c:
	case <-l.done:
		l.forget(c)
		c.Close()
	}
}

func (l *listener) forget(c net.Conn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	sec int64
	s   string
}

// httpDate is the Date header value, formatted once per second.
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	d := &cachedDate{sec: now.Unix(), s: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}
