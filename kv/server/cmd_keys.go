package server

import (
	"math"
	"strconv"
	"strings"
)

func keyCommands() []*cmdSpec {
	return []*cmdSpec{
		keysAll("del", -2, wd|flagCustomProp, cmdDel),
		keysAll("unlink", -2, wd|flagCustomProp, cmdDel),
		keysAll("exists", -2, ro, cmdExists),
		keysAll("touch", -2, ro, cmdExists),
		key1("expire", -3, wd|flagCustomProp, func(x *ctx, a [][]byte) { expireCmd(x, a, 1000, false) }),
		key1("pexpire", -3, wd|flagCustomProp, func(x *ctx, a [][]byte) { expireCmd(x, a, 1, false) }),
		key1("expireat", -3, wd|flagCustomProp, func(x *ctx, a [][]byte) { expireCmd(x, a, 1000, true) }),
		key1("pexpireat", -3, wd|flagCustomProp, func(x *ctx, a [][]byte) { expireCmd(x, a, 1, true) }),
		key1("ttl", 2, ro, func(x *ctx, a [][]byte) { ttlCmd(x, a, 1000, false) }),
		key1("pttl", 2, ro, func(x *ctx, a [][]byte) { ttlCmd(x, a, 1, false) }),
		key1("expiretime", 2, ro, func(x *ctx, a [][]byte) { ttlCmd(x, a, 1000, true) }),
		key1("pexpiretime", 2, ro, func(x *ctx, a [][]byte) { ttlCmd(x, a, 1, true) }),
		key1("persist", 2, wd, cmdPersist),
		key1("type", 2, ro, cmdType),
		{name: "rename", arity: 3, flags: wd | flagCustomProp, first: 1, last: 2, fn: func(x *ctx, a [][]byte) { renameCmd(x, a, false) }},
		{name: "renamenx", arity: 3, flags: wd | flagCustomProp, first: 1, last: 2, fn: func(x *ctx, a [][]byte) { renameCmd(x, a, true) }},
		{name: "copy", arity: -3, flags: w | flagCustomProp, first: 1, last: 2, fn: cmdCopy},
		noKey("scan", -2, ro, cmdScan),
		noKey("keys", 2, ro, cmdKeys),
		noKey("randomkey", 1, ro, cmdRandomKey),
	}
}

func cmdDel(x *ctx, a [][]byte) {
	n := 0
	for _, k := range a[1:] {
		if x.get(k) != nil && x.delete(k) {
			n++
			x.prop = append(x.prop, propRec{shardOf(k), [][]byte{[]byte("DEL"), k}})
		}
	}
	x.int(int64(n))
}

func cmdExists(x *ctx, a [][]byte) {
	n := 0
	for _, k := range a[1:] {
		if x.get(k) != nil {
			n++
		}
	}
	x.int(int64(n))
}

func expireCmd(x *ctx, a [][]byte, unit int64, abs bool) {
	name := strings.ToLower(string(a[0]))
	n, ok := parseInt(a[2])
	if !ok {
		x.err(errNotInt)
		return
	}
	var nx, xx, gt, lt bool
	for _, o := range a[3:] {
		switch {
		case eqFold(o, "nx"):
			nx = true
		case eqFold(o, "xx"):
			xx = true
		case eqFold(o, "gt"):
			gt = true
		case eqFold(o, "lt"):
			lt = true
		default:
			x.err("ERR Unsupported option " + string(o))
			return
		}
	}
	if nx && (xx || gt || lt) {
		x.err("ERR NX and XX, GT or LT options at the same time are not compatible")
		return
	}
	if gt && lt {
		x.err("ERR GT and LT options at the same time are not compatible")
		return
	}
	if unit == 1000 && (n > math.MaxInt64/1000 || n < math.MinInt64/1000) {
		x.err("ERR invalid expire time in '" + name + "' command")
		return
	}
	ms := n * unit
	if !abs {
		if (ms > 0 && ms > math.MaxInt64-x.now) || (ms < 0 && ms < math.MinInt64+x.now) {
			x.err("ERR invalid expire time in '" + name + "' command")
			return
		}
		ms += x.now
	}
	e := x.get(a[1])
	if e == nil {
		x.int(0)
		return
	}
	cur := e.exp
	switch {
	case nx && cur != 0, xx && cur == 0:
		x.int(0)
		return
	case gt && (cur == 0 || ms <= cur):
		x.int(0)
		return
	case lt && cur != 0 && ms >= cur:
		x.int(0)
		return
	}
	if ms < x.now && !x.loading {
		x.delete(a[1])
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("DEL"), a[1]}})
		x.int(1)
		return
	}
	x.willWrite(a[1])
	x.setExp(a[1], e, ms)
	x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("PEXPIREAT"), a[1], strconv.AppendInt(nil, ms, 10)}})
	x.int(1)
}

