// Package faults sizes the robustness tests: the kill -9, restart, pause
// and partition scenarios that run against real servers. `make test` runs
// each in a short version; `make robustness` (TANGRAM_ROBUSTNESS=long)
// runs the long one. Each test prints its figures with Report, so that a
// run is a measurement, not only a pass.
package faults

import (
	"os"
	"testing"
)

// Long reports whether the long versions were asked for
// (TANGRAM_ROBUSTNESS=long, as `make robustness` sets).
func Long() bool { return os.Getenv("TANGRAM_ROBUSTNESS") == "long" }

// Rounds is short in `make test`, long under `make robustness`.
func Rounds(short, long int) int {
	if Long() {
		return long
	}
	return short
}

// Report logs a scenario's figures on one line, "robustness: name k=v …",
// greppable from `go test -v` output.
func Report(t testing.TB, name string, kv ...any) {
	t.Helper()
	args := append([]any{"robustness: " + name}, kv...)
	t.Log(args...)
}
