package server

import (
	"bytes"
	"math/rand/v2"
	"unsafe"
)

// Per-element overheads used in the memory estimate.
const (
	elemOverhead = 48
	smallHashMax = 128 // fields kept in insertion order in a flat slice (Redis's listpack)
	smallHashVal = 64
)

// hashObj is a hash: a flat field/value slice while small (insertion
// order, as Redis's listpack), a dict after.
type hashObj struct {
	flat [][]byte // field, value, field, value, …
	d    *dict[[]byte]
	mem  int64
}

func newHash() *hashObj { return &hashObj{} }

func (h *hashObj) len() int {
	if h.d != nil {
		return h.d.len()
	}
	return len(h.flat) / 2
}

func (h *hashObj) get(f []byte) ([]byte, bool) {
	if h.d != nil {
		v := h.d.find(bstr(f))
		if v == nil {
			return nil, false
		}
		return *v, true
	}
	for i := 0; i < len(h.flat); i += 2 {
		if bytes.Equal(h.flat[i], f) {
			return h.flat[i+1], true
		}
	}
	return nil, false
}

// set stores f = v (both copied); it reports whether f is new.
func (h *hashObj) set(f, v []byte) bool {
	v = bytes.Clone(v)
	if v == nil {
		v = []byte{}
	}
	if h.d == nil {
		for i := 0; i < len(h.flat); i += 2 {
			if bytes.Equal(h.flat[i], f) {
				h.mem += int64(len(v) - len(h.flat[i+1]))
				h.flat[i+1] = v
				return false
			}
		}
		if len(h.flat)/2 < smallHashMax && len(f) <= smallHashVal && len(v) <= smallHashVal {
			fc := bytes.Clone(f)
			if fc == nil {
				fc = []byte{}
			}
			h.flat = append(h.flat, fc, v)
			h.mem += int64(len(f) + len(v) + 16)
			return true
		}
		h.toDict()
	}
	p, created := h.d.upsert(bstr(f))
	if !created {
		h.mem += int64(len(v) - len(*p))
	} else {
		h.mem += int64(len(f) + len(v) + elemOverhead)
	}
	*p = v
	return created
}

func (h *hashObj) toDict() {
	h.d = newDict[[]byte]()
	h.mem = 0
	for i := 0; i < len(h.flat); i += 2 {
		p, _ := h.d.upsert(string(h.flat[i]))
		*p = h.flat[i+1]
		h.mem += int64(len(h.flat[i]) + len(h.flat[i+1]) + elemOverhead)
	}
	h.flat = nil
}

func (h *hashObj) rem(f []byte) bool {
	if h.d != nil {
		v, ok := h.d.remove(bstr(f))
		if ok {
			h.mem -= int64(len(f) + len(v) + elemOverhead)
		}
		return ok
	}
	for i := 0; i < len(h.flat); i += 2 {
		if bytes.Equal(h.flat[i], f) {
			h.mem -= int64(len(f) + len(h.flat[i+1]) + 16)
			h.flat = append(h.flat[:i], h.flat[i+2:]...)
			return true
		}
	}
	return false
}

func (h *hashObj) each(fn func(f string, v []byte) bool) {
	if h.d != nil {
		h.d.each(func(k string, v *[]byte) bool { return fn(k, *v) })
		return
	}
	for i := 0; i < len(h.flat); i += 2 {
		if !fn(string(h.flat[i]), h.flat[i+1]) {
			return
		}
	}
}

// setObj is a set.
type setObj struct {
	d   *dict[struct{}]
	mem int64
}

func newSet() *setObj { return &setObj{d: newDict[struct{}]()} }

func (s *setObj) add(m []byte) bool {
	_, created := s.d.upsert(bstr(m))
	if created {
		s.mem += int64(len(m) + elemOverhead/2)
	}
	return created
}

func (s *setObj) has(m []byte) bool { return s.d.find(bstr(m)) != nil }
func (s *setObj) len() int          { return s.d.len() }

func (s *setObj) rem(m []byte) bool {
	_, ok := s.d.remove(bstr(m))
	if ok {
		s.mem -= int64(len(m) + elemOverhead/2)
	}
	return ok
}

func (s *setObj) members() []string {
	out := make([]string, 0, s.d.len())
	s.d.each(func(k string, _ *struct{}) bool {
		out = append(out, k)
		return true
	})
	return out
}

// listObj is a list: a ring buffer, O(1) at both ends and by index.
type listObj struct {
	buf  [][]byte
	head int
	n    int
	mem  int64
}

