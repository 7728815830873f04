package server

import (
	"math"
	"strconv"
	"unsafe"
)

func hashCommands() []*cmdSpec {
	return []*cmdSpec{
		key1("hset", -4, w, cmdHSet),
		key1("hmset", -4, w, cmdHSet),
		key1("hsetnx", 4, w, cmdHSetNX),
		key1("hget", 3, ro, cmdHGet),
		key1("hmget", -3, ro, cmdHMGet),
		key1("hdel", -3, wd, removeCmd[*hashObj](kindHash)),
		key1("hlen", 2, ro, countCmd[*hashObj](kindHash)),
		key1("hstrlen", 3, ro, cmdHStrlen),
		key1("hexists", 3, ro, cmdHExists),
		key1("hgetall", 2, ro, func(x *ctx, a [][]byte) { hashDump(x, a, true, true) }),
		key1("hkeys", 2, ro, func(x *ctx, a [][]byte) { hashDump(x, a, true, false) }),
		key1("hvals", 2, ro, func(x *ctx, a [][]byte) { hashDump(x, a, false, true) }),
		key1("hincrby", 4, w, cmdHIncrBy),
		key1("hincrbyfloat", 4, w|flagCustomProp, cmdHIncrByFloat),
		key1("hscan", -3, ro, cmdHScan),
	}
}

func (x *ctx) hash(key []byte, create bool) (*hashObj, bool) {
	return collection[*hashObj](x, key, kindHash, create)
}

// sized is a collection that counts its elements; removable one that
// removes them too.
type sized interface {
	comparable
	len() int
}

type removable interface {
	sized
	rem(member []byte) bool
}

// countCmd is HLEN, LLEN, SCARD and ZCARD: the size of key's collection of
// kind, 0 when the key is absent.
func countCmd[T sized](kind uint8) func(x *ctx, a [][]byte) {
	return func(x *ctx, a [][]byte) {
		c, ok := collection[T](x, a[1], kind, false)
		if !ok {
			return
		}
		var none T
		if c == none {
			x.int(0)
			return
		}
		x.int(int64(c.len()))
	}
}

// removeCmd is HDEL, SREM and ZREM: remove the members a[2:] from key's
// collection of kind (the key goes when it empties); the reply counts
// those that were there.
func removeCmd[T removable](kind uint8) func(x *ctx, a [][]byte) {
	return func(x *ctx, a [][]byte) {
		c, ok := collection[T](x, a[1], kind, false)
		if !ok {
			return
		}
		var none T
		if c == none {
			x.int(0)
			return
		}
		x.willWrite(a[1])
		n := 0
		for _, m := range a[2:] {
			if c.rem(m) {
				n++
			}
		}
		x.dropIfEmpty(a[1], c.len())
		x.int(int64(n))
	}
}

// collection returns key's value of kind (nil when absent and !create;
// made, or marked as about to change, when create); ok is false after a
// WRONGTYPE reply.
func collection[T any](x *ctx, key []byte, kind uint8, create bool) (v T, ok bool) {
	e, wrong := x.getKind(key, kind)
	if wrong {
		return v, false
	}
	if e == nil {
		if !create {
			return v, true
		}
		e = x.create(key, kind)
	} else if create {
		x.willWrite(key)
	}
	return *(*T)(unsafe.Pointer(&e.p)), true // T is the pointer type kind names
}

// optCount parses the pop commands' optional count (a[2]); tooMany is the
// reply when more arguments follow. ok is false after an error reply.
func optCount(x *ctx, a [][]byte, tooMany string) (count int64, has, ok bool) {
	if len(a) > 3 {
		x.err(tooMany)
		return 0, false, false
	}
	if len(a) < 3 {
		return 1, false, true
	}
	n, good := parseInt(a[2])
	if !good || n < 0 {
		x.err("ERR value is out of range, must be positive")
		return 0, true, false
	}
	return n, true, true
}

// dropIfEmpty deletes a collection key that lost its last element.
func (x *ctx) dropIfEmpty(key []byte, n int) {
	if n == 0 {
		x.delete(key)
	}
}

func cmdHSet(x *ctx, a [][]byte) {
	if len(a)%2 != 0 {
		x.err("ERR wrong number of arguments for '" + lowerName(a[0]) + "' command")
		return
	}
	h, ok := x.hash(a[1], true)
	if !ok {
		return
	}
	n := 0
	for i := 2; i < len(a); i += 2 {
		if h.set(a[i], a[i+1]) {
			n++
		}
	}
	if eqFold(a[0], "hmset") {
		x.ok()
		return
	}
	x.int(int64(n))
}

