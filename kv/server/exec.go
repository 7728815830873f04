package server

import (
	"math"
	"math/bits"
	"strconv"
	"time"
	"unsafe"

	"github.com/tangram-dev/tangram/kv/resp"
)

// ctx is what one command runs with: the shards it holds, the database,
// the time (read once per command, as Redis does), and the reply buffer.
type ctx struct {
	s      *Server
	c      *client
	db     int
	now    int64 // Unix ms
	locked uint64
	// touched records each key a write changes (with its size before), so
	// that the memory count, WATCH and blocked clients hear of it once the
	// command ends.
	touched []touch
	// prop holds the records this command adds to the append-only log,
	// each with its shard; nil records mean "the command as it came".
	prop    []propRec
	propAll bool // log the command itself (single-shard writes)
	loading bool // replaying the log: no expiry on read, nothing logged
	noLog   bool
	// memo is the last key found or made in this command: its entry
	// pointer stays valid until the key is removed (delete clears the
	// memo). SET would otherwise hash the key and walk its chain four
	// times (get, willWrite, upsert, finish).
	memo memo
	// script is the SHA1 of the script a native runs (for its errors).
	script string
	// selfInval holds invalidations for the client running the command
	// (nil: everything), sent after its reply.
	selfInval [][]byte
	selfAny   bool
}

type memo struct {
	sh  *shard
	db  int
	key string // a view of the caller's bytes: valid for this command only
	e   *entry
}

// lookup finds key in sh's table of x.db (nil when absent), through the memo.
func (x *ctx) lookup(sh *shard, db int, key string) *entry {
	if m := &x.memo; m.e != nil && m.sh == sh && m.db == db && m.key == key {
		return m.e
	}
	t := sh.table(db, false)
	if t == nil {
		return nil
	}
	e := t.find(key)
	if e != nil {
		x.memo = memo{sh: sh, db: db, key: key, e: e}
	}
	return e
}

type touch struct {
	sh     *shard
	db     int
	key    string
	before int64
	had    bool
}

type propRec struct {
	shard int
	args  [][]byte
}

func (x *ctx) out() *[]byte { return &x.c.out }

// Replies.
func (x *ctx) ok()               { x.c.out = append(x.c.out, "+OK\r\n"...) }
func (x *ctx) simple(s string)   { x.c.out = resp.AppendSimple(x.c.out, s) }
func (x *ctx) err(msg string)    { x.c.out = resp.AppendError(x.c.out, msg); x.c.lastErr = true }
func (x *ctx) int(n int64)       { x.c.out = resp.AppendInt(x.c.out, n) }
func (x *ctx) bulk(b []byte)     { x.c.out = resp.AppendBulk(x.c.out, b) }
func (x *ctx) bulkStr(s string)  { x.c.out = resp.AppendBulkString(x.c.out, s) }
func (x *ctx) null()             { x.c.out = resp.AppendNull(x.c.out, x.c.v3) }
func (x *ctx) nullArray()        { x.c.out = resp.AppendNullArray(x.c.out, x.c.v3) }
func (x *ctx) array(n int)       { x.c.out = resp.AppendArray(x.c.out, n) }
func (x *ctx) mapHdr(n int)      { x.c.out = resp.AppendMap(x.c.out, n, x.c.v3) }
func (x *ctx) setHdr(n int)      { x.c.out = resp.AppendSet(x.c.out, n, x.c.v3) }
func (x *ctx) double(f float64)  { x.c.out = resp.AppendDouble(x.c.out, f, x.c.v3) }
func (x *ctx) boolean(t bool)    { x.c.out = resp.AppendBool(x.c.out, t, x.c.v3) }
func (x *ctx) verbatim(s string) { x.c.out = resp.AppendVerbatim(x.c.out, s, x.c.v3) }
func (x *ctx) bulkOrNull(b []byte) {
	if b == nil {
		x.null()
		return
	}
	x.bulk(b)
}

