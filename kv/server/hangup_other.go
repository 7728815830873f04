//go:build !unix

package server

// watchHangup needs MSG_PEEK; without it a blocked client's departure is
// noticed when its wait ends.
func (c *client) watchHangup() (stop func()) { return func() {} }
