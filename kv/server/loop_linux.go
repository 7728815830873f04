//go:build linux

package server

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/kv/resp"
)

// An event loop serves many connections from one goroutine, as Redis's ae
// loop does: epoll says which sockets are readable, each is read once into
// a buffer the loop shares, every complete command in it runs, and the
// replies of all of them are written after one log write (and, under fsync
// always, one fsync for every client of the iteration). A goroutine per
// connection costs a wasted read (EAGAIN), a park and a wake-up per
// request; the loop spends one epoll_wait on all of them.
//
// The sockets are the loop's own (duplicated from what the listener
// accepted, out of the Go runtime's poller), non-blocking and
// level-triggered. Other goroutines talk to a loop through its inbox,
// which an eventfd wakes: a published message to write, a command that ran
// aside to resume after, a client to kill.
type loop struct {
	s       *Server
	epfd    int
	efd     int
	rbuf    []byte
	clients map[int]*client // by fd; loop goroutine only
	dirty   []*client       // clients with replies to write this iteration

	mu    sync.Mutex
	inbox []loopOp
	woken bool // an eventfd write is pending
	done  bool // the loop has ended: posts are dropped
}

type loopOp struct {
	kind uint8
	c    *client
}

const (
	opAdd    = iota // register a new client
	opFlush         // write what was pushed to the client
	opResume        // a command that ran aside finished
	opKill          // close the client
)

const (
	readChunk    = 16 << 10
	maxWriteHold = 1 << 20 // stop reading a client whose unread replies pass this
)

const loopsSupported = true

func newLoop(s *Server) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, err
	}
	return &loop{s: s, epfd: epfd, efd: efd, rbuf: make([]byte, 64<<10), clients: map[int]*client{}}, nil
}

// post hands op to the loop goroutine; it may be called from any
// goroutine. It reports false when the loop has ended (the op is dropped).
func (l *loop) post(op loopOp) bool {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		return false
	}
	l.inbox = append(l.inbox, op)
	if !l.woken {
		l.woken = true
		l.wakeLocked() // under mu, so shutdown cannot close the eventfd meanwhile
	}
	l.mu.Unlock()
	return true
}

// wake interrupts epoll_wait (Close uses it to end the loop at once).
func (l *loop) wake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.wakeLocked()
	}
}

func (l *loop) wakeLocked() {
	one := [8]byte{1}
	for {
		_, err := unix.Write(l.efd, one[:])
		if err != unix.EINTR {
			return
		}
	}
}

// adopt takes over an accepted connection: the loop keeps a duplicate of
// its descriptor and the Go runtime lets go of the original.
func (l *loop) adopt(conn net.Conn) (*client, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	raddr, laddr := conn.RemoteAddr().String(), conn.LocalAddr().String()
	conn.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	s := l.s
	c := &client{s: s, id: s.nextID.Add(1), created: time.Now(), closing: make(chan struct{}), lp: l, fd: fd, raddr: raddr, laddr: laddr}
	c.lim = &c.limStore
	c.init()
	return c, nil
}

func (l *loop) run() {
	defer l.shutdown()
	events := make([]unix.EpollEvent, 256)
	nextCron := time.Now().Add(time.Second)
	for {
		n, err := unix.EpollWait(l.epfd, events, 1000)
		if err != nil && err != unix.EINTR {
			l.s.log.Error("kv: epoll_wait", "err", err)
			return
		}
		for i := 0; i < n; i++ {
			fd := int(events[i].Fd)
			if fd == l.efd {
				l.drain()
				continue
			}
			c := l.clients[fd]
			if c == nil {
				continue
			}
			ev := events[i].Events
			if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
				l.readable(c, ev)
			}
			if ev&unix.EPOLLOUT != 0 && !c.closed {
				l.markDirty(c)
			}
		}
		l.writeAll()
		select {
		case <-l.s.stop:
			return
		default:
		}
		if now := time.Now(); now.After(nextCron) {
			nextCron = now.Add(time.Second)
			l.cron(now)
		}
	}
}

