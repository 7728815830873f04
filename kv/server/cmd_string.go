package server

import (
	"math"
	"math/big"
	"strconv"
	"strings"
)

func stringCommands() []*cmdSpec {
	return []*cmdSpec{
		key1("get", 2, ro, cmdGet),
		key1("set", -3, w|flagCustomProp, cmdSet),
		key1("setnx", 3, w, cmdSetNX),
		key1("setex", 4, w|flagCustomProp, cmdSetEX),
		key1("psetex", 4, w|flagCustomProp, cmdPSetEX),
		key1("getset", 3, w, cmdGetSet),
		key1("getdel", 2, wd|flagCustomProp, cmdGetDel),
		key1("getex", -2, w|flagCustomProp, cmdGetEx),
		keysAll("mget", -2, ro, cmdMGet),
		{name: "mset", arity: -3, flags: w | flagCustomProp, first: 1, last: -1, step: 2, fn: cmdMSet},
		{name: "msetnx", arity: -3, flags: w | flagCustomProp, first: 1, last: -1, step: 2, fn: cmdMSetNX},
		key1("incr", 2, w, func(x *ctx, a [][]byte) { incrBy(x, a[1], 1) }),
		key1("decr", 2, w, func(x *ctx, a [][]byte) { incrBy(x, a[1], -1) }),
		key1("incrby", 3, w, func(x *ctx, a [][]byte) {
			if n, ok := x.intArg(a[2]); ok {
				incrBy(x, a[1], n)
			}
		}),
		key1("decrby", 3, w, func(x *ctx, a [][]byte) {
			if n, ok := x.intArg(a[2]); ok {
				if n == math.MinInt64 {
					x.err("ERR decrement would overflow")
					return
				}
				incrBy(x, a[1], -n)
			}
		}),
		key1("incrbyfloat", 3, w|flagCustomProp, cmdIncrByFloat),
		key1("append", 3, w, cmdAppend),
		key1("strlen", 2, ro, cmdStrlen),
		key1("setrange", 4, w, cmdSetRange),
		key1("getrange", 4, ro, cmdGetRange),
		key1("substr", 4, ro, cmdGetRange),
	}
}

func (x *ctx) getString(key []byte) (v []byte, e *entry, wrong bool) {
	e, wrong = x.getKind(key, kindString)
	if e == nil {
		return nil, nil, wrong
	}
	return e.str(), e, false
}

func cmdGet(x *ctx, a [][]byte) {
	v, e, wrong := x.getString(a[1])
	if wrong {
		return
	}
	if e == nil {
		x.null()
		return
	}
	x.bulk(v)
}

// setValue stores v at key as a string (replacing what was there) and
// gives it expiry exp (0 none; keep leaves the current one).
func (x *ctx) setValue(key, v []byte, exp int64, keep bool) *entry {
	old := x.get(key)
	oldExp := int64(0)
	if old != nil {
		oldExp = old.exp
	}
	e := x.create(key, kindString)
	e.setStr(append(make([]byte, 0, len(v)), v...))
	if keep && oldExp != 0 {
		x.setExp(key, e, oldExp)
	} else if exp != 0 {
		x.setExp(key, e, exp)
	}
	return e
}

// propSet logs SET key value with the absolute expiry (or KEEPTTL).
func (x *ctx) propSet(key []byte, e *entry, keep bool) {
	args := [][]byte{[]byte("SET"), key, e.str()}
	if e.exp != 0 {
		args = append(args, []byte("PXAT"), strconv.AppendInt(nil, e.exp, 10))
	} else if keep {
		args = append(args, []byte("KEEPTTL"))
	}
	x.prop = append(x.prop, propRec{shard: shardOf(key), args: args})
}

