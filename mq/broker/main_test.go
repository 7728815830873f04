package broker

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a broker starts ends on Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