// drain runs what other goroutines posted.
func (l *loop) drain() {
	var b [8]byte
	unix.Read(l.efd, b[:])
	l.mu.Lock()
	ops := l.inbox
	l.inbox = nil
	l.woken = false
	l.mu.Unlock()
	for _, op := range ops {
		c := op.c
		switch op.kind {
		case opAdd:
			if c.dead.Load() {
				l.forget(c)
				continue
			}
			c.events = unix.EPOLLIN | unix.EPOLLRDHUP
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: c.events, Fd: int32(c.fd)}); err != nil {
				l.s.log.Warn("kv: epoll_ctl add", "err", err)
				l.forget(c)
				continue
			}
			l.clients[c.fd] = c
		case opKill:
			l.close(c)
		case opFlush:
			if !c.closed {
				l.takeOut(c)
				c.outMu.Lock()
				c.wbuf = append(c.wbuf, c.pending...)
				c.pending = c.pending[:0]
				c.flushPosted = false
				c.outMu.Unlock()
				l.markDirty(c)
			}
		case opResume:
			c.busy = false
			if c.closed {
				continue
			}
			if c.dead.Load() {
				c.closeAfter = true
			}
			l.takeOut(c)
			l.markDirty(c)
			if !c.closeAfter && len(c.qbuf) > 0 {
				l.process(c, c.qbuf, true)
			}
		}
	}
}

// readable reads what the peer sent once and runs the complete commands.
func (l *loop) readable(c *client, ev uint32) {
	if c.closed {
		return
	}
	if c.busy || c.closeAfter || c.events&unix.EPOLLIN == 0 {
		// Not reading now. A hang-up ends the client; so does the peer's
		// shutdown while it waits in BLPOP (Redis reads the EOF and frees
		// it). A client held back for unread replies may still read them:
		// only stop hearing of its shutdown (level-triggered, it would
		// wake the loop forever).
		if ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0 || c.busy && ev&unix.EPOLLRDHUP != 0 {
			l.close(c)
		} else if ev&unix.EPOLLRDHUP != 0 {
			c.peerShut = true
			l.setEvents(c)
		}
		return
	}
	if len(c.qbuf) == 0 {
		n, err := readFd(c.fd, l.rbuf)
		if n <= 0 {
			if err != unix.EAGAIN {
				l.close(c)
			}
			return
		}
		l.process(c, l.rbuf[:n], false)
		return
	}
	if cap(c.qbuf)-len(c.qbuf) < readChunk {
		// Grows with what arrives, never with what a header declares.
		nb := make([]byte, len(c.qbuf), max(2*cap(c.qbuf), len(c.qbuf)+readChunk))
		copy(nb, c.qbuf)
		c.qbuf = nb
	}
	n, err := readFd(c.fd, c.qbuf[len(c.qbuf):cap(c.qbuf)])
	if n <= 0 {
		if err != unix.EAGAIN {
			l.close(c)
		}
		return
	}
	c.qbuf = c.qbuf[:len(c.qbuf)+n]
	if len(c.qbuf) < c.need {
		return
	}
	l.process(c, c.qbuf, true)
}

