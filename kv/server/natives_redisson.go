package server

import (
	"bytes"
	"strconv"
	"strings"
)

// Native versions of Redisson's lock scripts (org.redisson.RedissonLock
// and its renewal task, Redisson 4.x): a reentrant lock is a hash from
// "<client id>:<thread id>" to a hold count, with a lease (PEXPIRE) the
// client's watchdog renews; unlock publishes on the lock's channel so
// waiters wake at once. The scripts' texts, which give the SHA1s, are in
// compat_test.go, which runs each on Redis and on kv and compares the
// replies byte for byte.
func init() {
	natives["149c5a8bf18676fd99e9e6e24923bd64d9b62f94"] = nativeRedissonLock
	natives["6866459238a13a701d42f4971f12d9f3a50e2442"] = nativeRedissonUnlock
	natives["605e338249a7a1d40df83b04f7658354f883b41b"] = nativeRedissonForceUnlock
	natives["6a3d31570dc6f4b0bd32bcdc8e75667747c6f635"] = nativeRedissonRenew
}

// callReply is a command's reply decoded as a script sees it.
type callReply struct {
	isNil bool
	n     int64
	b     []byte
}

// call runs a command from inside a native script, as redis.call does: on
// keys the script declared (so already locked), with its reply decoded and
// its effect logged. An error reply ends the script with that error, as
// Redis reports it.
func (x *ctx) call(args ...[]byte) (callReply, bool) {
	spec := commands[strings.ToLower(string(args[0]))]
	c := x.c
	saved, v3, lastErr := c.out, c.v3, c.lastErr
	c.out, c.v3, c.lastErr = nil, false, false
	nt := len(x.touched)
	spec.fn(x, args)
	out, failed := c.out, c.lastErr
	c.out, c.v3, c.lastErr = saved, v3, lastErr
	if spec.flags&flagCustomProp == 0 && spec.flags&flagWrite != 0 && len(x.touched) > nt {
		x.prop = append(x.prop, propRec{shardOf(args[1]), copyArgs(args)})
	}
	if failed || (len(out) > 0 && out[0] == '-') {
		msg := strings.TrimSuffix(strings.TrimPrefix(string(out), "-"), "\r\n")
		x.err(msg + " script: " + x.script + ", on @user_script:1.")
		return callReply{}, false
	}
	switch {
	case bytes.HasPrefix(out, []byte("$-1")), bytes.HasPrefix(out, []byte("*-1")):
		return callReply{isNil: true}, true
	case len(out) > 0 && out[0] == ':':
		n, _ := strconv.ParseInt(string(bytes.TrimSpace(out[1:])), 10, 64)
		return callReply{n: n}, true
	case len(out) > 0 && out[0] == '$':
		i := bytes.IndexByte(out, '\n')
		return callReply{b: bytes.TrimSuffix(out[i+1:], []byte("\r\n"))}, true
	case len(out) > 0 && out[0] == '+':
		return callReply{b: bytes.TrimSpace(out[1:])}, true
	}
	return callReply{}, true
}

// The lock: take it when free or held by this thread (one more hold),
// with the lease; nil on success, else the lease's remaining ms.
// KEYS[1] lock; ARGV[1] lease ms, ARGV[2] lock name.
func nativeRedissonLock(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 1, 2) {
		return
	}
	ex, ok := x.call([]byte("exists"), keys[0])
	if !ok {
		return
	}
	mine := false
	if ex.n != 0 {
		h, ok := x.call([]byte("hexists"), keys[0], args[1])
		if !ok {
			return
		}
		mine = h.n == 1
	}
	if ex.n == 0 || mine {
		if _, ok := x.call([]byte("hincrby"), keys[0], args[1], []byte("1")); !ok {
			return
		}
		if _, ok := x.call([]byte("pexpire"), keys[0], args[0]); !ok {
			return
		}
		x.null()
		return
	}
	if r, ok := x.call([]byte("pttl"), keys[0]); ok {
		x.int(r.n)
	}
}