func ttlCmd(x *ctx, a [][]byte, unit int64, abs bool) {
	e := x.get(a[1])
	switch {
	case e == nil:
		x.int(-2)
	case e.exp == 0:
		x.int(-1)
	case abs:
		x.int(e.exp / unit)
	default:
		left := e.exp - x.now
		if left < 0 {
			left = 0
		}
		x.int((left + unit/2) / unit)
	}
}

func cmdPersist(x *ctx, a [][]byte) {
	e := x.get(a[1])
	if e == nil || e.exp == 0 {
		x.int(0)
		return
	}
	x.willWrite(a[1])
	x.setExp(a[1], e, 0)
	x.int(1)
}

func cmdType(x *ctx, a [][]byte) {
	e := x.get(a[1])
	if e == nil {
		x.simple("none")
		return
	}
	x.simple(kindName(e.kind))
}

// moveEntry moves src's value to dst (dst replaced), keeping the expiry.
func (x *ctx) moveEntry(src, dst []byte) *entry {
	se := x.get(src)
	val := *se
	x.delete(src)
	x.get(dst)
	de := x.create(dst, val.kind)
	exp := val.exp
	val.exp = 0
	*de = val
	if exp != 0 {
		x.setExp(dst, de, exp)
	}
	return de
}

func renameCmd(x *ctx, a [][]byte, nx bool) {
	se := x.get(a[1])
	if se == nil {
		x.err(errNoSuchKey)
		return
	}
	if string(a[1]) == string(a[2]) {
		if nx {
			x.int(0)
		} else {
			x.ok()
		}
		return
	}
	if nx && x.get(a[2]) != nil {
		x.int(0)
		return
	}
	de := x.moveEntry(a[1], a[2])
	if shardOf(a[1]) == shardOf(a[2]) {
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("RENAME"), a[1], a[2]}})
	} else {
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("DEL"), a[1]}})
		x.propRebuild(a[2], de)
	}
	if nx {
		x.int(1)
	} else {
		x.ok()
	}
}

// propRebuild logs the commands that rebuild key's whole value.
func (x *ctx) propRebuild(key []byte, e *entry) {
	sh := shardOf(key)
	x.prop = append(x.prop, propRec{sh, [][]byte{[]byte("DEL"), key}})
	for _, c := range rebuildCommands(key, e) {
		x.prop = append(x.prop, propRec{sh, c})
	}
}

func cmdCopy(x *ctx, a [][]byte) {
	replace := false
	for i := 3; i < len(a); i++ {
		switch {
		case eqFold(a[i], "replace"):
			replace = true
		case eqFold(a[i], "db") && i+1 < len(a):
			x.err("ERR COPY to another database is not supported by tangram kv")
			return
		default:
			x.err(errSyntax)
			return
		}
	}
	se := x.get(a[1])
	if se == nil {
		x.int(0)
		return
	}
	if string(a[1]) == string(a[2]) {
		x.err("ERR source and destination objects are the same")
		return
	}
	if x.get(a[2]) != nil && !replace {
		x.int(0)
		return
	}
	val := cloneEntry(se)
	de := x.create(a[2], val.kind)
	exp := val.exp
	val.exp = 0
	*de = val
	if exp != 0 {
		x.setExp(a[2], de, exp)
	}
	x.propRebuild(a[2], de)
	x.int(1)
}

// scanArgs parses SCAN-family options.
type scanOpts struct {
	match   []byte
	count   int
	kind    uint8
	hasKind bool
}

func (x *ctx) scanArgs(a [][]byte, allowType bool) (scanOpts, bool) {
	o := scanOpts{count: 10}
	for i := 0; i < len(a); i += 2 {
		if i+1 >= len(a) {
			x.err(errSyntax)
			return o, false
		}
		switch {
		case eqFold(a[i], "match"):
			o.match = a[i+1]
			if len(o.match) == 1 && o.match[0] == '*' {
				o.match = nil
			}
		case eqFold(a[i], "count"):
			n, ok := parseInt(a[i+1])
			if !ok {
				x.err(errNotInt)
				return o, false
			}
			if n < 1 {
				x.err(errSyntax)
				return o, false
			}
			o.count = int(min(n, 1<<20))
		case eqFold(a[i], "type") && allowType:
			o.hasKind = true
			switch strings.ToLower(string(a[i+1])) {
			case "string":
				o.kind = kindString
			case "hash":
				o.kind = kindHash
			case "list":
				o.kind = kindList
			case "set":
				o.kind = kindSet
			case "zset":
				o.kind = kindZSet
			default:
				o.kind = 255 // matches nothing, as Redis
			}
		default:
			x.err(errSyntax)
			return o, false
		}
	}
	return o, true
}

func parseCursor(x *ctx, b []byte) (uint64, bool) {
	c, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		x.err("ERR invalid cursor")
		return 0, false
	}
	return c, true
}

