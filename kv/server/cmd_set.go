package server

import (
	"sort"
	"strconv"
)

func setCommands() []*cmdSpec {
	return []*cmdSpec{
		key1("sadd", -3, w, cmdSAdd),
		key1("srem", -3, wd, removeCmd[*setObj](kindSet)),
		key1("smembers", 2, ro, cmdSMembers),
		key1("sismember", 3, ro, cmdSIsMember),
		key1("smismember", -3, ro, cmdSMIsMember),
		key1("scard", 2, ro, countCmd[*setObj](kindSet)),
		key1("spop", -2, wd|flagCustomProp, cmdSPop),
		keysAll("sinter", -2, ro, func(x *ctx, a [][]byte) { setAlgebra(x, a[1:], 'i', nil) }),
		keysAll("sunion", -2, ro, func(x *ctx, a [][]byte) { setAlgebra(x, a[1:], 'u', nil) }),
		keysAll("sdiff", -2, ro, func(x *ctx, a [][]byte) { setAlgebra(x, a[1:], 'd', nil) }),
		keysAll("sinterstore", -3, w|flagCustomProp, func(x *ctx, a [][]byte) { setAlgebra(x, a[2:], 'i', a[1]) }),
		keysAll("sunionstore", -3, w|flagCustomProp, func(x *ctx, a [][]byte) { setAlgebra(x, a[2:], 'u', a[1]) }),
		keysAll("sdiffstore", -3, w|flagCustomProp, func(x *ctx, a [][]byte) { setAlgebra(x, a[2:], 'd', a[1]) }),
		{name: "smove", arity: 4, flags: w | flagCustomProp, first: 1, last: 2, fn: cmdSMove},
		key1("sscan", -3, ro, cmdSScan),
	}
}

func (x *ctx) set(key []byte, create bool) (*setObj, bool) {
	return collection[*setObj](x, key, kindSet, create)
}

func cmdSAdd(x *ctx, a [][]byte) {
	s, ok := x.set(a[1], true)
	if !ok {
		return
	}
	n := 0
	for _, m := range a[2:] {
		if s.add(m) {
			n++
		}
	}
	x.int(int64(n))
}

func cmdSMembers(x *ctx, a [][]byte) {
	s, ok := x.set(a[1], false)
	if !ok {
		return
	}
	if s == nil {
		x.setHdr(0)
		return
	}
	x.setHdr(s.d.len())
	s.d.each(func(k string, _ *struct{}) bool { x.bulkStr(k); return true })
}

func cmdSIsMember(x *ctx, a [][]byte) {
	s, ok := x.set(a[1], false)
	if !ok {
		return
	}
	x.boolInt(s != nil && s.has(a[2]))
}

func cmdSMIsMember(x *ctx, a [][]byte) {
	s, ok := x.set(a[1], false)
	if !ok {
		return
	}
	x.array(len(a) - 2)
	for _, m := range a[2:] {
		x.boolInt(s != nil && s.has(m))
	}
}

func cmdSPop(x *ctx, a [][]byte) {
	count, hasCount, ok := optCount(x, a, errSyntax)
	if !ok {
		return
	}
	s, ok := x.set(a[1], false)
	if !ok {
		return
	}
	if s == nil {
		if hasCount {
			x.setHdr(0)
		} else {
			x.null()
		}
		return
	}
	x.willWrite(a[1])
	n := min(int(count), s.d.len())
	if hasCount {
		x.setHdr(n)
	}
	for i := 0; i < n; i++ {
		m := s.d.random().key
		s.rem([]byte(m))
		x.bulkStr(m)
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("SREM"), a[1], []byte(m)}})
	}
	x.dropIfEmpty(a[1], s.d.len())
}

func setAlgebra(x *ctx, keys [][]byte, op byte, dst []byte) {
	sets := make([]*setObj, len(keys))
	for i, k := range keys {
		s, ok := x.set(k, false)
		if !ok {
			return
		}
		sets[i] = s
	}
	res := map[string]struct{}{}
	switch op {
	case 'u':
		for _, s := range sets {
			if s != nil {
				for _, m := range s.members() {
					res[m] = struct{}{}
				}
			}
		}
	case 'i':
		for _, s := range sets {
			if s == nil {
				res = map[string]struct{}{}
				goto done
			}
		}
		sort.Slice(sets, func(i, j int) bool { return sets[i].d.len() < sets[j].d.len() })
		for _, m := range sets[0].members() {
			in := true
			for _, s := range sets[1:] {
				if !s.has([]byte(m)) {
					in = false
					break
				}
			}
			if in {
				res[m] = struct{}{}
			}
		}
	case 'd':
		if sets[0] != nil {
			for _, m := range sets[0].members() {
				in := false
				for _, s := range sets[1:] {
					if s != nil && s.has([]byte(m)) {
						in = true
						break
					}
				}
				if !in {
					res[m] = struct{}{}
				}
			}
		}
	}
done:
	if dst == nil {
		x.setHdr(len(res))
		for m := range res {
			x.bulkStr(m)
		}
		return
	}
	x.delete(dst)
	if len(res) > 0 {
		e := x.create(dst, kindSet)
		s := e.set()
		for m := range res {
			s.add([]byte(m))
		}
		x.propRebuild(dst, e)
	} else {
		x.prop = append(x.prop, propRec{shardOf(dst), [][]byte{[]byte("DEL"), dst}})
	}
	x.int(int64(len(res)))
}

func cmdSMove(x *ctx, a [][]byte) {
	src, ok := x.set(a[1], false)
	if !ok {
		return
	}
	if e := x.get(a[2]); e != nil && e.kind != kindSet {
		x.err(errWrongType)
		return
	}
	if src == nil || !src.has(a[3]) {
		x.int(0)
		return
	}
	if string(a[1]) == string(a[2]) {
		x.int(1)
		return
	}
	x.willWrite(a[1])
	src.rem(a[3])
	x.dropIfEmpty(a[1], src.d.len())
	d, _ := x.set(a[2], true)
	d.add(a[3])
	x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("SREM"), a[1], a[3]}}, propRec{shardOf(a[2]), [][]byte{[]byte("SADD"), a[2], a[3]}})
	x.int(1)
}

func cmdSScan(x *ctx, a [][]byte) {
	cur, ok := parseCursor(x, a[2])
	if !ok {
		return
	}
	o, ok := x.scanArgs(a[3:], false)
	if !ok {
		return
	}
	s, ok := x.set(a[1], false)
	if !ok {
		return
	}
	var out []string
	if s != nil {
		steps := 0
		for {
			cur = s.d.scan(cur, func(k string, _ *struct{}) {
				if o.match == nil || globMatch(o.match, []byte(k), false) {
					out = append(out, k)
				}
			})
			steps++
			if cur == 0 || len(out) >= o.count || steps >= o.count*10 {
				break
			}
		}
	} else {
		cur = 0
	}
	x.array(2)
	x.bulkStr(strconv.FormatUint(cur, 10))
	x.array(len(out))
	for _, m := range out {
		x.bulkStr(m)
	}
}
