package server

import (
	"strconv"
	"time"
)

func listCommands() []*cmdSpec {
	return []*cmdSpec{
		key1("lpush", -3, w, func(x *ctx, a [][]byte) { pushCmd(x, a, true, false) }),
		key1("rpush", -3, w, func(x *ctx, a [][]byte) { pushCmd(x, a, false, false) }),
		key1("lpushx", -3, w, func(x *ctx, a [][]byte) { pushCmd(x, a, true, true) }),
		key1("rpushx", -3, w, func(x *ctx, a [][]byte) { pushCmd(x, a, false, true) }),
		key1("lpop", -2, wd, func(x *ctx, a [][]byte) { popCmd(x, a, true) }),
		key1("rpop", -2, wd, func(x *ctx, a [][]byte) { popCmd(x, a, false) }),
		key1("llen", 2, ro, countCmd[*listObj](kindList)),
		key1("lrange", 4, ro, cmdLRange),
		key1("lindex", 3, ro, cmdLIndex),
		key1("lset", 4, w, cmdLSet),
		key1("lrem", 4, wd, cmdLRem),
		key1("ltrim", 4, wd, cmdLTrim),
		key1("linsert", 5, w, cmdLInsert),
		{name: "lmove", arity: 5, flags: w | flagCustomProp, first: 1, last: 2, fn: cmdLMove},
		{name: "rpoplpush", arity: 3, flags: w | flagCustomProp, first: 1, last: 2, fn: func(x *ctx, a [][]byte) {
			lmove(x, a[1], a[2], false, true)
		}},
		noKey("blpop", -3, w|flagNoMulti|flagMayWait, func(x *ctx, a [][]byte) { blockingPop(x, a, true) }),
		noKey("brpop", -3, w|flagNoMulti|flagMayWait, func(x *ctx, a [][]byte) { blockingPop(x, a, false) }),
		noKey("blmove", 6, w|flagNoMulti|flagMayWait, cmdBLMove),
	}
}

func (x *ctx) list(key []byte, create bool) (*listObj, bool) {
	return collection[*listObj](x, key, kindList, create)
}

func pushCmd(x *ctx, a [][]byte, front, onlyIfExists bool) {
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil && onlyIfExists {
		x.int(0)
		return
	}
	l, _ = x.list(a[1], true)
	for _, v := range a[2:] {
		if front {
			l.pushFront(v)
		} else {
			l.pushBack(v)
		}
	}
	x.int(int64(l.len()))
}

func popCmd(x *ctx, a [][]byte, front bool) {
	count, hasCount, ok := optCount(x, a, "ERR wrong number of arguments for '"+lowerName(a[0])+"' command")
	if !ok {
		return
	}
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil {
		if hasCount {
			x.nullArray()
		} else {
			x.null()
		}
		return
	}
	if hasCount && count == 0 {
		x.array(0)
		return
	}
	x.willWrite(a[1])
	n := min(int(count), l.len())
	if hasCount {
		x.array(n)
	}
	for i := 0; i < n; i++ {
		if front {
			x.bulk(l.popFront())
		} else {
			x.bulk(l.popBack())
		}
	}
	x.dropIfEmpty(a[1], l.len())
}

func cmdLRange(x *ctx, a [][]byte) {
	start, ok1 := parseInt(a[2])
	end, ok2 := parseInt(a[3])
	if !ok1 || !ok2 {
		x.err(errNotInt)
		return
	}
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil {
		x.array(0)
		return
	}
	lo, hi, ok := rangeIdx(start, end, int64(l.len()))
	if !ok {
		x.array(0)
		return
	}
	x.array(int(hi - lo))
	for i := lo; i < hi; i++ {
		x.bulk(l.at(int(i)))
	}
}

func cmdLIndex(x *ctx, a [][]byte) {
	i, ok := x.intArg(a[2])
	if !ok {
		return
	}
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil {
		x.null()
		return
	}
	if i < 0 {
		i += int64(l.len())
	}
	if i < 0 || i >= int64(l.len()) {
		x.null()
		return
	}
	x.bulk(l.at(int(i)))
}

