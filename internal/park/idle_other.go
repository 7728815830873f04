//go:build !linux

package park

import "net"

// idler is Linux-only (epoll); elsewhere connections are handed back to the
// HTTP server as soon as they are answered.
type idler struct{}

func newIdler(func(net.Conn)) *idler            { return nil }
func (d *idler) add(net.Conn) bool              { return false }
func (d *idler) onHangup(net.Conn, func()) bool { return false }
func (d *idler) unwatch(net.Conn)               {}
func (d *idler) close()                         {}
func (d *idler) len() int                       { return 0 }