func (l *listObj) len() int { return l.n }

func (l *listObj) at(i int) []byte { return l.buf[(l.head+i)%len(l.buf)] }

func (l *listObj) setAt(i int, v []byte) {
	j := (l.head + i) % len(l.buf)
	l.mem += int64(len(v) - len(l.buf[j]))
	l.buf[j] = v
}

func (l *listObj) grow() {
	if l.n < len(l.buf) {
		return
	}
	nb := make([][]byte, max(8, len(l.buf)*2))
	for i := 0; i < l.n; i++ {
		nb[i] = l.at(i)
	}
	l.buf, l.head = nb, 0
}

func (l *listObj) shrink() {
	if len(l.buf) > 64 && l.n < len(l.buf)/4 {
		nb := make([][]byte, len(l.buf)/2)
		for i := 0; i < l.n; i++ {
			nb[i] = l.at(i)
		}
		l.buf, l.head = nb, 0
	}
}

func own(v []byte) []byte {
	c := bytes.Clone(v)
	if c == nil {
		c = []byte{}
	}
	return c
}

func (l *listObj) pushBack(v []byte) {
	l.grow()
	l.buf[(l.head+l.n)%len(l.buf)] = own(v)
	l.n++
	l.mem += int64(len(v) + 24)
}

func (l *listObj) pushFront(v []byte) {
	l.grow()
	l.head = (l.head - 1 + len(l.buf)) % len(l.buf)
	l.buf[l.head] = own(v)
	l.n++
	l.mem += int64(len(v) + 24)
}

func (l *listObj) popFront() []byte {
	v := l.buf[l.head]
	l.buf[l.head] = nil
	l.head = (l.head + 1) % len(l.buf)
	l.n--
	l.mem -= int64(len(v) + 24)
	l.shrink()
	return v
}

func (l *listObj) popBack() []byte {
	j := (l.head + l.n - 1) % len(l.buf)
	v := l.buf[j]
	l.buf[j] = nil
	l.n--
	l.mem -= int64(len(v) + 24)
	l.shrink()
	return v
}

// removeAt deletes element i, shifting the shorter side.
func (l *listObj) removeAt(i int) {
	v := l.at(i)
	l.mem -= int64(len(v) + 24)
	if i < l.n/2 {
		for j := i; j > 0; j-- {
			l.buf[(l.head+j)%len(l.buf)] = l.at(j - 1)
		}
		l.buf[l.head] = nil
		l.head = (l.head + 1) % len(l.buf)
	} else {
		for j := i; j < l.n-1; j++ {
			l.buf[(l.head+j)%len(l.buf)] = l.at(j + 1)
		}
		l.buf[(l.head+l.n-1)%len(l.buf)] = nil
	}
	l.n--
}

// insertAt puts v before element i (i == n appends).
func (l *listObj) insertAt(i int, v []byte) {
	l.pushBack(v)
	for j := l.n - 1; j > i; j-- {
		l.buf[(l.head+j)%len(l.buf)] = l.at(j - 1)
	}
	l.buf[(l.head+i)%len(l.buf)] = own(v)
}

// zsetObj is a sorted set: a dict from member to score and a skiplist in
// (score, member) order, as Redis's.
type zsetObj struct {
	d   *dict[float64]
	zsl *skiplist
	mem int64
}

func newZSet() *zsetObj { return &zsetObj{d: newDict[float64](), zsl: newSkiplist()} }

func (z *zsetObj) len() int { return z.d.len() }

func (z *zsetObj) score(m []byte) (float64, bool) {
	p := z.d.find(bstr(m))
	if p == nil {
		return 0, false
	}
	return *p, true
}

// add sets m's score; it reports whether m is new.
func (z *zsetObj) add(m []byte, score float64) bool {
	p, created := z.d.upsert(bstr(m))
	if created {
		*p = score
		z.zsl.insert(score, string(m))
		z.mem += int64(len(m)*2 + 96)
		return true
	}
	if *p != score {
		z.zsl.updateScore(*p, string(m), score)
		*p = score
	}
	return false
}

func (z *zsetObj) rem(m []byte) bool {
	sc, ok := z.d.remove(bstr(m))
	if !ok {
		return false
	}
	z.zsl.delete(sc, string(m))
	z.mem -= int64(len(m)*2 + 96)
	return true
}

// skiplist is Redis's zskiplist: ordered by score then member, with spans
// for O(log n) rank.
type skiplist struct {
	head   *slNode
	tail   *slNode
	length int
	level  int
}

