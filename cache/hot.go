package cache

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// HotKey is a key the detector counts among the most read.
type HotKey struct {
	Key string `json:"key"`
	// Count is the sketch's estimate of its recent reads.
	Count uint32 `json:"count"`
}

// hotKeys finds the most read keys: a count-min sketch of 4 rows counts
// reads; a key whose estimate beats the smallest of the current top K
// replaces it. Every 10 × width reads all counts halve, so the top
// follows what is hot now.
type hotKeys struct {
	rows  [4][]atomic.Uint32
	mask  uint64
	seen  atomic.Uint64
	reset uint64

	mu     sync.Mutex
	k      int
	top    map[string]uint32
	minTop atomic.Uint32 // smallest count in top once it is full
}

func newHotKeys(k, width int) *hotKeys {
	w := 1
	for w < width {
		w <<= 1
	}
	h := &hotKeys{mask: uint64(w - 1), reset: uint64(10 * w), k: k, top: make(map[string]uint32, k)}
	for i := range h.rows {
		h.rows[i] = make([]atomic.Uint32, w)
	}
	return h
}

// observe counts w reads of key and returns its estimate.
func (h *hotKeys) observe(key string, w uint32) uint32 {
	x := xxhash.Sum64String(key)
	est := uint32(1<<32 - 1)
	for i := range h.rows {
		idx := (x >> (16 * uint(i))) ^ (x >> (7 + 9*uint(i)))
		c := h.rows[i][idx&h.mask].Add(w)
		est = min(est, c)
	}
	if n := h.seen.Add(uint64(w)); n/h.reset != (n-uint64(w))/h.reset {
		h.halve()
	}
	// A key already at the top keeps beating the smallest count: offer
	// it only at every 8th weight step, so hot keys read on many cores do
	// not meet on the mutex at each sampled hit.
	if est > h.minTop.Load() && (w == 1 || (est/w)%8 == 0) {
		h.offer(key, est)
	}
	return est
}

func (h *hotKeys) halve() {
	for i := range h.rows {
		for j := range h.rows[i] {
			c := &h.rows[i][j]
			c.Store(c.Load() / 2)
		}
	}
	h.mu.Lock()
	for k, v := range h.top {
		h.top[k] = v / 2
	}
	h.minTop.Store(0)
	h.mu.Unlock()
}

func (h *hotKeys) offer(key string, est uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.top[key]; ok || len(h.top) < h.k {
		h.top[key] = est
		if len(h.top) < h.k {
			return
		}
	} else {
		minK, minV := "", uint32(1<<32-1)
		for k, v := range h.top {
			if v < minV {
				minK, minV = k, v
			}
		}
		if est <= minV {
			h.minTop.Store(minV)
			return
		}
		delete(h.top, minK)
		h.top[key] = est
	}
	minV := uint32(1<<32 - 1)
	for _, v := range h.top {
		minV = min(minV, v)
	}
	h.minTop.Store(minV)
}

// isHot reports whether key is in the top.
func (h *hotKeys) isHot(key string) bool {
	h.mu.Lock()
	_, ok := h.top[key]
	h.mu.Unlock()
	return ok
}

// list returns the top, most read first.
func (h *hotKeys) list() []HotKey {
	h.mu.Lock()
	out := make([]HotKey, 0, len(h.top))
	for k, v := range h.top {
		out = append(out, HotKey{k, v})
	}
	h.mu.Unlock()
	slices.SortFunc(out, func(a, b HotKey) int {
		if a.Count != b.Count {
			return int(b.Count) - int(a.Count)
		}
		if a.Key < b.Key {
			return -1
		}
		return 1
	})
	return out
}