// score replies with a sorted-set score: a double in RESP3, Redis 7.0's
// %.17g bulk string in RESP2.
func (x *ctx) score(f float64) {
	if x.c.v3 {
		x.double(f)
		return
	}
	x.bulk(fmtScore(f))
}

func fmtScore(f float64) []byte {
	var tmp [32]byte
	switch {
	case math.IsInf(f, 1):
		return []byte("inf")
	case math.IsInf(f, -1):
		return []byte("-inf")
	}
	return strconv.AppendFloat(tmp[:0], f, 'g', 17, 64)
}

// Common errors, worded as Redis words them.
const (
	errWrongType  = "WRONGTYPE Operation against a key holding the wrong kind of value"
	errSyntax     = "ERR syntax error"
	errNotInt     = "ERR value is not an integer or out of range"
	errNotFloat   = "ERR value is not a valid float"
	errOverflow   = "ERR increment or decrement would overflow"
	errNoSuchKey  = "ERR no such key"
	errIndexRange = "ERR index out of range"
)

func (x *ctx) shard(key []byte) (*shard, int) {
	i := shardOf(key)
	if x.locked&(1<<i) == 0 {
		panic("kv: shard of " + strconv.Quote(string(key)) + " used without its lock")
	}
	return &x.s.shards[i], i
}

// get returns key's live entry, or nil (expiring it lazily when its time
// has come). A key lives through the millisecond of its expiry: the clock
// is read in whole milliseconds, so "expired" is exp < now, never early.
func (x *ctx) get(key []byte) *entry {
	sh, _ := x.shard(key)
	e := x.lookup(sh, x.db, bstr(key))
	if e == nil {
		sh.misses++
		return nil
	}
	if e.exp != 0 && e.exp < x.now && !x.loading {
		x.expire(sh, key)
		sh.misses++
		return nil
	}
	sh.hits++
	e.lru = x.s.lruClock()
	return e
}

// getKind returns key's entry when it holds kind, nil when it is absent;
// wrong is true (and WRONGTYPE replied) when it holds another kind.
func (x *ctx) getKind(key []byte, kind uint8) (e *entry, wrong bool) {
	e = x.get(key)
	if e != nil && e.kind != kind {
		x.err(errWrongType)
		return nil, true
	}
	return e, false
}

// expire removes a key whose time has come and logs its deletion.
func (x *ctx) expire(sh *shard, key []byte) {
	x.s.stats.expired.Add(1)
	x.delete(key)
	x.prop = append(x.prop, propRec{shard: shardOf(key), args: [][]byte{[]byte("DEL"), key}})
}

// willWrite records that key is about to change (call it before the
// change, once per key per command).
func (x *ctx) willWrite(key []byte) {
	sh, _ := x.shard(key)
	for i := range x.touched {
		if x.touched[i].sh == sh && x.touched[i].db == x.db && x.touched[i].key == bstr(key) {
			return
		}
	}
	t := touch{sh: sh, db: x.db, key: bstr(key)}
	if e := x.lookup(sh, x.db, t.key); e != nil {
		t.before, t.had = e.size(t.key), true
	}
	x.touched = append(x.touched, t)
}

// create makes key (absent or to be replaced) hold a new value of kind.
func (x *ctx) create(key []byte, kind uint8) *entry {
	x.willWrite(key)
	sh, _ := x.shard(key)
	e := x.lookup(sh, x.db, bstr(key))
	created := false
	if e == nil {
		e, created = sh.table(x.db, true).upsert(bstr(key))
		x.memo = memo{sh: sh, db: x.db, key: bstr(key), e: e}
	}
	if created {
		sh.keys.Add(1)
	} else if e.exp != 0 {
		if v := sh.volatile(x.db, false); v != nil {
			v.remove(bstr(key))
		}
	}
	*e = entry{kind: kind, lru: x.s.lruClock()}
	switch kind {
	case kindHash:
		e.setObj(unsafe.Pointer(newHash()))
	case kindList:
		e.setObj(unsafe.Pointer(&listObj{}))
	case kindSet:
		e.setObj(unsafe.Pointer(newSet()))
	case kindZSet:
		e.setObj(unsafe.Pointer(newZSet()))
	}
	return e
}