// cmdScan walks the shards in order, each under its own lock only; the
// cursor keeps the shard in its low 6 bits and the shard table's
// reverse-binary cursor above them.
func cmdScan(x *ctx, a [][]byte) {
	cur, ok := parseCursor(x, a[1])
	if !ok {
		return
	}
	o, ok := x.scanArgs(a[2:], true)
	if !ok {
		return
	}
	sh := int(cur & (numShards - 1))
	inner := cur >> shardBits
	var keys []string
	for sh < numShards && len(keys) < o.count {
		s := &x.s.shards[sh]
		s.mu.Lock()
		t := s.dbs[x.db]
		steps := 0
		for t != nil && len(keys) < o.count && steps < o.count*10 {
			steps++
			inner = t.scan(inner, func(k string, e *entry) {
				if e.exp != 0 && e.exp < x.now {
					return
				}
				if o.hasKind && e.kind != o.kind {
					return
				}
				if o.match != nil && !globMatch(o.match, []byte(k), false) {
					return
				}
				keys = append(keys, k)
			})
			if inner == 0 {
				break
			}
		}
		s.mu.Unlock()
		if t == nil || inner == 0 {
			sh++
			inner = 0
			continue
		}
		break
	}
	next := uint64(0)
	if sh < numShards {
		next = inner<<shardBits | uint64(sh)
	}
	x.array(2)
	x.bulkStr(strconv.FormatUint(next, 10))
	x.array(len(keys))
	for _, k := range keys {
		x.bulkStr(k)
	}
}

// cmdKeys locks one shard at a time: a KEYS over a large key space slows
// its caller, not the server.
func cmdKeys(x *ctx, a [][]byte) {
	pat := a[1]
	all := len(pat) == 1 && pat[0] == '*'
	var keys []string
	for i := range x.s.shards {
		s := &x.s.shards[i]
		s.mu.Lock()
		if t := s.dbs[x.db]; t != nil {
			t.each(func(k string, e *entry) bool {
				if (e.exp == 0 || e.exp >= x.now) && (all || globMatch(pat, []byte(k), false)) {
					keys = append(keys, k)
				}
				return true
			})
		}
		s.mu.Unlock()
	}
	x.array(len(keys))
	for _, k := range keys {
		x.bulkStr(k)
	}
}

func cmdRandomKey(x *ctx, _ [][]byte) {
	start := int(uint64(x.now) * 2654435761 % numShards)
	for tries := 0; tries < numShards*2; tries++ {
		s := &x.s.shards[(start+tries)%numShards]
		s.mu.Lock()
		t := s.dbs[x.db]
		if t != nil && t.len() > 0 {
			for j := 0; j < 100; j++ {
				n := t.random()
				if n.val.exp == 0 || n.val.exp >= x.now {
					k := n.key
					s.mu.Unlock()
					x.bulkStr(k)
					return
				}
			}
		}
		s.mu.Unlock()
	}
	x.null()
}

// globMatch is Redis's stringmatchlen: * ? [set] [^set] [a-z] and \
// escapes.
func globMatch(p, s []byte, nocase bool) bool {
	return globAt(p, s, nocase, 0)
}

func globAt(p, s []byte, nocase bool, depth int) bool {
	if depth > 1000 {
		return false
	}
	lc := func(c byte) byte {
		if nocase && 'A' <= c && c <= 'Z' {
			return c + 32
		}
		return c
	}
	for len(p) > 0 {
		switch p[0] {
		case '*':
			for len(p) > 1 && p[1] == '*' {
				p = p[1:]
			}
			if len(p) == 1 {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if globAt(p[1:], s[i:], nocase, depth+1) {
					return true
				}
			}
			return false
		case '?':
			if len(s) == 0 {
				return false
			}
			s = s[1:]
			p = p[1:]
		case '[':
			if len(s) == 0 {
				return false
			}
			p = p[1:]
			not := len(p) > 0 && p[0] == '^'
			if not {
				p = p[1:]
			}
			match := false
			for len(p) > 0 && p[0] != ']' {
				switch {
				case p[0] == '\\' && len(p) >= 2:
					p = p[1:]
					if lc(p[0]) == lc(s[0]) {
						match = true
					}
					p = p[1:]
				case len(p) >= 3 && p[1] == '-':
					lo, hi := lc(p[0]), lc(p[2])
					if lo > hi {
						lo, hi = hi, lo
					}
					c := lc(s[0])
					if c >= lo && c <= hi {
						match = true
					}
					p = p[3:]
				default:
					if lc(p[0]) == lc(s[0]) {
						match = true
					}
					p = p[1:]
				}
			}
			if len(p) > 0 {
				p = p[1:] // the ']'
			}
			if not {
				match = !match
			}
			if !match {
				return false
			}
			s = s[1:]
		case '\\':
			if len(p) >= 2 {
				p = p[1:]
			}
			fallthrough
		default:
			if len(s) == 0 || lc(p[0]) != lc(s[0]) {
				return false
			}
			s = s[1:]
			p = p[1:]
		}
	}
	return len(s) == 0
}
