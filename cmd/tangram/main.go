// Command tangram is the Tangram platform: `tangram server` runs it, the
// other commands are its CLI client.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Ctrl-C or SIGTERM cancels whatever the command is doing: a request in
	// flight, a watch, a wait for a run. Long-running commands (server,
	// broker, proxy) shut down gracefully on it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
