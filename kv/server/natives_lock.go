package server

import (
	"strconv"
)

// Native versions of Tangram's own lock scripts (lock/redislock/scripts.go,
// where each script's text and reply are described). Each follows its
// script line by line through x.call, so replies, effects and errors are
// the script's; compat_test.go runs every one on Redis and on kv and
// compares the replies byte for byte.
func init() {
	natives[shaLockAcquire] = nativeLockAcquire
	natives[shaLockRelease] = nativeLockRelease
	natives[shaLockExtend] = nativeLockExtend
	natives[shaLockFairAcquire] = nativeLockFairAcquire
	natives[shaLockFairLeave] = nativeLockFairLeave
	natives[shaLockReadAcquire] = nativeLockReadAcquire
	natives[shaLockWriteAcquire] = nativeLockWriteAcquire
	natives[shaLockReadRelease] = nativeLockReadRelease
	natives[shaLockWriteRelease] = nativeLockWriteRelease
}

// The SHA1s of the scripts' texts (TestLockScriptsHaveNatives checks them).
const (
	shaLockAcquire      = "2b5940ef2fc6b3f7565c31599d6f7f92e5d3b3df"
	shaLockRelease      = "6ede7df56d7198bfaae95463ae5dc25871c2e242"
	shaLockExtend       = "57f45d4050ea69ebd924972861d30a99634f37b6"
	shaLockFairAcquire  = "072c1b7fc081d47c9801b6ef3d27991d86f3f143"
	shaLockFairLeave    = "aff9ae88de5d257c72c8811fcd153a02f9f35181"
	shaLockReadAcquire  = "f89c521537029a102f66fe30334b3dbacbcdb79a"
	shaLockWriteAcquire = "a8b8cab7bec27c6d0012bb33add65517a7074a46"
	shaLockReadRelease  = "3282ee12f118e9764ee1c62465b011bd412a448a"
	shaLockWriteRelease = "154a7bf816b5441d7fa6437b034c7ac174997a05"
)

func bs(s string) []byte { return []byte(s) }

// pair replies {a, b} as the acquire scripts do.
func (x *ctx) pair(a, b int64) {
	x.array(2)
	x.int(a)
	x.int(b)
}

// luaInt is tonumber(v) of a stored integer, 0 for nil.
func luaInt(r callReply) int64 {
	if r.isNil {
		return 0
	}
	if r.b == nil {
		return r.n
	}
	f, _ := luaNum(r.b)
	return int64(f)
}

// take is the first hold of a mutex: {1, token}.
func (x *ctx) lockTake(lockKey, fenceKey, owner, ttl []byte) {
	f, ok := x.call(bs("incr"), fenceKey)
	if !ok {
		return
	}
	fb := strconv.AppendInt(nil, f.n, 10)
	if _, ok := x.call(bs("hset"), lockKey, bs("o"), owner, bs("n"), bs("1"), bs("f"), fb); !ok {
		return
	}
	if _, ok := x.call(bs("pexpire"), lockKey, ttl); !ok {
		return
	}
	x.pair(1, f.n)
}

// again is one more hold: {1, token}.
func (x *ctx) lockAgain(lockKey, field, ttl []byte) {
	if _, ok := x.call(bs("hincrby"), lockKey, field, bs("1")); !ok {
		return
	}
	if _, ok := x.call(bs("pexpire"), lockKey, ttl); !ok {
		return
	}
	f, ok := x.call(bs("hget"), lockKey, bs("f"))
	if ok {
		x.pair(1, luaInt(f))
	}
}

func (x *ctx) lockRefused(lockKey []byte, floor bool) {
	p, ok := x.call(bs("pttl"), lockKey)
	if !ok {
		return
	}
	if floor && p.n < 0 {
		p.n = 0
	}
	x.pair(0, p.n)
}

func nativeLockAcquire(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 2, 2) {
		return
	}
	o, ok := x.call(bs("hget"), keys[0], bs("o"))
	switch {
	case !ok:
	case o.isNil:
		x.lockTake(keys[0], keys[1], args[0], args[1])
	case string(o.b) == string(args[0]):
		x.lockAgain(keys[0], bs("n"), args[1])
	default:
		x.lockRefused(keys[0], false)
	}
}

// publishRelease publishes owner on channel, as the release scripts do.
func (x *ctx) publishRelease(channel, owner []byte) bool {
	_, ok := x.call(bs("publish"), channel, owner)
	return ok
}