// expireArg turns an EX/PX/EXAT/PXAT argument into Unix ms, replying with
// Redis's error for a bad one.
func (x *ctx) expireArg(cmd string, unit string, b []byte) (int64, bool) {
	n, ok := parseInt(b)
	if !ok {
		x.err(errNotInt)
		return 0, false
	}
	if n <= 0 {
		x.err("ERR invalid expire time in '" + cmd + "' command")
		return 0, false
	}
	var ms int64
	switch unit {
	case "ex":
		if n > math.MaxInt64/1000 {
			x.err("ERR invalid expire time in '" + cmd + "' command")
			return 0, false
		}
		ms = n * 1000
		if ms > math.MaxInt64-x.now {
			x.err("ERR invalid expire time in '" + cmd + "' command")
			return 0, false
		}
		return x.now + ms, true
	case "px":
		if n > math.MaxInt64-x.now {
			x.err("ERR invalid expire time in '" + cmd + "' command")
			return 0, false
		}
		return x.now + n, true
	case "exat":
		if n > math.MaxInt64/1000 {
			x.err("ERR invalid expire time in '" + cmd + "' command")
			return 0, false
		}
		return n * 1000, true
	default: // pxat
		return n, true
	}
}

func cmdSet(x *ctx, a [][]byte) {
	var nx, xx, get, keep bool
	var exp int64
	unit := ""
	for i := 3; i < len(a); i++ {
		o := a[i]
		switch {
		case eqFold(o, "nx") && !xx:
			nx = true
		case eqFold(o, "xx") && !nx:
			xx = true
		case eqFold(o, "get"):
			get = true
		case eqFold(o, "keepttl") && unit == "":
			keep = true
		case (eqFold(o, "ex") || eqFold(o, "px") || eqFold(o, "exat") || eqFold(o, "pxat")) && unit == "" && !keep && i+1 < len(a):
			unit = strings.ToLower(string(o))
			i++
			v, ok := x.expireArg("set", unit, a[i])
			if !ok {
				return
			}
			exp = v
		default:
			x.err(errSyntax)
			return
		}
	}
	cur := x.get(a[1])
	if get && cur != nil && cur.kind != kindString {
		x.err(errWrongType)
		return
	}
	var old []byte
	if get && cur != nil {
		old = append([]byte{}, cur.str()...)
	}
	if (nx && cur != nil) || (xx && cur == nil) {
		if get {
			x.bulkOrNull(old)
		} else {
			x.null()
		}
		return
	}
	e := x.setValue(a[1], a[2], exp, keep)
	x.propSet(a[1], e, keep)
	if get {
		x.bulkOrNull(old)
		return
	}
	x.ok()
}

func cmdSetNX(x *ctx, a [][]byte) {
	if x.get(a[1]) != nil {
		x.int(0)
		return
	}
	x.setValue(a[1], a[2], 0, false)
	x.int(1)
}

func cmdSetEX(x *ctx, a [][]byte)  { setWithTTL(x, a, "setex", "ex") }
func cmdPSetEX(x *ctx, a [][]byte) { setWithTTL(x, a, "psetex", "px") }

func setWithTTL(x *ctx, a [][]byte, cmd, unit string) {
	exp, ok := x.expireArg(cmd, unit, a[2])
	if !ok {
		return
	}
	e := x.setValue(a[1], a[3], exp, false)
	x.propSet(a[1], e, false)
	x.ok()
}

func cmdGetSet(x *ctx, a [][]byte) {
	v, e, wrong := x.getString(a[1])
	if wrong {
		return
	}
	var old []byte
	if e != nil {
		old = append([]byte{}, v...)
	}
	x.setValue(a[1], a[2], 0, false)
	x.bulkOrNull(old)
}

func cmdGetDel(x *ctx, a [][]byte) {
	v, e, wrong := x.getString(a[1])
	if wrong {
		return
	}
	if e == nil {
		x.null()
		return
	}
	x.bulk(v)
	x.delete(a[1])
	x.prop = append(x.prop, propRec{shard: shardOf(a[1]), args: [][]byte{[]byte("DEL"), a[1]}})
}

