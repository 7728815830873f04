package server

import (
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"strings"
	"unsafe"
)

// dict is the hash table under every key space and every hash, set and
// sorted set: Redis's dict, in Go. Chained buckets in a power-of-two
// table; when it grows or shrinks a second table is built and the buckets
// move over a few at a time, on each write and in the background sweep
// (incremental rehash: no operation ever pays for a whole table); SCAN uses
// the reverse-binary cursor, so a key present for a whole scan is returned
// at least once even while the table is resized. It is not safe for
// concurrent use: its owner's lock guards it.
type dict[V any] struct {
	t         [2][]*node[V]
	used      [2]int
	rehashIdx int // next bucket of t[0] to move; -1 when not rehashing
}

type node[V any] struct {
	key  string
	val  V
	next *node[V]
}

var hashSeed = maphash.MakeSeed()

// bstr views b as a string without copying, for lookups only: the string
// must not outlive b's contents (the dict clones keys it keeps).
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// hashKey is the one hash of keys and members (the shard takes its low
// bits, a table its higher ones).
func hashKey(k string) uint64 { return maphash.String(hashSeed, k) }

const dictShift = 6 // low bits pick the shard; tables index with the rest

func newDict[V any]() *dict[V] { return &dict[V]{rehashIdx: -1} }

func (d *dict[V]) len() int { return d.used[0] + d.used[1] }

func (d *dict[V]) rehashing() bool { return d.rehashIdx >= 0 }

func bucket(h uint64, size int) int { return int((h >> dictShift) & uint64(size-1)) }

// find returns a pointer to k's value, or nil.
func (d *dict[V]) find(k string) *V {
	if d.len() == 0 {
		return nil
	}
	h := hashKey(k)
	for t := 0; t < 2; t++ {
		tab := d.t[t]
		if len(tab) == 0 {
			break
		}
		for n := tab[bucket(h, len(tab))]; n != nil; n = n.next {
			if n.key == k {
				return &n.val
			}
		}
		if !d.rehashing() {
			break
		}
	}
	return nil
}

// upsert returns a pointer to k's value, adding a zero value when k is new
// (created reports which).
func (d *dict[V]) upsert(k string) (v *V, created bool) {
	if d.rehashing() {
		d.rehashStep(1)
	}
	h := hashKey(k)
	for t := 0; t < 2; t++ {
		tab := d.t[t]
		if len(tab) == 0 {
			break
		}
		for n := tab[bucket(h, len(tab))]; n != nil; n = n.next {
			if n.key == k {
				return &n.val, false
			}
		}
		if !d.rehashing() {
			break
		}
	}
	d.growIfNeeded()
	t := 0
	if d.rehashing() {
		t = 1
	}
	tab := d.t[t]
	i := bucket(h, len(tab))
	n := &node[V]{key: strings.Clone(k), next: tab[i]}
	tab[i] = n
	d.used[t]++
	return &n.val, true
}

// remove deletes k, returning its value.
func (d *dict[V]) remove(k string) (V, bool) {
	var zero V
	if d.len() == 0 {
		return zero, false
	}
	if d.rehashing() {
		d.rehashStep(1)
	}
	h := hashKey(k)
	for t := 0; t < 2; t++ {
		tab := d.t[t]
		if len(tab) == 0 {
			break
		}
		i := bucket(h, len(tab))
		var prev *node[V]
		for n := tab[i]; n != nil; prev, n = n, n.next {
			if n.key != k {
				continue
			}
			if prev == nil {
				tab[i] = n.next
			} else {
				prev.next = n.next
			}
			d.used[t]--
			v := n.val
			n.next = nil
			return v, true
		}
		if !d.rehashing() {
			break
		}
	}
	return zero, false
}

func (d *dict[V]) growIfNeeded() {
	if d.rehashing() {
		return
	}
	if len(d.t[0]) == 0 {
		d.t[0] = make([]*node[V], 4)
		return
	}
	if d.used[0] >= len(d.t[0]) {
		d.resize(d.used[0] * 2)
	}
}

// shrinkIfSparse starts a shrink when the table is under a tenth full (the
// background sweep calls it, as Redis's cron does).
func (d *dict[V]) shrinkIfSparse() {
	if d.rehashing() || len(d.t[0]) <= 4 || d.used[0]*10 >= len(d.t[0]) {
		return
	}
	d.resize(max(d.used[0], 4))
}

// resize starts moving to a table of the next power of two ≥ n.
func (d *dict[V]) resize(n int) {
	size := 4
	if n > 4 {
		size = 1 << bits.Len(uint(n-1))
	}
	if size == len(d.t[0]) {
		return
	}
	d.t[1] = make([]*node[V], size)
	d.used[1] = 0
	d.rehashIdx = 0
}