func cmdLSet(x *ctx, a [][]byte) {
	i, ok := x.intArg(a[2])
	if !ok {
		return
	}
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil {
		x.err(errNoSuchKey)
		return
	}
	if i < 0 {
		i += int64(l.len())
	}
	if i < 0 || i >= int64(l.len()) {
		x.err(errIndexRange)
		return
	}
	x.willWrite(a[1])
	l.setAt(int(i), own(a[3]))
	x.ok()
}

func cmdLRem(x *ctx, a [][]byte) {
	count, ok := x.intArg(a[2])
	if !ok {
		return
	}
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil {
		x.int(0)
		return
	}
	x.willWrite(a[1])
	removed := int64(0)
	if count >= 0 {
		for i := 0; i < l.len(); {
			if string(l.at(i)) == string(a[3]) && (count == 0 || removed < count) {
				l.removeAt(i)
				removed++
				continue
			}
			i++
		}
	} else {
		for i := l.len() - 1; i >= 0; i-- {
			if string(l.at(i)) == string(a[3]) && removed < -count {
				l.removeAt(i)
				removed++
			}
		}
	}
	x.dropIfEmpty(a[1], l.len())
	x.int(removed)
}

func cmdLTrim(x *ctx, a [][]byte) {
	start, ok1 := parseInt(a[2])
	end, ok2 := parseInt(a[3])
	if !ok1 || !ok2 {
		x.err(errNotInt)
		return
	}
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil {
		x.ok()
		return
	}
	x.willWrite(a[1])
	lo, hi, keep := rangeIdx(start, end, int64(l.len()))
	if !keep {
		lo, hi = 0, 0
	}
	for n := int64(l.len()) - hi; n > 0; n-- {
		l.popBack()
	}
	for ; lo > 0; lo-- {
		l.popFront()
	}
	x.dropIfEmpty(a[1], l.len())
	x.ok()
}

func cmdLInsert(x *ctx, a [][]byte) {
	before := eqFold(a[2], "before")
	if !before && !eqFold(a[2], "after") {
		x.err(errSyntax)
		return
	}
	l, ok := x.list(a[1], false)
	if !ok {
		return
	}
	if l == nil {
		x.int(0)
		return
	}
	for i := 0; i < l.len(); i++ {
		if string(l.at(i)) == string(a[3]) {
			x.willWrite(a[1])
			if !before {
				i++
			}
			l.insertAt(i, a[4])
			x.int(int64(l.len()))
			return
		}
	}
	x.int(-1)
}

func side(b []byte) (front bool, ok bool) {
	switch {
	case eqFold(b, "left"):
		return true, true
	case eqFold(b, "right"):
		return false, true
	}
	return false, false
}

func cmdLMove(x *ctx, a [][]byte) {
	from, ok1 := side(a[3])
	to, ok2 := side(a[4])
	if !ok1 || !ok2 {
		x.err(errSyntax)
		return
	}
	lmove(x, a[1], a[2], from, to)
}

// lmove pops from src and pushes onto dst, replying with the element (or
// null); it reports whether an element moved.
func lmove(x *ctx, src, dst []byte, fromFront, toFront bool) bool {
	l, ok := x.list(src, false)
	if !ok {
		return false
	}
	if l == nil {
		x.null()
		return false
	}
	if e := x.get(dst); e != nil && e.kind != kindList {
		x.err(errWrongType)
		return false
	}
	x.willWrite(src)
	var v []byte
	if fromFront {
		v = l.popFront()
	} else {
		v = l.popBack()
	}
	x.dropIfEmpty(src, l.len())
	d, _ := x.list(dst, true)
	if toFront {
		d.pushFront(v)
	} else {
		d.pushBack(v)
	}
	pop, push := "RPOP", "RPUSH"
	if fromFront {
		pop = "LPOP"
	}
	if toFront {
		push = "LPUSH"
	}
	x.prop = append(x.prop, propRec{shardOf(src), [][]byte{[]byte(pop), src}}, propRec{shardOf(dst), [][]byte{[]byte(push), dst, v}})
	x.bulk(v)
	return true
}

// waiter is a client blocked on list keys.
type waiter struct {
	ch chan struct{}
}

func (s *Server) signalWaiters(sh *shard, k wkey) {
	for _, w := range sh.waiters[k] {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

func (s *Server) wakeAllWaiters() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, ws := range sh.waiters {
			for _, w := range ws {
				select {
				case w.ch <- struct{}{}:
				default:
				}
			}
		}
		sh.mu.Unlock()
	}
}

