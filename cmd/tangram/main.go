// Command tangram is the Tangram platform: `tangram server` runs it, the
// other commands are its CLI client.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
