package server

import (
	"math"
	"strconv"
)

func zsetCommands() []*cmdSpec {
	return []*cmdSpec{
		key1("zadd", -4, w|flagCustomProp, cmdZAdd),
		key1("zincrby", 4, w|flagCustomProp, func(x *ctx, a [][]byte) {
			zadd(x, a[1], [][]byte{a[2], a[3]}, zaddOpts{incr: true}, true)
		}),
		key1("zscore", 3, ro, cmdZScore),
		key1("zmscore", -3, ro, cmdZMScore),
		key1("zrem", -3, wd, removeCmd[*zsetObj](kindZSet)),
		key1("zcard", 2, ro, countCmd[*zsetObj](kindZSet)),
		key1("zrank", 3, ro, func(x *ctx, a [][]byte) { zrank(x, a, false) }),
		key1("zrevrank", 3, ro, func(x *ctx, a [][]byte) { zrank(x, a, true) }),
		key1("zcount", 4, ro, cmdZCount),
		key1("zrange", -4, ro, func(x *ctx, a [][]byte) { zrange(x, a, "zrange") }),
		key1("zrevrange", -4, ro, func(x *ctx, a [][]byte) { zrange(x, a, "zrevrange") }),
		key1("zrangebyscore", -4, ro, func(x *ctx, a [][]byte) { zrange(x, a, "zrangebyscore") }),
		key1("zrevrangebyscore", -4, ro, func(x *ctx, a [][]byte) { zrange(x, a, "zrevrangebyscore") }),
		key1("zrangebylex", -4, ro, func(x *ctx, a [][]byte) { zrange(x, a, "zrangebylex") }),
		key1("zrevrangebylex", -4, ro, func(x *ctx, a [][]byte) { zrange(x, a, "zrevrangebylex") }),
		key1("zpopmin", -2, wd|flagCustomProp, func(x *ctx, a [][]byte) { zpop(x, a, false) }),
		key1("zpopmax", -2, wd|flagCustomProp, func(x *ctx, a [][]byte) { zpop(x, a, true) }),
		key1("zscan", -3, ro, cmdZScan),
	}
}

func (x *ctx) zset(key []byte, create bool) (*zsetObj, bool) {
	return collection[*zsetObj](x, key, kindZSet, create)
}

type zaddOpts struct{ nx, xx, gt, lt, ch, incr bool }

func cmdZAdd(x *ctx, a [][]byte) {
	var o zaddOpts
	i := 2
loop:
	for ; i < len(a); i++ {
		switch {
		case eqFold(a[i], "nx"):
			o.nx = true
		case eqFold(a[i], "xx"):
			o.xx = true
		case eqFold(a[i], "gt"):
			o.gt = true
		case eqFold(a[i], "lt"):
			o.lt = true
		case eqFold(a[i], "ch"):
			o.ch = true
		case eqFold(a[i], "incr"):
			o.incr = true
		default:
			break loop
		}
	}
	pairs := a[i:]
	if len(pairs) == 0 || len(pairs)%2 != 0 {
		x.err(errSyntax)
		return
	}
	if o.nx && o.xx {
		x.err("ERR XX and NX options at the same time are not compatible")
		return
	}
	if (o.gt && o.nx) || (o.lt && o.nx) || (o.gt && o.lt) {
		x.err("ERR GT, LT, and/or NX options at the same time are not compatible")
		return
	}
	if o.incr && len(pairs) > 2 {
		x.err("ERR INCR option supports a single increment-element pair")
		return
	}
	zadd(x, a[1], pairs, o, false)
}