func nativeLockRelease(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 1, 3) {
		return
	}
	o, ok := x.call(bs("hget"), keys[0], bs("o"))
	if !ok {
		return
	}
	if o.isNil || string(o.b) != string(args[0]) {
		x.int(-1)
		return
	}
	n, ok := x.call(bs("hincrby"), keys[0], bs("n"), bs("-1"))
	if !ok {
		return
	}
	if n.n > 0 {
		if _, ok := x.call(bs("pexpire"), keys[0], args[1]); ok {
			x.int(n.n)
		}
		return
	}
	if _, ok := x.call(bs("del"), keys[0]); !ok {
		return
	}
	if x.publishRelease(args[2], args[0]) {
		x.int(0)
	}
}

func nativeLockExtend(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 1, 2) {
		return
	}
	held := false
	o, ok := x.call(bs("hget"), keys[0], bs("o"))
	if !ok {
		return
	}
	held = !o.isNil && string(o.b) == string(args[0])
	if !held {
		w, ok := x.call(bs("hget"), keys[0], bs("w"))
		if !ok {
			return
		}
		held = !w.isNil && string(w.b) == string(args[0])
	}
	if !held {
		r, ok := x.call(bs("hexists"), keys[0], append(bs("r:"), args[0]...))
		if !ok {
			return
		}
		held = r.n == 1
	}
	if !held {
		x.int(0)
		return
	}
	if _, ok := x.call(bs("pexpire"), keys[0], args[1]); ok {
		x.int(1)
	}
}

func nativeLockFairAcquire(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 4, 3) {
		return
	}
	now := x.now
	for {
		h, ok := x.call(bs("lindex"), keys[2], bs("0"))
		if !ok {
			return
		}
		if h.isNil {
			break
		}
		d, ok := x.call(bs("zscore"), keys[3], h.b)
		if !ok {
			return
		}
		if !d.isNil {
			if f, _ := luaNum(d.b); f >= float64(now) {
				break
			}
		}
		if _, ok := x.call(bs("lpop"), keys[2]); !ok {
			return
		}
		if _, ok := x.call(bs("zrem"), keys[3], h.b); !ok {
			return
		}
	}
	o, ok := x.call(bs("hget"), keys[0], bs("o"))
	if !ok {
		return
	}
	if !o.isNil && string(o.b) == string(args[0]) {
		x.lockAgain(keys[0], bs("n"), args[1])
		return
	}
	if o.isNil {
		h, ok := x.call(bs("lindex"), keys[2], bs("0"))
		if !ok {
			return
		}
		if h.isNil || string(h.b) == string(args[0]) {
			if !h.isNil {
				if _, ok := x.call(bs("lpop"), keys[2]); !ok {
					return
				}
				if _, ok := x.call(bs("zrem"), keys[3], h.b); !ok {
					return
				}
			}
			x.lockTake(keys[0], keys[1], args[0], args[1])
			return
		}
	}
	qttl, okq := luaNum(args[2])
	if !okq {
		x.err("ERR Error running script: attempt to perform arithmetic on a nil value script: " + x.script + ", on @user_script:1.")
		return
	}
	added, ok := x.call(bs("zadd"), keys[3], luaStr(float64(now)+qttl), args[0])
	if !ok {
		return
	}
	if added.n == 1 {
		if _, ok := x.call(bs("rpush"), keys[2], args[0]); !ok {
			return
		}
	}
	twice := luaStr(2 * qttl)
	if _, ok := x.call(bs("pexpire"), keys[2], twice); !ok {
		return
	}
	if _, ok := x.call(bs("pexpire"), keys[3], twice); !ok {
		return
	}
	x.lockRefused(keys[0], true)
}

func nativeLockFairLeave(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 4, 1) {
		return
	}
	if _, ok := x.call(bs("lrem"), keys[2], bs("0"), args[0]); !ok {
		return
	}
	if r, ok := x.call(bs("zrem"), keys[3], args[0]); ok {
		x.int(r.n)
	}
}

