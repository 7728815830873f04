//go:build linux

package park

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// idler holds answered keep-alive connections until their client sends
// the next request, without a goroutine each: one epoll set, watched by
// one goroutine, says when a connection turns readable (or its peer hangs
// up), and only then is the connection handed to the HTTP server. Handing
// thousands of connections back to net/http right after a fan-out costs
// as much CPU as the fan-out itself; this moves that cost to when each
// client actually comes back.
//
// A connection is removed from the set (EPOLL_CTL_DEL) before it is handed
// over or closed, while park still owns it, so a descriptor number reused
// later can never be deleted by mistake.
type idler struct {
	epfd    int
	handoff func(net.Conn)

	mu     sync.Mutex
	conns  map[int32]entry
	closed bool

	done chan struct{}
	wg   sync.WaitGroup
}

func newIdler(handoff func(net.Conn)) *idler {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil // park then hands connections back at once
	}
	d := &idler{epfd: epfd, handoff: handoff, conns: map[int32]entry{}, done: make(chan struct{})}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.loop()
	}()
	return d
}

func fdOf(c net.Conn) (int, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, false
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, false
	}
	return fd, fd >= 0
}

// entry is a connection in the set and what to do when it has an event:
// nil hands it to the HTTP server (an answered connection whose client
// sent its next request); otherwise the function is called (a parked
// watch whose client hung up).
type entry struct {
	c  net.Conn
	fn func()
}

// add keeps c until it turns readable; false means the caller must hand it
// over itself.
func (d *idler) add(c net.Conn) bool {
	return d.watch(c, unix.EPOLLIN|unix.EPOLLRDHUP, nil)
}

// onHangup calls fn (once, from the idler's goroutine) if c's peer closes
// or resets the connection before unwatch.
func (d *idler) onHangup(c net.Conn, fn func()) bool {
	return d.watch(c, unix.EPOLLRDHUP, fn)
}

func (d *idler) watch(c net.Conn, events uint32, fn func()) bool {
	if d == nil {
		return false
	}
	fd, ok := fdOf(c)
	if !ok {
		return false
	}
	d.mu.Lock()
	if _, busy := d.conns[int32(fd)]; busy || d.closed {
		d.mu.Unlock()
		return false // never two registrations of one descriptor
	}
	d.conns[int32(fd)] = entry{c: c, fn: fn}
	d.mu.Unlock()
	ev := unix.EpollEvent{Events: events | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		d.mu.Lock()
		if e, ok := d.conns[int32(fd)]; ok && e.c == c {
			delete(d.conns, int32(fd))
		}
		d.mu.Unlock()
		return false
	}
	return true
}

// unwatch takes c out of the set (if it is there) before its owner writes
// to, hands over or closes it.
func (d *idler) unwatch(c net.Conn) {
	if d == nil {
		return
	}
	fd, ok := fdOf(c)
	if !ok {
		return
	}
	d.mu.Lock()
	e, ok := d.conns[int32(fd)]
	if ok && e.c == c {
		delete(d.conns, int32(fd))
	}
	d.mu.Unlock()
	if ok && e.c == c {
		_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// take removes the entry of fd from the set, if it is still there.
func (d *idler) take(fd int32) (entry, bool) {
	d.mu.Lock()
	e, ok := d.conns[fd]
	delete(d.conns, fd)
	d.mu.Unlock()
	if ok {
		_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	}
	return e, ok
}

func (d *idler) loop() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(d.epfd, events, 100)
		select {
		case <-d.done:
			return
		default:
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			e, ok := d.take(events[i].Fd)
			switch {
			case !ok:
			case e.fn != nil:
				e.fn()
			default:
				d.handoff(e.c)
			}
		}
	}
}

// close stops the loop and closes every connection still idle (to their
// clients they are idle keep-alive connections, which a server may close).
func (d *idler) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.mu.Unlock()
	close(d.done)
	d.wg.Wait()
	d.mu.Lock()
	for fd, e := range d.conns {
		_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		if e.fn == nil {
			e.c.Close() // idle keep-alive: parked watches are their owners' to close
		}
		delete(d.conns, fd)
	}
	d.mu.Unlock()
	_ = unix.Close(d.epfd)
}

// len counts the idle answered connections.
func (d *idler) len() int {
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, e := range d.conns {
		if e.fn == nil {
			n++
		}
	}
	return n
}