// zadd applies score/member pairs; zincr is ZINCRBY (replies with the
// new score, errors worded for it).
func zadd(x *ctx, key []byte, pairs [][]byte, o zaddOpts, zincr bool) {
	scores := make([]float64, len(pairs)/2)
	for i := range scores {
		f, ok := parseFloat(pairs[2*i])
		if !ok {
			x.err(errNotFloat)
			return
		}
		scores[i] = f
	}
	z, ok := x.zset(key, false)
	if !ok {
		return
	}
	if z == nil && o.xx {
		if o.incr {
			x.null()
		} else {
			x.int(0)
		}
		return
	}
	z, _ = x.zset(key, true)
	added, changed := 0, 0
	var last float64
	skipped := false
	for i, sc := range scores {
		m := pairs[2*i+1]
		cur, exists := z.score(m)
		if o.incr {
			if exists {
				sc += cur
			}
			if math.IsNaN(sc) {
				x.dropIfEmpty(key, z.len())
				x.err("ERR resulting score is not a number (NaN)")
				return
			}
		}
		if (exists && o.nx) || (!exists && o.xx) || (exists && o.gt && sc <= cur) || (exists && o.lt && sc >= cur) {
			skipped = true
			continue
		}
		last = sc
		if !exists {
			z.add(m, sc)
			added++
		} else if cur != sc {
			z.add(m, sc)
			changed++
		}
		x.prop = append(x.prop, propRec{shardOf(key), [][]byte{[]byte("ZADD"), key, fmtScoreExact(sc), m}})
	}
	x.dropIfEmpty(key, z.len())
	if o.incr || zincr {
		if skipped && !zincr {
			x.null()
			return
		}
		x.score(last)
		return
	}
	if o.ch {
		x.int(int64(added + changed))
	} else {
		x.int(int64(added))
	}
}

// fmtScoreExact writes a score so that it reads back to the same float.
func fmtScoreExact(f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return []byte("inf")
	case math.IsInf(f, -1):
		return []byte("-inf")
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64)
}

func cmdZScore(x *ctx, a [][]byte) {
	z, ok := x.zset(a[1], false)
	if !ok {
		return
	}
	if z == nil {
		x.null()
		return
	}
	sc, has := z.score(a[2])
	if !has {
		x.null()
		return
	}
	x.score(sc)
}

func cmdZMScore(x *ctx, a [][]byte) {
	z, ok := x.zset(a[1], false)
	if !ok {
		return
	}
	x.array(len(a) - 2)
	for _, m := range a[2:] {
		if z == nil {
			x.null()
			continue
		}
		sc, has := z.score(m)
		if !has {
			x.null()
			continue
		}
		x.score(sc)
	}
}

func zrank(x *ctx, a [][]byte, rev bool) {
	z, ok := x.zset(a[1], false)
	if !ok {
		return
	}
	if z == nil {
		x.null()
		return
	}
	sc, has := z.score(a[2])
	if !has {
		x.null()
		return
	}
	r := z.zsl.rank(sc, string(a[2]))
	if rev {
		x.int(int64(z.len() - r))
	} else {
		x.int(int64(r - 1))
	}
}

func parseScoreBound(b []byte) (float64, bool, bool) {
	ex := false
	if len(b) > 0 && b[0] == '(' {
		ex = true
		b = b[1:]
	}
	f, ok := parseFloat(b)
	return f, ex, ok
}

func parseScoreRange(minB, maxB []byte) (scoreRange, bool) {
	var r scoreRange
	var ok1, ok2 bool
	r.min, r.minex, ok1 = parseScoreBound(minB)
	r.max, r.maxex, ok2 = parseScoreBound(maxB)
	return r, ok1 && ok2
}

func parseLexBound(b []byte, isMin bool, r *lexRange) bool {
	if len(b) == 0 {
		return false
	}
	switch b[0] {
	case '+':
		if len(b) != 1 {
			return false
		}
		if isMin {
			r.minNeg = true
		} else {
			r.maxInf = true
		}
	case '-':
		if len(b) != 1 {
			return false
		}
		if isMin {
			r.minInf = true
		} else {
			r.maxPos = true
		}
	case '(', '[':
		if isMin {
			r.min, r.minex = string(b[1:]), b[0] == '('
		} else {
			r.max, r.maxex = string(b[1:]), b[0] == '('
		}
	default:
		return false
	}
	return true
}

