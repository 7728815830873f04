package server

import (
	"slices"
	"sync"
	"time"
)

// wheel is a hierarchical timing wheel with millisecond ticks (Varghese &
// Lauck; Kafka's purgatory): level 0 has 512 one-tick slots, level 1 64
// slots of 512 ticks, level 2 64 slots of 32,768 ticks (about 35 minutes in
// all); later timers wait in an overflow list. Adding and removing a timer
// is O(1); advancing costs the slots passed, and skips empty stretches a
// block at a time. The trigger loop sleeps until nextDue.
type wheel struct {
	mu      sync.Mutex
	origin  time.Time // time of tick 0
	cur     int64     // ticks before cur have been fired
	levels  [3][][]*timer
	count   [3]int
	over    []*timer
	late    []*timer // added after their tick had passed: fire at the next advance
	byKey   map[any]*timer
	changed chan struct{} // an add may have moved nextDue earlier
}

const (
	wheelTick = time.Millisecond
	l0Slots   = 512
	l1Slots   = 64
	l2Slots   = 64
	l1Span    = l0Slots           // ticks per level-1 slot
	l2Span    = l0Slots * l1Slots // ticks per level-2 slot
	levelNone = -1
	levelOver = 3
	levelLate = 4
)

type timer struct {
	key   any
	at    int64 // tick
	level int
	slot  int
	idx   int
	value any
}

// newWheel starts a wheel at now, truncated to the millisecond: fire times
// are whole milliseconds, so a tick boundary is exactly a fire time. The
// origin keeps now's monotonic reading (Add keeps it, Truncate would not),
// so the wheel advances on the monotonic clock: a step of the wall clock
// (NTP, a VM resuming) cannot fire a timer early. A wall-clock fire time
// is placed on the wheel by its distance from the wall clock when added.
func newWheel(now time.Time) *wheel {
	origin := now.Add(-time.Duration(now.UnixNano() % int64(time.Millisecond)))
	w := &wheel{origin: origin, byKey: map[any]*timer{}, changed: make(chan struct{}, 1)}
	w.levels[0] = make([][]*timer, l0Slots)
	w.levels[1] = make([][]*timer, l1Slots)
	w.levels[2] = make([][]*timer, l2Slots)
	return w
}

// tickOf is the last tick that began at or before t (rounding down): the
// tick advance may fire when it is t.
func (w *wheel) tickOf(t time.Time) int64 {
	d := t.Sub(w.origin)
	if d < 0 {
		return 0
	}
	return int64(d / wheelTick)
}

// tickAfter is the first tick that begins at or after t (rounding up): the
// tick a timer due at t is filed under, so it never fires before t.
func (w *wheel) tickAfter(t time.Time) int64 {
	d := t.Sub(w.origin)
	if d <= 0 {
		return 0
	}
	return int64((d + wheelTick - 1) / wheelTick)
}

func (w *wheel) timeOf(tick int64) time.Time { return w.origin.Add(time.Duration(tick) * wheelTick) }

// add schedules value under key at t, replacing an earlier timer of key.
// A time already past fires at the next advance; otherwise the timer fires
// at the first advance whose now is at or after at — never before.
func (w *wheel) add(key any, at time.Time, value any) {
	w.mu.Lock()
	if old := w.byKey[key]; old != nil {
		w.unlink(old)
	}
	t := &timer{key: key, at: w.tickAfter(at), value: value}
	w.byKey[key] = t
	w.insert(t)
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// remove cancels key's timer; it reports whether there was one.
func (w *wheel) remove(key any) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.byKey[key]
	if t == nil {
		return false
	}
	w.unlink(t)
	delete(w.byKey, key)
	return true
}

// taken is a timer removed by take.
type taken struct {
	at    time.Time
	value any
}

// take removes the timers whose key matches and returns them in time order.
func (w *wheel) take(match func(key any) bool) []taken {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []taken
	for key, t := range w.byKey {
		if match(key) {
			out = append(out, taken{w.timeOf(t.at), t.value})
			w.unlink(t)
			delete(w.byKey, key)
		}
	}
	slices.SortFunc(out, func(a, b taken) int { return a.at.Compare(b.at) })
	return out
}

// has reports whether key has a timer, and when.
func (w *wheel) has(key any) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.byKey[key]
	if t == nil {
		return time.Time{}, false
	}
	return w.timeOf(t.at), true
}

func (w *wheel) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byKey)
}

