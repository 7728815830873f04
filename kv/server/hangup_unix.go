//go:build unix

package server

import (
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// watchHangup, in goroutine mode, watches a client's socket while its
// goroutine waits in a blocking command and reads nothing: a peer that goes
// away ends the client (as Redis notices the EOF), so it stops waiting and
// takes nothing pushed afterwards. It peeks, consuming nothing; once the
// peer sends more (pipelined commands) it stops watching. The returned
// function stops it.
func (c *client) watchHangup() (stop func()) {
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return func() {}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var b [1]byte
		gone := false
		rc.Read(func(fd uintptr) bool {
			select {
			case <-done:
				return true
			default:
			}
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err == unix.EAGAIN || err == unix.EINTR {
				return false
			}
			gone = n == 0 && err == nil
			return true
		})
		if gone {
			c.kill() // (not inside rc.Read: closing waits for it)
		}
	}()
	return func() {
		close(done)
		c.conn.SetReadDeadline(time.Unix(1, 0)) // wakes rc.Read
		wg.Wait()
		c.conn.SetReadDeadline(time.Time{})
	}
}