// delete removes key; it reports whether it was there.
func (x *ctx) delete(key []byte) bool {
	sh, _ := x.shard(key)
	t := sh.table(x.db, false)
	if t == nil {
		return false
	}
	if x.lookup(sh, x.db, bstr(key)) == nil {
		return false
	}
	x.willWrite(key)
	x.memo = memo{}
	e, _ := t.remove(bstr(key))
	sh.keys.Add(-1)
	if e.exp != 0 {
		if v := sh.volatile(x.db, false); v != nil {
			v.remove(bstr(key))
		}
	}
	return true
}

// setExp sets or clears (ms 0) key's expiry.
func (x *ctx) setExp(key []byte, e *entry, ms int64) {
	sh, _ := x.shard(key)
	if ms == 0 {
		if e.exp != 0 {
			if v := sh.volatile(x.db, false); v != nil {
				v.remove(bstr(key))
			}
		}
		e.exp = 0
		return
	}
	if e.exp == 0 {
		sh.volatile(x.db, true).upsert(bstr(key))
	}
	e.exp = ms
}

// lockMask locks the shards in mask in ascending order.
func (s *Server) lockMask(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		s.shards[bits.TrailingZeros64(m)].mu.Lock()
	}
}

func (s *Server) unlockMask(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		s.shards[bits.TrailingZeros64(m)].mu.Unlock()
	}
}

// finish runs, with the shards still held, what a write command's changes
// set off: the memory and key counts, WATCH invalidation, blocked clients'
// wake-ups and the append-only log.
func (x *ctx) finish(spec *cmdSpec, args [][]byte) {
	for _, t := range x.touched {
		after := int64(0)
		e := x.lookup(t.sh, t.db, t.key)
		if e != nil {
			after = e.size(t.key)
		}
		t.sh.mem.Add(after - t.before)
		if x.s.trackers.active.Load() > 0 {
			x.invalidate(t.sh, t.db, t.key)
		}
		if t.sh.watched != nil {
			if ws := t.sh.watched[wkey{t.db, t.key}]; len(ws) > 0 {
				for _, c := range ws {
					c.watchDirty.Store(true)
				}
			}
		}
		if e != nil && e.kind == kindList && t.sh.waiters != nil {
			x.s.signalWaiters(t.sh, wkey{t.db, t.key})
		}
	}
	if x.loading || x.noLog || x.s.aof == nil {
		return
	}
	for _, p := range x.prop {
		x.s.aof.append(x.db, p.shard, p.args)
	}
	if x.propAll && len(x.touched) > 0 {
		x.s.aof.append(x.db, shardOf(args[1]), args)
	}
}

func (x *ctx) reset() {
	x.memo = memo{}
	x.touched = x.touched[:0]
	x.prop = x.prop[:0]
	x.propAll = false
	x.locked = 0
}

// nowMs is the server's clock in Unix milliseconds: the wall clock read
// once at start, advanced by the monotonic clock. A step of the wall clock
// (NTP, a VM resuming) cannot make a relative expiry (PX, EXPIRE) fire
// early, and the clock never goes back; absolute times (PXAT, EXPIREAT)
// are held against it, which differs from the wall clock by the
// adjustments made since the start.
func nowMs() int64 { return msAt(time.Now()) }

var clockBase = time.Now()

// msAt is t on the server's clock (t must carry a monotonic reading, as
// time.Now's does).
func msAt(t time.Time) int64 { return clockBase.Add(t.Sub(clockBase)).UnixMilli() }