// block runs try (which locks what it needs and reports whether it
// served the client) until it succeeds, the timeout passes or the server
// closes; between tries the client waits for a push on one of keys.
func (x *ctx) block(keys [][]byte, timeout time.Duration, try func() bool) bool {
	w := &waiter{ch: make(chan struct{}, 1)}
	s := x.s
	reg := func(add bool) {
		for _, k := range keys {
			sh := &s.shards[shardOf(k)]
			sh.mu.Lock()
			wk := wkey{x.db, string(k)}
			if add {
				if sh.waiters == nil {
					sh.waiters = map[wkey][]*waiter{}
				}
				sh.waiters[wk] = append(sh.waiters[wk], w)
			} else {
				ws := sh.waiters[wk]
				for i, o := range ws {
					if o == w {
						ws = append(ws[:i], ws[i+1:]...)
						break
					}
				}
				if len(ws) == 0 {
					delete(sh.waiters, wk)
				} else {
					sh.waiters[wk] = ws
				}
			}
			sh.mu.Unlock()
		}
	}
	reg(true)
	defer reg(false)
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	x.c.blocked.Store(true)
	defer x.c.blocked.Store(false)
	if x.c.conn != nil {
		x.c.conn.SetReadDeadline(time.Time{})
		defer x.c.watchHangup()()
	}
	for {
		if try() {
			return true
		}
		select {
		case <-w.ch:
		case <-deadline:
			return false
		case <-x.c.closing:
			return false
		case <-s.stop:
			return false
		}
	}
}

func timeoutArg(x *ctx, b []byte) (time.Duration, bool) {
	f, ok := parseFloat(b)
	if !ok {
		x.err("ERR timeout is not a float or out of range")
		return 0, false
	}
	if f < 0 {
		x.err("ERR timeout is negative")
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

// runLocked runs fn with the shards of keys locked, then the write's
// bookkeeping (log, watchers).
func (x *ctx) runLocked(keys [][]byte, fn func()) {
	var mask uint64
	for _, k := range keys {
		mask |= 1 << shardOf(k)
	}
	x.s.lockMask(mask)
	x.locked = mask
	x.memo = memo{} // a new lock section: what the memo points at may be gone
	x.touched, x.prop = x.touched[:0], x.prop[:0]
	x.now = nowMs()
	fn()
	x.finish(nil, nil)
	x.s.unlockMask(mask)
	x.locked = 0
	x.memo = memo{} // a new lock section: what the memo points at may be gone
}

func blockingPop(x *ctx, a [][]byte, front bool) {
	timeout, ok := timeoutArg(x, a[len(a)-1])
	if !ok {
		return
	}
	keys := a[1 : len(a)-1]
	served := x.block(keys, timeout, func() bool {
		done := false
		x.runLocked(keys, func() {
			for _, k := range keys {
				l, ok := x.list(k, false)
				if !ok {
					done = true
					return
				}
				if l == nil {
					continue
				}
				x.willWrite(k)
				var v []byte
				pop := "RPOP"
				if front {
					v, pop = l.popFront(), "LPOP"
				} else {
					v = l.popBack()
				}
				x.dropIfEmpty(k, l.len())
				x.prop = append(x.prop, propRec{shardOf(k), [][]byte{[]byte(pop), k}})
				x.array(2)
				x.bulk(k)
				x.bulk(v)
				done = true
				return
			}
		})
		return done
	})
	if !served {
		x.nullArray()
	}
}

func cmdBLMove(x *ctx, a [][]byte) {
	from, ok1 := side(a[3])
	to, ok2 := side(a[4])
	if !ok1 || !ok2 {
		x.err(errSyntax)
		return
	}
	timeout, ok := timeoutArg(x, a[5])
	if !ok {
		return
	}
	keys := [][]byte{a[1], a[2]}
	served := x.block(a[1:2], timeout, func() bool {
		moved := false
		x.runLocked(keys, func() {
			if e := x.get(a[1]); e == nil {
				return
			}
			lmove(x, a[1], a[2], from, to)
			moved = true
		})
		return moved
	})
	if !served {
		x.null()
	}
}

var _ = strconv.Itoa