func (w *wheel) insert(t *timer) {
	if t.at < w.cur {
		t.level, t.idx = levelLate, len(w.late)
		w.late = append(w.late, t)
		return
	}
	at := t.at
	switch {
	case at/l1Span == w.cur/l1Span:
		t.level, t.slot = 0, int(at%l0Slots)
	case at/l1Span-w.cur/l1Span < l1Slots:
		t.level, t.slot = 1, int((at/l1Span)%l1Slots)
	case at/l2Span-w.cur/l2Span < l2Slots:
		t.level, t.slot = 2, int((at/l2Span)%l2Slots)
	default:
		t.level, t.idx = levelOver, len(w.over)
		w.over = append(w.over, t)
		return
	}
	s := w.levels[t.level][t.slot]
	t.idx = len(s)
	w.levels[t.level][t.slot] = append(s, t)
	w.count[t.level]++
}

func (w *wheel) unlink(t *timer) {
	var s []*timer
	switch t.level {
	case levelOver:
		s = w.over
	case levelLate:
		s = w.late
	default:
		s = w.levels[t.level][t.slot]
	}
	last := len(s) - 1
	s[t.idx] = s[last]
	s[t.idx].idx = t.idx
	s[last] = nil
	s = s[:last]
	switch t.level {
	case levelOver:
		w.over = s
	case levelLate:
		w.late = s
	default:
		w.levels[t.level][t.slot] = s
		w.count[t.level]--
	}
	t.level = levelNone
}

// advance fires every timer due at or before now, in tick order, and
// returns their values.
func (w *wheel) advance(now time.Time) []any {
	w.mu.Lock()
	defer w.mu.Unlock()
	target := w.tickOf(now)
	var due []any
	for _, t := range w.late {
		due = append(due, t.value)
		delete(w.byKey, t.key)
		t.level = levelNone
	}
	clear(w.late)
	w.late = w.late[:0]
	for w.cur <= target {
		if w.count[0] == 0 {
			// Nothing in this block: jump to the next one.
			nb := (w.cur/l1Span + 1) * l1Span
			if nb > target {
				w.cur = target + 1
				if w.cur == nb {
					w.cascade()
				}
				break
			}
			w.cur = nb
			w.cascade()
			continue
		}
		slot := int(w.cur % l0Slots)
		if s := w.levels[0][slot]; len(s) > 0 {
			keep := s[:0]
			for _, t := range s {
				if t.at <= w.cur {
					due = append(due, t.value)
					delete(w.byKey, t.key)
					t.level = levelNone
					w.count[0]--
				} else {
					t.idx = len(keep)
					keep = append(keep, t)
				}
			}
			clear(s[len(keep):])
			w.levels[0][slot] = keep
		}
		w.cur++
		if w.cur%l1Span == 0 {
			w.cascade()
		}
	}
	return due
}

// cascade moves the timers of the block that starts at cur down a level
// (cur is a multiple of l1Span).
func (w *wheel) cascade() {
	if w.cur%l2Span == 0 {
		slot := int((w.cur / l2Span) % l2Slots)
		s := w.levels[2][slot]
		w.levels[2][slot] = nil
		w.count[2] -= len(s)
		for _, t := range s {
			w.insert(t)
		}
		if len(w.over) > 0 {
			over := w.over
			w.over = nil
			for _, t := range over {
				w.insert(t)
			}
		}
	}
	slot := int((w.cur / l1Span) % l1Slots)
	s := w.levels[1][slot]
	w.levels[1][slot] = nil
	w.count[1] -= len(s)
	for _, t := range s {
		w.insert(t)
	}
}

// nextDue is when advance should next run: the earliest timer of the
// current block, or the block's end when only later levels hold timers
// (a cascade is due). ok is false when the wheel is empty.
func (w *wheel) nextDue() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.byKey) == 0 {
		return time.Time{}, false
	}
	if len(w.late) > 0 {
		return w.timeOf(w.cur - 1), true
	}
	end := (w.cur/l1Span + 1) * l1Span
	if w.count[0] > 0 {
		for tick := w.cur; tick < end; tick++ {
			for _, t := range w.levels[0][int(tick%l0Slots)] {
				if t.at <= tick {
					return w.timeOf(tick), true
				}
			}
		}
	}
	return w.timeOf(end), true
}

// run advances the wheel on the clock until stop is closed: it sleeps until
// the next due time (or an add that may be earlier), then hands each due
// value to deliver, in order; deliver returning false ends the run. A
// value is handed over at or after its time, never before: timers are
// filed under the tick at or after their time, and advance only passes the
// ticks that began at or before now.
func (w *wheel) run(stop <-chan struct{}, deliver func(v any) bool) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for _, v := range w.advance(time.Now()) {
			if !deliver(v) {
				return
			}
		}
		d := time.Hour
		if at, ok := w.nextDue(); ok {
			d = max(time.Until(at), 0)
		}
		timer.Reset(d)
		select {
		case <-stop:
			return
		case <-timer.C:
		case <-w.changed:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
	}
}