// slNode is a skiplist node; the fields a search reads (score, the level
// array) come first, and nodes of up to four levels (99.6% of them) carry
// their levels in the same allocation (newSlNode), as Redis's flexible
// array member does: one cache miss per node visited instead of two.
type slNode struct {
	score    float64
	level    []slLevel
	ele      string
	backward *slNode
}

type (
	slNode1 struct {
		n slNode
		l [1]slLevel
	}
	slNode2 struct {
		n slNode
		l [2]slLevel
	}
	slNode3 struct {
		n slNode
		l [3]slLevel
	}
	slNode4 struct {
		n slNode
		l [4]slLevel
	}
)

func newSlNode(lvl int, score float64, ele string) *slNode {
	var n *slNode
	switch lvl {
	case 1:
		b := &slNode1{}
		b.n.level = b.l[:]
		n = &b.n
	case 2:
		b := &slNode2{}
		b.n.level = b.l[:]
		n = &b.n
	case 3:
		b := &slNode3{}
		b.n.level = b.l[:]
		n = &b.n
	case 4:
		b := &slNode4{}
		b.n.level = b.l[:]
		n = &b.n
	default:
		n = &slNode{level: make([]slLevel, lvl)}
	}
	n.score, n.ele = score, ele
	return n
}

type slLevel struct {
	forward *slNode
	span    int
}

const slMaxLevel = 32

func newSkiplist() *skiplist {
	return &skiplist{head: &slNode{level: make([]slLevel, slMaxLevel)}, level: 1}
}

func randomLevel() int {
	lvl := 1
	for lvl < slMaxLevel && rand.Uint32()&0xFFFF < 0xFFFF/4 {
		lvl++
	}
	return lvl
}

// before reports whether n sorts before (score, ele); it reads n's member
// only when the scores tie (a search touches as little of each node as
// it can).
func (n *slNode) before(score float64, ele string) bool {
	return n.score < score || (n.score == score && n.ele < ele)
}

// after reports whether (score, ele) sorts before n.
func (n *slNode) after(score float64, ele string) bool {
	return score < n.score || (score == n.score && ele < n.ele)
}

func (sl *skiplist) insert(score float64, ele string) *slNode {
	var update [slMaxLevel]*slNode
	var rank [slMaxLevel]int
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		if i != sl.level-1 {
			rank[i] = rank[i+1]
		}
		for x.level[i].forward != nil && x.level[i].forward.before(score, ele) {
			rank[i] += x.level[i].span
			x = x.level[i].forward
		}
		update[i] = x
	}
	lvl := randomLevel()
	if lvl > sl.level {
		for i := sl.level; i < lvl; i++ {
			rank[i] = 0
			update[i] = sl.head
			update[i].level[i].span = sl.length
		}
		sl.level = lvl
	}
	n := newSlNode(lvl, score, ele)
	for i := 0; i < lvl; i++ {
		n.level[i].forward = update[i].level[i].forward
		update[i].level[i].forward = n
		n.level[i].span = update[i].level[i].span - (rank[0] - rank[i])
		update[i].level[i].span = rank[0] - rank[i] + 1
	}
	for i := lvl; i < sl.level; i++ {
		update[i].level[i].span++
	}
	if update[0] != sl.head {
		n.backward = update[0]
	}
	if n.level[0].forward != nil {
		n.level[0].forward.backward = n
	} else {
		sl.tail = n
	}
	sl.length++
	return n
}

func (sl *skiplist) deleteNode(x *slNode, update *[slMaxLevel]*slNode) {
	for i := 0; i < sl.level; i++ {
		if update[i].level[i].forward == x {
			update[i].level[i].span += x.level[i].span - 1
			update[i].level[i].forward = x.level[i].forward
		} else {
			update[i].level[i].span--
		}
	}
	if x.level[0].forward != nil {
		x.level[0].forward.backward = x.backward
	} else {
		sl.tail = x.backward
	}
	for sl.level > 1 && sl.head.level[sl.level-1].forward == nil {
		sl.level--
	}
	sl.length--
}

func (sl *skiplist) delete(score float64, ele string) bool {
	var update [slMaxLevel]*slNode
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		for x.level[i].forward != nil && x.level[i].forward.before(score, ele) {
			x = x.level[i].forward
		}
		update[i] = x
	}
	x = x.level[0].forward
	if x != nil && x.score == score && x.ele == ele {
		sl.deleteNode(x, &update)
		return true
	}
	return false
}

func (sl *skiplist) updateScore(cur float64, ele string, score float64) {
	sl.delete(cur, ele)
	sl.insert(score, ele)
}

