package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// limitListener closes connections accepted beyond max open at once,
// counting them, so that a flood of idle connections cannot take every
// file descriptor (and a goroutine each).
type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.max > 0 && l.open.Load() >= l.max {
			l.refused.Add(1)
			c.Close()
			continue
		}
		l.open.Add(1)
		return &countedConn{Conn: c, l: l}, nil
	}
}

type countedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

// SyscallConn exposes the socket (the parker watches it for hang-ups).
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("server: connection has no socket")
	}
	return sc.SyscallConn()
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// idleGuard closes keep-alive connections that have not carried an
// authenticated request once they sit idle for timeout: an anonymous
// client cannot hold a connection (an fd and a goroutine) for the
// server's full idle timeout. A connection becomes trusted when a request
// on it passes authentication (markAuthed).
type idleGuard struct {
	timeout time.Duration
	mu      sync.Mutex
	conns   map[net.Conn]*guarded
}

type guarded struct {
	authed bool
	timer  *time.Timer
}

type connKey struct{}

func newIdleGuard(timeout time.Duration) *idleGuard {
	return &idleGuard{timeout: timeout, conns: map[net.Conn]*guarded{}}
}

// connContext is the http.Server's ConnContext: it lets handlers name
// their connection to markAuthed.
func (g *idleGuard) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// markAuthed trusts the connection of the request in ctx.
func (g *idleGuard) markAuthed(ctx context.Context) {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if c == nil {
		return
	}
	g.mu.Lock()
	if e := g.conns[c]; e != nil {
		e.authed = true
	}
	g.mu.Unlock()
}

// connState must be called from the http.Server's ConnState hook.
func (g *idleGuard) connState(c net.Conn, st http.ConnState) {
	if g.timeout <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.conns[c]
	switch st {
	case http.StateNew:
		// Until its first request a connection is anonymous too.
		g.conns[c] = &guarded{timer: time.AfterFunc(g.timeout, func() { c.Close() })}
	case http.StateActive:
		if e != nil && e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
	case http.StateIdle:
		if e != nil && !e.authed && e.timer == nil {
			e.timer = time.AfterFunc(g.timeout, func() { c.Close() })
		}
	case http.StateHijacked, http.StateClosed:
		if e != nil && e.timer != nil {
			e.timer.Stop()
		}
		delete(g.conns, c)
	}
}

// close stops every timer (the server is shutting down).
func (g *idleGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c, e := range g.conns {
		if e.timer != nil {
			e.timer.Stop()
		}
		delete(g.conns, c)
	}
}