// rehashStep moves up to n buckets (visiting at most 10n empty ones) from
// the old table to the new; it reports whether rehashing goes on.
func (d *dict[V]) rehashStep(n int) bool {
	if !d.rehashing() {
		return false
	}
	empty := n * 10
	old, nt := d.t[0], d.t[1]
	for ; n > 0 && d.used[0] > 0; n-- {
		for old[d.rehashIdx] == nil {
			d.rehashIdx++
			if empty--; empty == 0 {
				return true
			}
		}
		for e := old[d.rehashIdx]; e != nil; {
			next := e.next
			i := bucket(hashKey(e.key), len(nt))
			e.next = nt[i]
			nt[i] = e
			d.used[0]--
			d.used[1]++
			e = next
		}
		old[d.rehashIdx] = nil
		d.rehashIdx++
	}
	if d.used[0] == 0 {
		d.t[0], d.t[1] = d.t[1], nil
		d.used[0], d.used[1] = d.used[1], 0
		d.rehashIdx = -1
		return false
	}
	return true
}

// each calls fn for every entry until fn returns false. fn must not
// change the dict.
func (d *dict[V]) each(fn func(k string, v *V) bool) bool {
	for t := 0; t < 2; t++ {
		for _, n := range d.t[t] {
			for ; n != nil; n = n.next {
				if !fn(n.key, &n.val) {
					return false
				}
			}
		}
	}
	return true
}

// random returns a random entry (nil when empty): a random non-empty
// bucket, then a random element of its chain, as Redis's dictGetRandomKey.
func (d *dict[V]) random() *node[V] {
	if d.len() == 0 {
		return nil
	}
	for {
		var n *node[V]
		if d.rehashing() {
			s0 := len(d.t[0]) - d.rehashIdx
			i := rand.IntN(s0 + len(d.t[1]))
			if i < s0 {
				n = d.t[0][d.rehashIdx+i]
			} else {
				n = d.t[1][i-s0]
			}
		} else {
			n = d.t[0][rand.IntN(len(d.t[0]))]
		}
		if n == nil {
			continue
		}
		c := 0
		for e := n; e != nil; e = e.next {
			c++
		}
		for k := rand.IntN(c); k > 0; k-- {
			n = n.next
		}
		return n
	}
}

// sample calls fn for up to count entries taken from consecutive buckets
// starting at a random one (Redis's dictGetSomeKeys: cheap, good enough for
// eviction and expiry sampling).
func (d *dict[V]) sample(count int, fn func(n *node[V])) {
	if d.len() == 0 || count <= 0 {
		return
	}
	count = min(count, d.len())
	tables := 1
	if d.rehashing() {
		tables = 2
	}
	maxSize := len(d.t[0])
	if tables == 2 && len(d.t[1]) > maxSize {
		maxSize = len(d.t[1])
	}
	i := rand.IntN(maxSize)
	got, emptyRun, steps := 0, 0, count*10
	for got < count && steps > 0 {
		steps--
		for t := 0; t < tables; t++ {
			tab := d.t[t]
			if t == 0 && d.rehashing() && i < d.rehashIdx {
				continue // moved already
			}
			if i >= len(tab) {
				continue
			}
			n := tab[i]
			if n == nil {
				emptyRun++
				if emptyRun >= 5 && emptyRun > count {
					i = rand.IntN(maxSize)
					emptyRun = 0
				}
				continue
			}
			emptyRun = 0
			for ; n != nil && got < count; n = n.next {
				fn(n)
				got++
			}
		}
		i = (i + 1) & (maxSize - 1)
	}
}

// scan calls fn for the entries of the bucket(s) at cursor and returns the
// next cursor (0 when the scan is complete): Redis's reverse-binary
// iteration, which returns every element present for the whole scan at
// least once across resizes.
func (d *dict[V]) scan(cursor uint64, fn func(k string, v *V)) uint64 {
	if d.len() == 0 {
		return 0
	}
	emit := func(n *node[V]) {
		for ; n != nil; n = n.next {
			fn(n.key, &n.val)
		}
	}
	if !d.rehashing() {
		m0 := uint64(len(d.t[0]) - 1)
		emit(d.t[0][cursor&m0])
		cursor |= ^m0
		cursor = bits.Reverse64(cursor)
		cursor++
		return bits.Reverse64(cursor)
	}
	small, large := d.t[0], d.t[1]
	if len(small) > len(large) {
		small, large = large, small
	}
	m0, m1 := uint64(len(small)-1), uint64(len(large)-1)
	emit(small[cursor&m0])
	for {
		emit(large[cursor&m1])
		cursor |= ^m1
		cursor = bits.Reverse64(cursor)
		cursor++
		cursor = bits.Reverse64(cursor)
		if cursor&(m0^m1) == 0 {
			break
		}
	}
	return cursor
}