// rank returns the 1-based rank of (score, ele), 0 when absent.
func (sl *skiplist) rank(score float64, ele string) int {
	r := 0
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		for x.level[i].forward != nil && !x.level[i].forward.after(score, ele) {
			r += x.level[i].span
			x = x.level[i].forward
		}
		if x != sl.head && x.ele == ele && x.score == score {
			return r
		}
	}
	return 0
}

// byRank returns the node at 1-based rank.
func (sl *skiplist) byRank(rank int) *slNode {
	t := 0
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		for x.level[i].forward != nil && t+x.level[i].span <= rank {
			t += x.level[i].span
			x = x.level[i].forward
		}
		if t == rank {
			return x
		}
	}
	return nil
}

// scoreRange is a ZRANGEBYSCORE interval.
type scoreRange struct {
	min, max     float64
	minex, maxex bool
}

func (r scoreRange) gteMin(v float64) bool {
	if r.minex {
		return v > r.min
	}
	return v >= r.min
}

func (r scoreRange) lteMax(v float64) bool {
	if r.maxex {
		return v < r.max
	}
	return v <= r.max
}

func (r scoreRange) empty() bool {
	return r.min > r.max || (r.min == r.max && (r.minex || r.maxex))
}

// firstIn returns the first node in r, or nil.
func (sl *skiplist) firstIn(r scoreRange) *slNode {
	if r.empty() {
		return nil
	}
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		for x.level[i].forward != nil && !r.gteMin(x.level[i].forward.score) {
			x = x.level[i].forward
		}
	}
	x = x.level[0].forward
	if x == nil || !r.lteMax(x.score) {
		return nil
	}
	return x
}

// lastIn returns the last node in r, or nil.
func (sl *skiplist) lastIn(r scoreRange) *slNode {
	if r.empty() {
		return nil
	}
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		for x.level[i].forward != nil && r.lteMax(x.level[i].forward.score) {
			x = x.level[i].forward
		}
	}
	if x == sl.head || !r.gteMin(x.score) {
		return nil
	}
	return x
}

// lexRange is a ZRANGEBYLEX interval; nil bounds are - and +.
type lexRange struct {
	min, max       string
	minInf, maxInf bool // - and +
	minNeg, maxPos bool // min is +, max is - (empty)
	minex, maxex   bool
}

func (r lexRange) gteMin(s string) bool {
	switch {
	case r.minInf:
		return true
	case r.minNeg:
		return false
	case r.minex:
		return s > r.min
	}
	return s >= r.min
}

func (r lexRange) lteMax(s string) bool {
	switch {
	case r.maxInf:
		return true
	case r.maxPos:
		return false
	case r.maxex:
		return s < r.max
	}
	return s <= r.max
}

func (sl *skiplist) firstInLex(r lexRange) *slNode {
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		for x.level[i].forward != nil && !r.gteMin(x.level[i].forward.ele) {
			x = x.level[i].forward
		}
	}
	x = x.level[0].forward
	if x == nil || !r.lteMax(x.ele) {
		return nil
	}
	return x
}

func (sl *skiplist) lastInLex(r lexRange) *slNode {
	x := sl.head
	for i := sl.level - 1; i >= 0; i-- {
		for x.level[i].forward != nil && r.lteMax(x.level[i].forward.ele) {
			x = x.level[i].forward
		}
	}
	if x == sl.head || !r.gteMin(x.ele) {
		return nil
	}
	return x
}

// cloneEntry deep-copies a value (COPY).
func cloneEntry(e *entry) entry {
	c := *e
	switch e.kind {
	case kindString:
		c.setStr(bytes.Clone(e.str()))
	case kindHash:
		h := newHash()
		e.hash().each(func(f string, v []byte) bool { h.set([]byte(f), v); return true })
		c.setObj(unsafe.Pointer(h))
	case kindList:
		l := &listObj{}
		src := e.list()
		for i := 0; i < src.len(); i++ {
			l.pushBack(src.at(i))
		}
		c.setObj(unsafe.Pointer(l))
	case kindSet:
		s := newSet()
		for _, m := range e.set().members() {
			s.add([]byte(m))
		}
		c.setObj(unsafe.Pointer(s))
	case kindZSet:
		z := newZSet()
		for n := e.zset().zsl.head.level[0].forward; n != nil; n = n.level[0].forward {
			z.add([]byte(n.ele), n.score)
		}
		c.setObj(unsafe.Pointer(z))
	}
	return c
}
