// Package procstat reads a process's memory figures from /proc, for the
// benchmarks that report each side's memory.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MiB returns a memory field of /proc/<pid>/status ("VmRSS", "VmHWM", …) in
// MiB, or 0 when it cannot be read (not Linux, process gone).
func MiB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
