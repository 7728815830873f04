// Package port finds free loopback ports for tests that must name an
// address before the server that listens on it starts (a child process, a
// config file, a restart on the same address).
package port

import (
	"net"
	"sync"
	"testing"
)

var (
	mu        sync.Mutex
	handedOut = map[string]bool{}
)

// Free returns a 127.0.0.1 address no one listens on right now and not
// handed out before in this test process: a port closed here can come
// back from the next Listen, and two flags of one server given the same
// port would make one of its listeners fail. Start the server soon: the
// kernel may give the port to someone else.
func Free(t testing.TB) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("port: %v", err)
		}
		addr := ln.Addr().String()
		ln.Close()
		mu.Lock()
		dup := handedOut[addr]
		handedOut[addr] = true
		mu.Unlock()
		if !dup {
			return addr
		}
	}
	t.Fatal("port: no loopback port that was not handed out already")
	return ""
}
