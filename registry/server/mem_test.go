package server

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"

	"github.com/tangram-dev/tangram/registry"
)

// TestMemoryPerInstance reports the heap an instance costs (live bytes
// after GC) — the figure the benchmark's RSS reading follows.
func TestMemoryPerInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100k instances")
	}
	r, _ := newTestRegistry(t, Config{})
	ctx := context.Background()
	const n = 100000
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range n {
		in := registry.Instance{Key: registry.Key{Service: fmt.Sprintf("svc-%d", i/100)}, Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			Port: 8080, Weight: 100, Enabled: true, Ephemeral: true, Metadata: map[string]string{"version": "1.0"}}
		if _, err := r.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	per := float64(m1.HeapAlloc-m0.HeapAlloc) / n
	t.Logf("%.0f live heap bytes per instance", per)
	if per > 300 {
		t.Errorf("%.0f bytes per instance; the budget is 300 (under 512 B of RSS with the collector's headroom)", per)
	}
	if f := os.Getenv("MEMPROF"); f != "" {
		w, _ := os.Create(f)
		pprof.WriteHeapProfile(w)
		w.Close()
	}
	runtime.KeepAlive(r)
}