func cmdGetEx(x *ctx, a [][]byte) {
	var exp int64
	persist, set := false, false
	for i := 2; i < len(a); i++ {
		o := a[i]
		switch {
		case eqFold(o, "persist") && !set && !persist:
			persist = true
		case (eqFold(o, "ex") || eqFold(o, "px") || eqFold(o, "exat") || eqFold(o, "pxat")) && !set && !persist && i+1 < len(a):
			i++
			v, ok := x.expireArg("getex", strings.ToLower(string(o)), a[i])
			if !ok {
				return
			}
			exp, set = v, true
		default:
			x.err(errSyntax)
			return
		}
	}
	v, e, wrong := x.getString(a[1])
	if wrong {
		return
	}
	if e == nil {
		x.null()
		return
	}
	x.bulk(v)
	switch {
	case set && exp < x.now:
		x.delete(a[1])
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("DEL"), a[1]}})
	case set:
		x.willWrite(a[1])
		x.setExp(a[1], e, exp)
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("PEXPIREAT"), a[1], strconv.AppendInt(nil, exp, 10)}})
	case persist && e.exp != 0:
		x.willWrite(a[1])
		x.setExp(a[1], e, 0)
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("PERSIST"), a[1]}})
	}
}

func cmdMGet(x *ctx, a [][]byte) {
	x.array(len(a) - 1)
	for _, k := range a[1:] {
		e := x.get(k)
		if e == nil || e.kind != kindString {
			x.null()
			continue
		}
		x.bulk(e.str())
	}
}

func cmdMSet(x *ctx, a [][]byte) {
	if len(a)%2 != 1 {
		x.err("ERR wrong number of arguments for 'mset' command")
		return
	}
	for i := 1; i < len(a); i += 2 {
		e := x.setValue(a[i], a[i+1], 0, false)
		x.propSet(a[i], e, false)
	}
	x.ok()
}

func cmdMSetNX(x *ctx, a [][]byte) {
	if len(a)%2 != 1 {
		x.err("ERR wrong number of arguments for 'msetnx' command")
		return
	}
	for i := 1; i < len(a); i += 2 {
		if x.get(a[i]) != nil {
			x.int(0)
			return
		}
	}
	for i := 1; i < len(a); i += 2 {
		e := x.setValue(a[i], a[i+1], 0, false)
		x.propSet(a[i], e, false)
	}
	x.int(1)
}

func incrBy(x *ctx, key []byte, by int64) {
	v, e, wrong := x.getString(key)
	if wrong {
		return
	}
	var cur int64
	if e != nil {
		n, ok := parseInt(v)
		if !ok {
			x.err(errNotInt)
			return
		}
		cur = n
	}
	if (by < 0 && cur < 0 && by < math.MinInt64-cur) || (by > 0 && cur > 0 && by > math.MaxInt64-cur) {
		x.err(errOverflow)
		return
	}
	cur += by
	if e == nil {
		e = x.create(key, kindString)
	} else {
		x.willWrite(key)
	}
	e.setStr(strconv.AppendInt(e.str()[:0], cur, 10))
	x.int(cur)
}

// longDouble is Redis's long double arithmetic for INCRBYFLOAT and
// HINCRBYFLOAT: a 64-bit mantissa, printed with 17 decimals and the
// trailing zeros cut, so that replies match Redis digit for digit.
func longDouble(cur, by []byte) ([]byte, string) {
	parse := func(b []byte) (*big.Float, bool) {
		if len(b) == 0 || b[0] == ' ' || b[len(b)-1] == ' ' {
			return nil, false
		}
		f, ok := new(big.Float).SetPrec(64).SetString(string(b))
		return f, ok
	}
	a := new(big.Float).SetPrec(64)
	if cur != nil {
		v, ok := parse(cur)
		if !ok {
			return nil, "ERR value is not a valid float"
		}
		a = v
	}
	d, ok := parse(by)
	if !ok {
		return nil, "ERR value is not a valid float"
	}
	if a.IsInf() || d.IsInf() {
		return nil, "ERR increment would produce NaN or Infinity"
	}
	sum := new(big.Float).SetPrec(64).Add(a, d)
	if f, _ := sum.Float64(); math.IsInf(f, 0) {
		return nil, "ERR increment would produce NaN or Infinity"
	}
	s := sum.Text('f', 17)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(s, "0")
		s = strings.TrimSuffix(s, ".")
	}
	if s == "-0" {
		s = "0"
	}
	return []byte(s), ""
}

