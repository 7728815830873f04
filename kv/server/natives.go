package server

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Native versions of the scripts lock libraries send, by the SHA1 of their
// text. Each does what the script does, under the lock of the script's key
// (the script's KEYS), and logs its effect.
func init() {
	// redsync v4: release — DEL the key if it holds our token; -1 when it
	// is gone, 0 when someone else holds it.
	natives["e950836ed1e694540c503ef9972b8de518044d3b"] = nativeCompareDelete
	// redsync v4: extend — PEXPIRE the key if it holds our token.
	natives["d75bb8b5bd13532ddedd17762e772346e39b321e"] = func(x *ctx, keys, args [][]byte) { nativeTouch(x, keys, args, false) }
	// redsync v4: extend with SetNXOnExtend — as above, or take the lock
	// again with SET NX PX when it has expired.
	natives["b6b55c439e02c6f52ffb8be7ec8c0d0ac816ea79"] = func(x *ctx, keys, args [][]byte) { nativeTouch(x, keys, args, true) }
}

func scriptArgs(x *ctx, keys, args [][]byte, nk, na int) bool {
	if len(keys) < nk || len(args) < na {
		x.err("ERR Error running script: the script needs " + strconv.Itoa(nk) + " key(s) and " + strconv.Itoa(na) + " argument(s)")
		return false
	}
	return true
}

func nativeCompareDelete(x *ctx, keys, args [][]byte) {
	if !scriptArgs(x, keys, args, 1, 1) {
		return
	}
	v, e, wrong := x.getString(keys[0])
	if wrong {
		return
	}
	switch {
	case e == nil:
		x.int(-1)
	case string(v) == string(args[0]):
		x.delete(keys[0])
		x.prop = append(x.prop, propRec{shardOf(keys[0]), [][]byte{[]byte("DEL"), keys[0]}})
		x.int(1)
	default:
		x.int(0)
	}
}

func nativeTouch(x *ctx, keys, args [][]byte, setNX bool) {
	if !scriptArgs(x, keys, args, 1, 2) {
		return
	}
	ms, ok := parseInt(args[1])
	if !ok {
		x.err("ERR Error running script: " + errNotInt[4:])
		return
	}
	v, e, wrong := x.getString(keys[0])
	if wrong {
		return
	}
	if e != nil && string(v) == string(args[0]) {
		at := x.now + ms
		if ms <= 0 {
			x.delete(keys[0])
			x.prop = append(x.prop, propRec{shardOf(keys[0]), [][]byte{[]byte("DEL"), keys[0]}})
			x.int(1)
			return
		}
		x.willWrite(keys[0])
		x.setExp(keys[0], e, at)
		x.prop = append(x.prop, propRec{shardOf(keys[0]), [][]byte{[]byte("PEXPIREAT"), keys[0], strconv.AppendInt(nil, at, 10)}})
		x.int(1)
		return
	}
	if setNX && e == nil {
		if ms <= 0 {
			x.err("ERR Error running script: invalid expire time in 'set' command")
			return
		}
		ne := x.setValue(keys[0], args[0], x.now+ms, false)
		x.propSet(keys[0], ne, false)
		x.int(1)
		return
	}
	x.int(0)
}

func init() {
	// go-redis/redis_rate v10: AllowN and AllowAtMost (GCRA).
	natives["f52a5b566060d79fd321d695df55bc918339c4aa"] = func(x *ctx, keys, args [][]byte) { nativeGCRA(x, keys, args, false) }
	natives["054143318f521948424aa25df61d7f7ba835a9d7"] = func(x *ctx, keys, args [][]byte) { nativeGCRA(x, keys, args, true) }
}

// luaNum parses a script argument as Lua's tonumber does for decimal
// strings.
func luaNum(b []byte) (float64, bool) {
	f, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	return f, err == nil
}

// luaStr is Lua 5.1's tostring of a number ("%.14g").
func luaStr(f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.AppendInt(nil, int64(f), 10)
	}
	return []byte(fmt.Sprintf("%.14g", f))
}

// nativeGCRA is redis_rate's generic cell rate algorithm: the key holds
// the theoretical arrival time (seconds since 2017-01-01, a float). The
// reply is {allowed, remaining, retry_after, reset_after} with the first
// two as integers (Lua numbers truncated) and the last two as Lua prints
// them.
func nativeGCRA(x *ctx, keys, args [][]byte, atMost bool) {
	if !scriptArgs(x, keys, args, 1, 4) {
		return
	}
	burst, ok1 := luaNum(args[0])
	rate, ok2 := luaNum(args[1])
	period, ok3 := luaNum(args[2])
	cost, ok4 := luaNum(args[3])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		x.err("ERR Error running script: burst, rate, period and cost must be numbers")
		return
	}
	emission := period / rate
	burstOffset := emission * burst
	const jan2017 = 1483228800
	t := time.Now()
	now := float64(t.Unix()-jan2017) + float64(t.Nanosecond()/1000)/1e6
	v, e, wrong := x.getString(keys[0])
	if wrong {
		return
	}
	tat := now
	if e != nil {
		f, ok := luaNum(v)
		if !ok {
			x.err("ERR Error running script: the rate limit key does not hold a number")
			return
		}
		tat = f
	}
	tat = math.Max(tat, now)
	reply := func(allowed, remaining, retry, reset float64) {
		x.array(4)
		x.int(int64(allowed))
		x.int(int64(remaining))
		x.bulk(luaStr(retry))
		x.bulk(luaStr(reset))
	}
	var newTat, remaining float64
	if !atMost {
		newTat = tat + emission*cost
		diff := now - (newTat - burstOffset)
		remaining = diff / emission
		if remaining < 0 {
			reply(0, 0, -diff, tat-now)
			return
		}
	} else {
		diff := now - (tat - burstOffset)
		remaining = diff / emission
		if remaining < 1 {
			reply(0, 0, emission-diff, tat-now)
			return
		}
		if remaining < cost {
			cost, remaining = remaining, 0
		} else {
			remaining -= cost
		}
		newTat = tat + emission*cost
	}
	reset := newTat - now
	if reset > 0 {
		exp := x.now + int64(math.Ceil(reset))*1000
		val := []byte(strconv.FormatFloat(newTat, 'g', 17, 64))
		ne := x.setValue(keys[0], val, exp, false)
		x.propSet(keys[0], ne, false)
	}
	reply(cost, remaining, -1, reset)
}
