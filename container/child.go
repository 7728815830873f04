package container

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// child is a container process this process forked itself (the launch
// without an init). It is not an *os.Process: os.FindProcess probes the
// kernel's pidfd support the first time a program calls it by forking a
// throwaway child — a second fork in every one-shot runtime process.
// Signals go through the pidfd the fork returned, so a signal never
// reaches another process that reused the PID after the wait.
type child struct {
	pid int

	mu    sync.Mutex
	pidfd int // -1: none (closed after the wait, or none given)
	done  bool

	waited sync.Once
	ws     unix.WaitStatus
	err    error
}

func newChild(pid, pidfd int) *child { return &child{pid: pid, pidfd: pidfd} }

// Kill sends SIGKILL; after the wait it does nothing.
func (c *child) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil
	}
	var err error
	if c.pidfd >= 0 {
		err = unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
	} else {
		err = unix.Kill(c.pid, unix.SIGKILL)
	}
	if errors.Is(err, unix.ESRCH) {
		return nil // exited, not yet waited for
	}
	return err
}

// Wait waits for the process to exit (once; every caller gets the
// result) and releases its pidfd.
func (c *child) Wait() (unix.WaitStatus, error) {
	c.waited.Do(func() {
		for {
			_, err := unix.Wait4(c.pid, &c.ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				c.err = fmt.Errorf("container: wait for %d: %w", c.pid, err)
			}
			break
		}
		c.mu.Lock()
		c.done = true
		if c.pidfd >= 0 {
			unix.Close(c.pidfd)
			c.pidfd = -1
		}
		c.mu.Unlock()
	})
	return c.ws, c.err
}