func readFd(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// process runs every complete command at the front of buf (the loop's
// read buffer, or the client's own qbuf when own is set) and keeps the
// rest in qbuf.
func (l *loop) process(c *client, buf []byte, own bool) {
	pos := 0
	c.need = 0
	for pos < len(buf) && !c.busy && !c.closeAfter {
		args, n, need, err := c.lim.Parse(buf[pos:], c.args)
		c.args = args[:0]
		if err != nil {
			if resp.IsProtocol(err) {
				c.out = resp.AppendError(c.out, "ERR "+err.Error())
			}
			c.closeAfter = true
			pos = len(buf)
			break
		}
		if n == 0 {
			c.need = need // counted from the rest's start, qbuf's start below
			break
		}
		pos += n
		if len(args) == 0 {
			continue
		}
		if c.exec(args) {
			c.closeAfter = true
		}
		if c.closed {
			return
		}
	}
	rest := buf[pos:]
	switch {
	case len(rest) == 0:
		c.qbuf = c.qbuf[:0]
		if cap(c.qbuf) > 1<<20 {
			c.qbuf = nil
		}
	case own:
		c.qbuf = c.qbuf[:copy(c.qbuf, rest)]
	default:
		c.qbuf = append(c.qbuf[:0], rest...)
	}
	if c.busy || len(c.out) > 0 || c.closeAfter { // (busy: out is the aside goroutine's now)
		l.markDirty(c)
	}
	l.setEvents(c)
}

// runAside runs a command that may wait on a goroutine of its own; the
// client reads nothing more until it is done.
func (l *loop) runAside(c *client, spec *cmdSpec, args [][]byte) {
	l.takeOut(c) // the replies before it go out now
	l.markDirty(c)
	c.busy = true
	args = copyArgs(args) // they point into a buffer the loop reuses
	l.s.goFunc(func() {
		c.run(spec, args)
		l.post(loopOp{kind: opResume, c: c})
	})
}

// takeOut moves the replies built so far to the write buffer.
func (l *loop) takeOut(c *client) {
	if c.busy || len(c.out) == 0 {
		return
	}
	if len(c.wbuf) == 0 {
		c.wbuf, c.out = c.out, c.wbuf[:0]
	} else {
		c.wbuf = append(c.wbuf, c.out...)
		c.out = c.out[:0]
	}
	if cap(c.out) > 1<<20 {
		c.out = nil
	}
}

func (l *loop) markDirty(c *client) {
	if !c.dirty {
		c.dirty = true
		l.dirty = append(l.dirty, c)
	}
}

// writeAll writes every dirty client's replies: the log first (and its
// fsync under fsync always, once for all of them), so no client hears of
// a write the log does not hold.
func (l *loop) writeAll() {
	if len(l.dirty) == 0 {
		return
	}
	sync := false
	for _, c := range l.dirty {
		l.takeOut(c)
		if c.needSync {
			sync, c.needSync = true, false
		}
	}
	if a := l.s.aof; a != nil {
		a.writeOut()
		if sync {
			a.waitSynced()
		}
	}
	for i, c := range l.dirty {
		l.dirty[i] = nil
		c.dirty = false
		if c.closed {
			continue
		}
		for len(c.wbuf) > 0 {
			n, err := unix.Write(c.fd, c.wbuf)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				break
			}
			if err != nil || n <= 0 {
				l.close(c)
				break
			}
			if n == len(c.wbuf) {
				c.wbuf = c.wbuf[:0]
				if cap(c.wbuf) > 1<<20 {
					c.wbuf = nil
				}
				break
			}
			c.wbuf = c.wbuf[:copy(c.wbuf, c.wbuf[n:])]
		}
		if c.closed {
			continue
		}
		if len(c.wbuf) == 0 && c.closeAfter && !c.busy {
			l.close(c)
			continue
		}
		l.setEvents(c)
	}
	l.dirty = l.dirty[:0]
}

// setEvents registers the interest c needs now: input unless it is busy,
// closing or has too much unread output; output while replies wait.
func (l *loop) setEvents(c *client) {
	if c.closed {
		return
	}
	var want uint32
	if !c.peerShut {
		want |= unix.EPOLLRDHUP
	}
	if !c.busy && !c.closeAfter && len(c.wbuf) < maxWriteHold {
		want |= unix.EPOLLIN
	}
	if len(c.wbuf) > 0 {
		want |= unix.EPOLLOUT
	}
	if want == c.events {
		return
	}
	c.events = want
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: want, Fd: int32(c.fd)}); err != nil {
		l.close(c)
	}
}

// close ends c: the socket closes and the server forgets it.
func (l *loop) close(c *client) {
	if c.closed {
		return
	}
	c.closed = true
	c.once.Do(func() {
		c.dead.Store(true)
		close(c.closing)
	})
	if l.clients[c.fd] == c {
		delete(l.clients, c.fd)
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	}
	unix.Close(c.fd)
	c.teardown()
}

// forget closes a client the loop never registered.
func (l *loop) forget(c *client) {
	c.closed = true
	unix.Close(c.fd)
	c.teardown()
}

// cron closes clients idle past the timeout (not subscribers, not ones
// waiting in a blocking command), as Redis's clientsCron does.
func (l *loop) cron(now time.Time) {
	d := l.s.cfg.IdleTimeout
	if d <= 0 {
		return
	}
	for _, c := range l.clients {
		if c.busy || msAt(now)-c.lastAt.Load() < d.Milliseconds() || c.isSubscriber() {
			continue
		}
		l.s.log.Debug("kv: idle connection closed", "client", c.id)
		l.close(c)
	}
}

func (l *loop) shutdown() {
	for _, c := range l.clients {
		l.close(c)
	}
	l.mu.Lock()
	ops := l.inbox
	l.inbox = nil
	l.done = true
	l.mu.Unlock()
	for _, op := range ops {
		if op.kind == opAdd {
			l.forget(op.c)
		}
	}
	unix.Close(l.epfd)
	unix.Close(l.efd)
}
