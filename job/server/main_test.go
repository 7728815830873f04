package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Servers, schedulers and executors stop every goroutine they start on
// Close (memberlist's in-flight probe, from the server's registry, ends by
// itself within its timeout).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}
