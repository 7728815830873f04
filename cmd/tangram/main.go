// Command tangram is the Tangram platform: `tangram server` runs it, the
// other commands are its CLI client.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tangram-dev/tangram/cmd/internal/containercli"
	"github.com/tangram-dev/tangram/internal/errcode"
)

func main() {
	// Ctrl-C or SIGTERM cancels whatever the command is doing: a request in
	// flight, a watch, a wait for a run. Long-running commands (server,
	// broker, proxy) shut down gracefully on it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root, g := newRootWith()
	err := root.ExecuteContext(ctx)
	stop()
	var code containercli.ExitCode
	if errors.As(err, &code) {
		os.Exit(int(code)) // the container's own exit code; it said why
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", explain(err, g))
		os.Exit(1)
	}
}

// explain turns the errors a newcomer meets first into ones that say what
// to do: no server listening, no token set.
func explain(err error, g *globals) string {
	msg := err.Error()
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && errors.Is(err, syscall.ECONNREFUSED) {
		addr := g.server
		if op.Addr != nil {
			addr = op.Addr.String()
		}
		return fmt.Sprintf("no Tangram server at %s (connection refused): start one with `tangram server`, or point --server (TANGRAM_SERVER) at one\n  (%s)", addr, msg)
	}
	if code, ok := errcode.Of(err); ok && code == errcode.Unavailable && strings.Contains(msg, "connection refused") {
		return fmt.Sprintf("no Tangram server answered (connection refused): start one with `tangram server`, or point --server / --rpc-server at one\n  (%s)", msg)
	}
	if code, ok := errcode.Of(err); ok && code == errcode.Unauthorized && g.token == "" {
		return msg + "\n  no token was given: set TANGRAM_TOKEN (or --token) to an API token — the server prints the admin's on its first start"
	}
	return msg
}