// The unlock: a repeated request (same latch key) gets its first answer;
// one hold less, the lease renewed while holds remain, else the lock
// deleted and its channel told. Replies 1 (released), 0 (still held), nil
// (not held by this thread). KEYS[1] lock, KEYS[2] channel, KEYS[3] the
// request's latch; ARGV[1] message, ARGV[2] lease ms, ARGV[3] lock name,
// ARGV[4] publish command, ARGV[5] latch ms.
func nativeRedissonUnlock(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 3, 5) {
		return
	}
	v, ok := x.call([]byte("get"), keys[2])
	if !ok {
		return
	}
	if !v.isNil {
		if n, ok := luaNum(v.b); ok {
			x.int(int64(n))
		} else {
			x.null() // tonumber of a non-number is nil
		}
		return
	}
	h, ok := x.call([]byte("hexists"), keys[0], args[2])
	if !ok {
		return
	}
	if h.n == 0 {
		x.null()
		return
	}
	cnt, ok := x.call([]byte("hincrby"), keys[0], args[2], []byte("-1"))
	if !ok {
		return
	}
	if cnt.n > 0 {
		if _, ok := x.call([]byte("pexpire"), keys[0], args[1]); !ok {
			return
		}
		if _, ok := x.call([]byte("set"), keys[2], []byte("0"), []byte("px"), args[4]); !ok {
			return
		}
		x.int(0)
		return
	}
	if _, ok := x.call([]byte("del"), keys[0]); !ok {
		return
	}
	if !x.publish(args[3], keys[1], args[0]) {
		return
	}
	if _, ok := x.call([]byte("set"), keys[2], []byte("1"), []byte("px"), args[4]); !ok {
		return
	}
	x.int(1)
}

// publish runs the script's publish command (PUBLISH; SPUBLISH, which
// Redisson sends to a cluster, is refused by name: kv has no sharded
// pub/sub).
func (x *ctx) publish(cmd, channel, msg []byte) bool {
	if !strings.EqualFold(string(cmd), "publish") {
		x.err("ERR Error running script: kv does not run '" + clip(string(cmd), 32) + "' (only PUBLISH) script: " + x.script + ", on @user_script:1.")
		return false
	}
	_, ok := x.call([]byte("publish"), channel, msg)
	return ok
}

// The forced unlock: delete the lock whoever holds it and tell its
// channel; 1 if there was one, else 0. KEYS[1] lock, KEYS[2] channel;
// ARGV[1] message, ARGV[2] publish command.
func nativeRedissonForceUnlock(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 2, 2) {
		return
	}
	d, ok := x.call([]byte("del"), keys[0])
	if !ok {
		return
	}
	if d.n != 1 {
		x.int(0)
		return
	}
	if x.publish(args[1], keys[1], args[0]) {
		x.int(1)
	}
}

// The watchdog's batch renewal: for each lock KEYS[i] still held by
// ARGV[i+1], renew the lease ARGV[1]; replies 1 or 0 per lock.
func nativeRedissonRenew(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 0, 1) {
		return
	}
	res := make([]int64, 0, len(keys))
	for i, k := range keys {
		var field []byte // ARGV[i+1] past the end is nil: hexists then fails as in Lua
		if i+1 < len(args) {
			field = args[i+1]
		}
		if field == nil {
			x.err("ERR Lua redis lib command arguments must be strings or integers script: " + x.script + ", on @user_script:1.")
			return
		}
		h, ok := x.call([]byte("hexists"), k, field)
		if !ok {
			return
		}
		if h.n == 1 {
			if _, ok := x.call([]byte("pexpire"), k, args[0]); !ok {
				return
			}
			res = append(res, 1)
		} else {
			res = append(res, 0)
		}
	}
	x.array(len(res))
	for _, n := range res {
		x.int(n)
	}
}