func nativeLockReadAcquire(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 2, 2) {
		return
	}
	mode, ok := x.call(bs("hget"), keys[0], bs("mode"))
	if !ok {
		return
	}
	grant := mode.isNil || string(mode.b) == "read"
	if !grant {
		w, ok := x.call(bs("hget"), keys[0], bs("w"))
		if !ok {
			return
		}
		grant = !w.isNil && string(w.b) == string(args[0])
	}
	if !grant {
		x.lockRefused(keys[0], false)
		return
	}
	if mode.isNil {
		if _, ok := x.call(bs("hset"), keys[0], bs("mode"), bs("read")); !ok {
			return
		}
	}
	n, ok := x.call(bs("hincrby"), keys[0], append(bs("r:"), args[0]...), bs("1"))
	if !ok {
		return
	}
	if n.n == 1 {
		if _, ok := x.call(bs("hincrby"), keys[0], bs("rc"), bs("1")); !ok {
			return
		}
	}
	p, ok := x.call(bs("pttl"), keys[0])
	if !ok {
		return
	}
	ttl, okt := luaNum(args[1])
	if !okt {
		x.err("ERR Error running script: attempt to compare nil with number script: " + x.script + ", on @user_script:1.")
		return
	}
	if float64(p.n) < ttl {
		if _, ok := x.call(bs("pexpire"), keys[0], args[1]); !ok {
			return
		}
	}
	f, ok := x.call(bs("get"), keys[1])
	if ok {
		x.pair(1, luaInt(f))
	}
}

func nativeLockWriteAcquire(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 2, 2) {
		return
	}
	mode, ok := x.call(bs("hget"), keys[0], bs("mode"))
	if !ok {
		return
	}
	if mode.isNil {
		f, ok := x.call(bs("incr"), keys[1])
		if !ok {
			return
		}
		if _, ok := x.call(bs("hset"), keys[0], bs("mode"), bs("write"), bs("w"), args[0], bs("wn"), bs("1"), bs("f"), strconv.AppendInt(nil, f.n, 10)); !ok {
			return
		}
		if _, ok := x.call(bs("pexpire"), keys[0], args[1]); ok {
			x.pair(1, f.n)
		}
		return
	}
	if string(mode.b) == "write" {
		w, ok := x.call(bs("hget"), keys[0], bs("w"))
		if !ok {
			return
		}
		if !w.isNil && string(w.b) == string(args[0]) {
			x.lockAgain(keys[0], bs("wn"), args[1])
			return
		}
	}
	x.lockRefused(keys[0], false)
}

func nativeLockReadRelease(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 1, 3) {
		return
	}
	r := append(bs("r:"), args[0]...)
	ex, ok := x.call(bs("hexists"), keys[0], r)
	if !ok {
		return
	}
	if ex.n == 0 {
		x.int(-1)
		return
	}
	n, ok := x.call(bs("hincrby"), keys[0], r, bs("-1"))
	if !ok {
		return
	}
	if n.n > 0 {
		x.int(n.n)
		return
	}
	if _, ok := x.call(bs("hdel"), keys[0], r); !ok {
		return
	}
	rc, ok := x.call(bs("hincrby"), keys[0], bs("rc"), bs("-1"))
	if !ok {
		return
	}
	if rc.n <= 0 {
		mode, ok := x.call(bs("hget"), keys[0], bs("mode"))
		if !ok {
			return
		}
		if !mode.isNil && string(mode.b) == "read" {
			if _, ok := x.call(bs("del"), keys[0]); !ok {
				return
			}
			if !x.publishRelease(args[2], args[0]) {
				return
			}
		}
	}
	x.int(0)
}

func nativeLockWriteRelease(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 1, 3) {
		return
	}
	w, ok := x.call(bs("hget"), keys[0], bs("w"))
	if !ok {
		return
	}
	if w.isNil || string(w.b) != string(args[0]) {
		x.int(-1)
		return
	}
	n, ok := x.call(bs("hincrby"), keys[0], bs("wn"), bs("-1"))
	if !ok {
		return
	}
	if n.n > 0 {
		if _, ok := x.call(bs("pexpire"), keys[0], args[1]); ok {
			x.int(n.n)
		}
		return
	}
	rc, ok := x.call(bs("hget"), keys[0], bs("rc"))
	if !ok {
		return
	}
	if luaInt(rc) > 0 {
		if _, ok := x.call(bs("hdel"), keys[0], bs("w"), bs("wn"), bs("f")); !ok {
			return
		}
		if _, ok := x.call(bs("hset"), keys[0], bs("mode"), bs("read")); !ok {
			return
		}
	} else if _, ok := x.call(bs("del"), keys[0]); !ok {
		return
	}
	if x.publishRelease(args[2], args[0]) {
		x.int(0)
	}
}