func lowerName(b []byte) string {
	var nb [32]byte
	if len(b) > 32 {
		return string(b)
	}
	return string(lower(nb[:0], b))
}

func cmdHSetNX(x *ctx, a [][]byte) {
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	if h != nil {
		if _, has := h.get(a[2]); has {
			x.int(0)
			return
		}
	}
	h, _ = x.hash(a[1], true)
	h.set(a[2], a[3])
	x.int(1)
}

func cmdHGet(x *ctx, a [][]byte) {
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	if h == nil {
		x.null()
		return
	}
	v, has := h.get(a[2])
	if !has {
		x.null()
		return
	}
	x.bulk(v)
}

func cmdHMGet(x *ctx, a [][]byte) {
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	x.array(len(a) - 2)
	for _, f := range a[2:] {
		if h == nil {
			x.null()
			continue
		}
		v, has := h.get(f)
		if !has {
			x.null()
			continue
		}
		x.bulk(v)
	}
}

func cmdHStrlen(x *ctx, a [][]byte) {
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	if h == nil {
		x.int(0)
		return
	}
	v, _ := h.get(a[2])
	x.int(int64(len(v)))
}

func cmdHExists(x *ctx, a [][]byte) {
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	if h == nil {
		x.int(0)
		return
	}
	_, has := h.get(a[2])
	x.boolInt(has)
}

func (x *ctx) boolInt(b bool) {
	if b {
		x.int(1)
	} else {
		x.int(0)
	}
}

func hashDump(x *ctx, a [][]byte, keys, vals bool) {
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	if h == nil {
		if keys && vals {
			x.mapHdr(0)
		} else {
			x.array(0)
		}
		return
	}
	if keys && vals {
		x.mapHdr(h.len())
	} else {
		x.array(h.len())
	}
	h.each(func(f string, v []byte) bool {
		if keys {
			x.bulkStr(f)
		}
		if vals {
			x.bulk(v)
		}
		return true
	})
}

func cmdHIncrBy(x *ctx, a [][]byte) {
	by, ok := x.intArg(a[3])
	if !ok {
		return
	}
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	var cur int64
	if h != nil {
		if v, has := h.get(a[2]); has {
			n, ok := parseInt(v)
			if !ok {
				x.err("ERR hash value is not an integer")
				return
			}
			cur = n
		}
	}
	if (by < 0 && cur < 0 && by < math.MinInt64-cur) || (by > 0 && cur > 0 && by > math.MaxInt64-cur) {
		x.err(errOverflow)
		return
	}
	cur += by
	h, _ = x.hash(a[1], true)
	h.set(a[2], strconv.AppendInt(nil, cur, 10))
	x.int(cur)
}

func cmdHIncrByFloat(x *ctx, a [][]byte) {
	if _, ok := parseFloat(a[3]); !ok {
		x.err(errNotFloat)
		return
	}
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	var cur []byte
	if h != nil {
		if v, has := h.get(a[2]); has {
			if _, ok := parseFloat(v); !ok {
				x.err("ERR hash value is not a float")
				return
			}
			cur = v
		}
	}
	res, msg := longDouble(cur, a[3])
	if msg != "" {
		x.err(msg)
		return
	}
	h, _ = x.hash(a[1], true)
	h.set(a[2], res)
	x.bulk(res)
	x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("HSET"), a[1], a[2], res}})
}

func cmdHScan(x *ctx, a [][]byte) {
	cur, ok := parseCursor(x, a[2])
	if !ok {
		return
	}
	o, ok := x.scanArgs(a[3:], false)
	if !ok {
		return
	}
	h, ok := x.hash(a[1], false)
	if !ok {
		return
	}
	var out [][]byte
	next := uint64(0)
	if h != nil {
		if h.d == nil {
			h.each(func(f string, v []byte) bool {
				if o.match == nil || globMatch(o.match, []byte(f), false) {
					out = append(out, []byte(f), v)
				}
				return true
			})
		} else {
			steps := 0
			for {
				cur = h.d.scan(cur, func(k string, v *[]byte) {
					if o.match == nil || globMatch(o.match, []byte(k), false) {
						out = append(out, []byte(k), *v)
					}
				})
				steps++
				if cur == 0 || len(out)/2 >= o.count || steps >= o.count*10 {
					break
				}
			}
			next = cur
		}
	}
	x.array(2)
	x.bulkStr(strconv.FormatUint(next, 10))
	x.array(len(out))
	for _, b := range out {
		x.bulk(b)
	}
}