func cmdZCount(x *ctx, a [][]byte) {
	r, ok := parseScoreRange(a[2], a[3])
	if !ok {
		x.err("ERR min or max is not a float")
		return
	}
	z, ok := x.zset(a[1], false)
	if !ok {
		return
	}
	if z == nil {
		x.int(0)
		return
	}
	n := 0
	for e := z.zsl.firstIn(r); e != nil && r.lteMax(e.score); e = e.level[0].forward {
		n++
	}
	x.int(int64(n))
}

// zrange serves ZRANGE in all its forms and the older ZRANGEBYSCORE,
// ZREVRANGE… commands.
func zrange(x *ctx, a [][]byte, form string) {
	by := "rank"
	rev := false
	switch form {
	case "zrevrange":
		rev = true
	case "zrangebyscore":
		by = "score"
	case "zrevrangebyscore":
		by, rev = "score", true
	case "zrangebylex":
		by = "lex"
	case "zrevrangebylex":
		by, rev = "lex", true
	}
	minB, maxB := a[2], a[3]
	withScores, limit := false, false
	var off, cnt int64 = 0, -1
	for i := 4; i < len(a); i++ {
		switch {
		case eqFold(a[i], "withscores") && by != "lex":
			withScores = true
		case eqFold(a[i], "limit") && i+2 < len(a) && (form != "zrange" && form != "zrevrange" || form == "zrange"):
			o, ok1 := parseInt(a[i+1])
			c, ok2 := parseInt(a[i+2])
			if !ok1 || !ok2 {
				x.err(errNotInt)
				return
			}
			off, cnt, limit = o, c, true
			i += 2
		case eqFold(a[i], "byscore") && form == "zrange" && by == "rank":
			by = "score"
		case eqFold(a[i], "bylex") && form == "zrange" && by == "rank":
			by = "lex"
		case eqFold(a[i], "rev") && form == "zrange":
			rev = true
		default:
			x.err(errSyntax)
			return
		}
	}
	if limit && by == "rank" {
		x.err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")
		return
	}
	if withScores && by == "lex" {
		x.err("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
		return
	}
	if form == "zrange" && rev && by != "rank" {
		minB, maxB = maxB, minB
	}
	if (form == "zrevrangebyscore" || form == "zrevrangebylex") && by != "rank" {
		minB, maxB = maxB, minB
	}
	var nodes []*slNode
	switch by {
	case "rank":
		start, ok1 := parseInt(minB)
		end, ok2 := parseInt(maxB)
		if !ok1 || !ok2 {
			x.err(errNotInt)
			return
		}
		z, ok := x.zset(a[1], false)
		if !ok {
			return
		}
		if z == nil {
			x.array(0)
			return
		}
		lo, hi, ok := rangeIdx(start, end, int64(z.len()))
		if ok {
			if rev {
				n := z.zsl.byRank(z.len() - int(lo))
				for i := lo; i < hi && n != nil; i++ {
					nodes = append(nodes, n)
					n = n.backward
				}
			} else {
				n := z.zsl.byRank(int(lo) + 1)
				for i := lo; i < hi && n != nil; i++ {
					nodes = append(nodes, n)
					n = n.level[0].forward
				}
			}
		}
	case "score":
		r, ok := parseScoreRange(minB, maxB)
		if !ok {
			x.err("ERR min or max is not a float")
			return
		}
		z, ok := x.zset(a[1], false)
		if !ok {
			return
		}
		if z != nil {
			var n *slNode
			if rev {
				n = z.zsl.lastIn(r)
			} else {
				n = z.zsl.firstIn(r)
			}
			nodes = walkRange(n, rev, off, cnt, func(n *slNode) bool { return r.gteMin(n.score) && r.lteMax(n.score) })
		}
	case "lex":
		var r lexRange
		if !parseLexBound(minB, true, &r) || !parseLexBound(maxB, false, &r) {
			x.err("ERR min or max not valid string range item")
			return
		}
		z, ok := x.zset(a[1], false)
		if !ok {
			return
		}
		if z != nil {
			var n *slNode
			if rev {
				n = z.zsl.lastInLex(r)
			} else {
				n = z.zsl.firstInLex(r)
			}
			nodes = walkRange(n, rev, off, cnt, func(n *slNode) bool { return r.gteMin(n.ele) && r.lteMax(n.ele) })
		}
	}
	if withScores && x.c.v3 {
		x.array(len(nodes))
		for _, n := range nodes {
			x.array(2)
			x.bulkStr(n.ele)
			x.score(n.score)
		}
		return
	}
	if withScores {
		x.array(2 * len(nodes))
	} else {
		x.array(len(nodes))
	}
	for _, n := range nodes {
		x.bulkStr(n.ele)
		if withScores {
			x.score(n.score)
		}
	}
}

// walkRange collects, from n onwards (backwards when rev), the nodes still
// in range, skipping off of them and taking at most cnt (cnt < 0: all; off
// < 0: none), as ZRANGE's LIMIT does.
func walkRange(n *slNode, rev bool, off, cnt int64, in func(*slNode) bool) []*slNode {
	var nodes []*slNode
	for ; n != nil && off > 0; off-- {
		n = step(n, rev)
	}
	for ; n != nil && cnt != 0 && in(n); n = step(n, rev) {
		if off < 0 {
			break
		}
		nodes = append(nodes, n)
		cnt--
	}
	return nodes
}

func step(n *slNode, rev bool) *slNode {
	if rev {
		return n.backward
	}
	return n.level[0].forward
}

func zpop(x *ctx, a [][]byte, maxSide bool) {
	count, hasCount, ok := optCount(x, a, errSyntax)
	if !ok {
		return
	}
	z, ok := x.zset(a[1], false)
	if !ok {
		return
	}
	if z == nil || count == 0 {
		x.array(0)
		return
	}
	x.willWrite(a[1])
	n := min(int(count), z.len())
	if x.c.v3 && hasCount {
		x.array(n)
	} else {
		x.array(2 * n)
	}
	for i := 0; i < n; i++ {
		var nd *slNode
		if maxSide {
			nd = z.zsl.tail
		} else {
			nd = z.zsl.head.level[0].forward
		}
		ele, sc := nd.ele, nd.score
		z.rem([]byte(ele))
		if x.c.v3 && hasCount {
			x.array(2)
		}
		x.bulkStr(ele)
		x.score(sc)
		x.prop = append(x.prop, propRec{shardOf(a[1]), [][]byte{[]byte("ZREM"), a[1], []byte(ele)}})
	}
	x.dropIfEmpty(a[1], z.len())
}

func cmdZScan(x *ctx, a [][]byte) {
	cur, ok := parseCursor(x, a[2])
	if !ok {
		return
	}
	o, ok := x.scanArgs(a[3:], false)
	if !ok {
		return
	}
	z, ok := x.zset(a[1], false)
	if !ok {
		return
	}
	var out [][]byte
	if z != nil {
		steps := 0
		for {
			cur = z.d.scan(cur, func(k string, v *float64) {
				if o.match == nil || globMatch(o.match, []byte(k), false) {
					out = append(out, []byte(k), fmtScore(*v))
				}
			})
			steps++
			if cur == 0 || len(out)/2 >= o.count || steps >= o.count*10 {
				break
			}
		}
	} else {
		cur = 0
	}
	x.array(2)
	x.bulkStr(strconv.FormatUint(cur, 10))
	x.array(len(out))
	for _, b := range out {
		x.bulk(b)
	}
}
