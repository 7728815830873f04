package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every goroutine the servers and clients started has
// stopped once the tests are done.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
