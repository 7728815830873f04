package store

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a Store starts ends on Close (the kill -9 child never
// returns, so it is not checked).
func TestMain(m *testing.M) {
	if os.Getenv("MQSTORE_CHILD_DIR") != "" {
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
