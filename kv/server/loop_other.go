//go:build !linux

package server

import (
	"errors"
	"net"
)

// Event loops are Linux-only (epoll); elsewhere every connection has its
// own goroutine.
const loopsSupported = false

type loop struct{}

type loopOp struct {
	kind uint8
	c    *client
}

const (
	opAdd = iota
	opFlush
	opResume
	opKill
)

func newLoop(*Server) (*loop, error)                          { return nil, errors.New("kv: event loops need Linux") }
func (l *loop) post(loopOp) bool                              { return false }
func (l *loop) wake()                                         {}
func (l *loop) run()                                          {}
func (l *loop) adopt(net.Conn) (*client, error)               { return nil, errors.New("kv: event loops need Linux") }
func (l *loop) takeOut(*client)                               {}
func (l *loop) markDirty(*client)                             {}
func (l *loop) runAside(c *client, spec *cmdSpec, a [][]byte) {}

func (l *loop) shutdown()      {}
func (l *loop) forget(*client) {}
