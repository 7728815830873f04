package cache

import (
	"fmt"
	"math"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Bloom is a Bloom filter of the keys that exist, against penetration: a
// Get of a key the filter has never seen answers ErrNotFound without
// asking the remote tier or the loader. Add every key as it is created
// (and all existing ones at start); a deleted key stays in the filter (a
// false positive costs one load). Safe for concurrent use: bits are set
// with atomic operations.
type Bloom struct {
	bits []atomic.Uint64
	m    uint64 // bits
	k    uint64 // hashes
}

// NewBloom sizes a filter for n keys at false-positive rate p (0 < p < 1).
func NewBloom(n int, p float64) (*Bloom, error) {
	if n <= 0 || p <= 0 || p >= 1 {
		return nil, fmt.Errorf("cache: bloom for %d keys at rate %v: want n > 0 and 0 < p < 1", n, p)
	}
	m := uint64(math.Ceil(-float64(n) * math.Log(p) / (math.Ln2 * math.Ln2)))
	m = max(64, (m+63)/64*64)
	k := uint64(math.Max(1, math.Round(float64(m)/float64(n)*math.Ln2)))
	return &Bloom{bits: make([]atomic.Uint64, m/64), m: m, k: k}, nil
}

// hashes is Kirsch–Mitzenmacher double hashing from one 64-bit hash.
func (b *Bloom) hashes(key string) (uint64, uint64) {
	h := xxhash.Sum64String(key)
	return h, h>>33 | h<<31 | 1
}

// Add records key.
func (b *Bloom) Add(key string) {
	h1, h2 := b.hashes(key)
	for i := range b.k {
		bit := (h1 + i*h2) % b.m
		w := &b.bits[bit/64]
		mask := uint64(1) << (bit % 64)
		if w.Load()&mask == 0 {
			w.Or(mask)
		}
	}
}

// MayContain is false only for a key never added.
func (b *Bloom) MayContain(key string) bool {
	h1, h2 := b.hashes(key)
	for i := range b.k {
		bit := (h1 + i*h2) % b.m
		if b.bits[bit/64].Load()&(uint64(1)<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}
