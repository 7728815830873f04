package server

import (
	"testing"

	"go.uber.org/goleak"
)

// memberlist's Shutdown does not wait for a probe already in flight; that
// goroutine ends by itself within the probe timeout (hundreds of
// milliseconds). Everything the registry starts is waited for on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}
