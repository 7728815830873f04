package server

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// The key space is split into shards by the low bits of each key's hash;
// a shard's mutex guards its tables (one per database) and everything
// hanging off them. A command locks the shards of its keys, in ascending
// order, for its whole run: it is atomic, and commands on different shards
// run in parallel (Dragonfly's shared-nothing idea with locks instead of
// message passing). MULTI/EXEC locks the shards of every queued key at
// once.
const (
	shardBits = 6
	numShards = 1 << shardBits
)

// Value kinds.
const (
	kindString uint8 = iota + 1
	kindHash
	kindList
	kindSet
	kindZSet
)

func kindName(k uint8) string {
	switch k {
	case kindString:
		return "string"
	case kindHash:
		return "hash"
	case kindList:
		return "list"
	case kindSet:
		return "set"
	case kindZSet:
		return "zset"
	}
	return "none"
}

// entry is one key's value: 32 bytes, so that a key's table node (key,
// entry, next) fits the 64-byte size class. A string keeps its bytes'
// address, length and capacity (a slice header cut to 16 bytes: strings
// are at most 512 MB); the other kinds keep a pointer to their structure,
// its type given by kind (str, hash, list, set and zset read them).
type entry struct {
	p    unsafe.Pointer // kindString: the bytes; else *hashObj, *listObj, *setObj or *zsetObj
	n, c uint32         // kindString: length and capacity
	exp  int64          // expiry, Unix milliseconds; 0 = none
	lru  uint32
	kind uint8
	lfu  uint8
}

// str is a string's bytes (never nil: an empty string is an empty slice).
func (e *entry) str() []byte {
	if e.p == nil {
		return []byte{}
	}
	return unsafe.Slice((*byte)(e.p), e.c)[:e.n]
}

// setStr makes b the string's bytes (the entry keeps b's memory).
func (e *entry) setStr(b []byte) {
	e.p, e.n, e.c = unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b)), uint32(cap(b))
}

func (e *entry) setObj(p unsafe.Pointer) { e.p = p }

func (e *entry) hash() *hashObj { return (*hashObj)(e.p) }
func (e *entry) list() *listObj { return (*listObj)(e.p) }
func (e *entry) set() *setObj   { return (*setObj)(e.p) }
func (e *entry) zset() *zsetObj { return (*zsetObj)(e.p) }

type shard struct {
	mu   sync.Mutex
	dbs  []*dict[entry]    // one table per database, made on first write
	vol  []*dict[struct{}] // keys with an expiry, per database (the active sampler's pool)
	mem  atomic.Int64      // estimated bytes of keys and values
	keys atomic.Int64
	// keyspace hits and misses of reads, counted per shard (under its lock)
	hits, misses int64

	watched  map[wkey][]*client            // WATCHed keys of this shard
	waiters  map[wkey][]*waiter            // clients blocked on a list key (BLPOP …)
	tracked  map[wkey]map[*client]struct{} // CLIENT TRACKING: who read each key (tracking.go)
	trackedN atomic.Int64
}

type wkey struct {
	db  int
	key string
}

func shardOf(key []byte) int { return int(hashKey(bstr(key)) & (numShards - 1)) }

func (sh *shard) table(db int, create bool) *dict[entry] {
	t := sh.dbs[db]
	if t == nil && create {
		t = newDict[entry]()
		sh.dbs[db] = t
	}
	return t
}

func (sh *shard) volatile(db int, create bool) *dict[struct{}] {
	t := sh.vol[db]
	if t == nil && create {
		t = newDict[struct{}]()
		sh.vol[db] = t
	}
	return t
}

// entrySize estimates the memory a string key holds (the collections keep
// their own count): table node, key and value bytes.
func strSize(key string, v []byte) int64 { return int64(96 + len(key) + cap(v)) }

func (e *entry) size(key string) int64 {
	switch e.kind {
	case kindString:
		return strSize(key, e.str())
	case kindHash:
		return int64(96+len(key)) + e.hash().mem
	case kindList:
		return int64(96+len(key)) + e.list().mem
	case kindSet:
		return int64(96+len(key)) + e.set().mem
	case kindZSet:
		return int64(96+len(key)) + e.zset().mem
	}
	return 0
}
