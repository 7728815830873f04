package procstat

import (
	"os"
	"testing"
)

func TestOwnMemory(t *testing.T) {
	if MiB(os.Getpid(), "VmRSS") <= 0 || MiB(os.Getpid(), "VmHWM") <= 0 {
		t.Fatal("no RSS for this process")
	}
	if MiB(os.Getpid(), "NoSuchField") != 0 || MiB(-1, "VmRSS") != 0 {
		t.Fatal("want 0 for what cannot be read")
	}
}