func cmdIncrByFloat(x *ctx, a [][]byte) {
	v, e, wrong := x.getString(a[1])
	if wrong {
		return
	}
	if _, ok := parseFloat(a[2]); !ok {
		x.err(errNotFloat)
		return
	}
	var cur []byte
	if e != nil {
		cur = v
	}
	res, msg := longDouble(cur, a[2])
	if msg != "" {
		x.err(msg)
		return
	}
	if e == nil {
		e = x.create(a[1], kindString)
	} else {
		x.willWrite(a[1])
	}
	e.setStr(res)
	x.bulk(res)
	x.propSet(a[1], e, true)
}

func cmdAppend(x *ctx, a [][]byte) {
	v, e, wrong := x.getString(a[1])
	if wrong {
		return
	}
	if e == nil {
		e = x.create(a[1], kindString)
		e.setStr(append([]byte{}, a[2]...))
		x.int(int64(e.n))
		return
	}
	if len(v)+len(a[2]) > 512<<20 {
		x.err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
		return
	}
	x.willWrite(a[1])
	e.setStr(append(e.str(), a[2]...))
	x.int(int64(e.n))
}

func cmdStrlen(x *ctx, a [][]byte) {
	v, _, wrong := x.getString(a[1])
	if wrong {
		return
	}
	x.int(int64(len(v)))
}

func cmdSetRange(x *ctx, a [][]byte) {
	off, ok := parseInt(a[2])
	if !ok {
		x.err(errNotInt)
		return
	}
	if off < 0 {
		x.err("ERR offset is out of range")
		return
	}
	v, e, wrong := x.getString(a[1])
	if wrong {
		return
	}
	if off+int64(len(a[3])) > 512<<20 {
		x.err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
		return
	}
	if len(a[3]) == 0 {
		x.int(int64(len(v)))
		return
	}
	if e == nil {
		e = x.create(a[1], kindString)
	} else {
		x.willWrite(a[1])
	}
	need := int(off) + len(a[3])
	s := e.str()
	if need > len(s) {
		s = append(s, make([]byte, need-len(s))...)
	}
	copy(s[off:], a[3])
	e.setStr(s)
	x.int(int64(len(s)))
}

// rangeIdx turns Redis's start/end (negative from the end) into a
// half-open [lo, hi) over n elements; ok is false when it is empty.
func rangeIdx(start, end, n int64) (lo, hi int64, ok bool) {
	if start < 0 {
		start += n
	}
	if end < 0 {
		end += n
	}
	if start < 0 {
		start = 0
	}
	if end >= n {
		end = n - 1
	}
	if start > end || n == 0 {
		return 0, 0, false
	}
	return start, end + 1, true
}

func cmdGetRange(x *ctx, a [][]byte) {
	start, ok1 := parseInt(a[2])
	end, ok2 := parseInt(a[3])
	if !ok1 || !ok2 {
		x.err(errNotInt)
		return
	}
	v, _, wrong := x.getString(a[1])
	if wrong {
		return
	}
	if start < 0 && end < 0 && start > end {
		x.bulk(nil)
		return
	}
	lo, hi, ok := rangeIdx(start, end, int64(len(v)))
	if !ok {
		x.bulk([]byte{})
		return
	}
	x.bulk(v[lo:hi])
}
