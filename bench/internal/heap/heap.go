// Package heap reads a Go process's live heap after a forced garbage
// collection from its net/http/pprof listener, so that memory per item is
// measured the same way for every side of a benchmark, whatever its GOGC
// and wherever its collector happened to be.
package heap

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Live asks the process serving pprof at addr to collect garbage and
// returns its heap in use afterwards (runtime.MemStats.HeapAlloc), in bytes.
func Live(addr string) (float64, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, fmt.Errorf("heap: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("heap: %s from %s", resp.Status, addr)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("heap: %w", err)
	}
	return 0, fmt.Errorf("heap: no HeapAlloc in %s's heap profile", addr)
}
