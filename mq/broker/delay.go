package broker

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
)

// maxTimerDelay bounds DELIVER_AT.
const maxTimerDelay = 40 * 24 * time.Hour

// maxTimerPending bounds the timer's in-memory heap: past it the timer
// stops reading %TIMER% until some are delivered.
const maxTimerPending = 200_000

// delayService delivers delayed messages. Delay levels, after RocketMQ:
// %SCHEDULE% has one queue per level, each in the order stored and so in
// the order due; a cursor per level delivers the head once due. Arbitrary
// times (DELIVER_AT) go to %TIMER%, read into a min-heap by due time. Both
// cursors are saved every second: after a crash, what was delivered in the
// last second is delivered again (at least once, never lost).
type delayService struct {
	b *Broker

	mu      sync.Mutex
	levels  []int64 // next queue offset per level
	timer   timerHeap
	scanned int64          // %TIMER% queue offset read into the heap
	done    map[int64]bool // %TIMER% offsets delivered at or above low()
	dirty   bool
}

type delayState struct {
	Levels []int64 `json:"levels"`
	// TimerLow: every %TIMER% message below it is delivered; TimerDone are
	// the delivered ones above it.
	TimerLow  int64   `json:"timer_low"`
	TimerDone []int64 `json:"timer_done,omitempty"`
}

func (d *delayService) path() string { return filepath.Join(d.b.cfg.Dir, "delay.json") }

func newDelayService(b *Broker) (*delayService, error) {
	d := &delayService{b: b, levels: make([]int64, len(b.cfg.DelayLevels)), done: map[int64]bool{}}
	data, err := os.ReadFile(d.path())
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	var st delayState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("broker: %s: %w", d.path(), err)
	}
	copy(d.levels, st.Levels)
	d.scanned = st.TimerLow
	for _, o := range st.TimerDone {
		d.done[o] = true
	}
	return d, nil
}

// low is the %TIMER% offset below which everything is delivered.
func (d *delayService) lowLocked() int64 {
	low := d.scanned
	for _, e := range d.timer {
		low = min(low, e.qoff)
	}
	return low
}

func (d *delayService) save() error {
	d.mu.Lock()
	if !d.dirty {
		d.mu.Unlock()
		return nil
	}
	d.dirty = false
	low := d.lowLocked()
	st := delayState{Levels: append([]int64(nil), d.levels...), TimerLow: low}
	for o := range d.done {
		if o < low {
			delete(d.done, o)
		} else {
			st.TimerDone = append(st.TimerDone, o)
		}
	}
	d.mu.Unlock()
	data, err := json.Marshal(st)
	if err == nil {
		err = writeFileAtomic(d.path(), data)
	}
	if err != nil {
		d.mu.Lock()
		d.dirty = true // try again next round
		d.mu.Unlock()
	}
	return err
}

func (d *delayService) run() {
	for {
		changed := d.b.st.Changed()
		wait := d.tick(time.Now())
		select {
		case <-d.b.stop:
			return
		case <-changed:
			// Something was stored: maybe a delayed message due soon.
			select {
			case <-d.b.stop:
				return
			case <-time.After(min(wait, 10*time.Millisecond)):
			}
		case <-time.After(wait):
		}
	}
}

// tick delivers what is due and returns how long until the next is.
func (d *delayService) tick(now time.Time) time.Duration {
	wait := 500 * time.Millisecond
	for lvl, delay := range d.b.cfg.DelayLevels {
		if w := d.deliverLevel(lvl, delay, now); w < wait {
			wait = w
		}
	}
	if w := d.deliverTimer(now); w < wait {
		wait = w
	}
	return max(wait, time.Millisecond)
}

// deliverLevel moves a level's due messages to their topics.
func (d *delayService) deliverLevel(lvl int, delay time.Duration, now time.Time) time.Duration {
	for {
		d.mu.Lock()
		from := d.levels[lvl]
		d.mu.Unlock()
		if lo := d.b.st.MinOffset(wire.TopicSchedule, uint32(lvl)); from < lo {
			from = lo
		}
		ms, _, err := d.b.st.Get(wire.TopicSchedule, uint32(lvl), from, 256)
		if err != nil {
			d.b.log.Error("broker: reading delayed messages failed", "level", lvl+1, "err", err)
			return time.Second
		}
		if len(ms) == 0 {
			return 500 * time.Millisecond
		}
		var due []*store.Message
		wait := time.Duration(0)
		for _, m := range ms {
			// StoredAt is whole milliseconds, truncated: the message was
			// stored within the millisecond after it. Counting from the end
			// of that millisecond, it is never delivered before its delay.
			at := time.UnixMilli(m.StoredAt + 1).Add(delay)
			if at.After(now) {
				wait = at.Sub(now)
				break
			}
			due = append(due, m)
		}
		if len(due) > 0 {
			if err := d.b.st.PutBatch(realMessages(due)); err != nil {
				d.b.log.Error("broker: delivering delayed messages failed", "level", lvl+1, "err", err)
				return time.Second
			}
			d.mu.Lock()
			d.levels[lvl] = due[len(due)-1].QueueOffset + 1
			d.dirty = true
			d.mu.Unlock()
		}
		if wait > 0 {
			return wait
		}
	}
}

// realMessages turns delayed copies back into messages of their topics.
func realMessages(ms []*store.Message) []*store.Message {
	out := make([]*store.Message, 0, len(ms))
	for _, m := range ms {
		p := make(map[string]string, len(m.Properties))
		for k, v := range m.Properties {
			p[k] = v
		}
		topic, q := p[wire.PropRealTopic], p[wire.PropRealQueue]
		qid, _ := strconv.ParseUint(q, 10, 32)
		delete(p, wire.PropRealQueue)
		delete(p, wire.PropDelay)
		delete(p, wire.PropDeliverAt)
		if from := p[retryOrigin]; from != "" {
			p[wire.PropRealTopic] = from // a retry: where it was consumed first
			delete(p, retryOrigin)
		} else {
			delete(p, wire.PropRealTopic)
		}
		if topic == "" || !store.ValidTopic(topic) {
			continue
		}
		out = append(out, &store.Message{Topic: topic, QueueID: uint32(qid), BornAt: m.BornAt, Flags: m.Flags, Properties: p, Body: m.Body})
	}
	return out
}

type timerEntry struct {
	due  int64
	qoff int64
	phys int64
	size int32
}

type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// deliverTimer reads new %TIMER% messages into the heap and delivers the
// due ones.
func (d *delayService) deliverTimer(now time.Time) time.Duration {
	for {
		d.mu.Lock()
		from, n := d.scanned, len(d.timer)
		d.mu.Unlock()
		if n >= maxTimerPending {
			break
		}
		if lo := d.b.st.MinOffset(wire.TopicTimer, 0); from < lo {
			from = lo
		}
		ms, next, err := d.b.st.Get(wire.TopicTimer, 0, from, 512)
		if err != nil {
			d.b.log.Error("broker: reading timed messages failed", "err", err)
			break
		}
		d.mu.Lock()
		for _, m := range ms {
			if d.done[m.QueueOffset] {
				continue
			}
			at, _ := strconv.ParseInt(m.Properties[wire.PropDeliverAt], 10, 64)
			heap.Push(&d.timer, timerEntry{due: at, qoff: m.QueueOffset, phys: m.Offset, size: m.Size})
		}
		d.scanned = next
		d.mu.Unlock()
		if len(ms) == 0 {
			break
		}
	}
	nowMs := now.UnixMilli()
	for {
		d.mu.Lock()
		var due []timerEntry
		for len(d.timer) > 0 && d.timer[0].due <= nowMs && len(due) < 256 {
			due = append(due, heap.Pop(&d.timer).(timerEntry))
		}
		wait := 500 * time.Millisecond
		if len(d.timer) > 0 {
			wait = time.Duration(d.timer[0].due-nowMs) * time.Millisecond
		}
		d.mu.Unlock()
		if len(due) == 0 {
			return wait
		}
		var ms []*store.Message
		for _, e := range due {
			m, err := d.b.st.ReadAt(e.phys, e.size)
			if err != nil {
				d.b.log.Error("broker: a timed message is unreadable; dropped", "offset", e.phys, "err", err)
				continue
			}
			ms = append(ms, m)
		}
		if err := d.b.st.PutBatch(realMessages(ms)); err != nil {
			d.b.log.Error("broker: delivering timed messages failed", "err", err)
			d.mu.Lock()
			for _, e := range due {
				heap.Push(&d.timer, e)
			}
			d.mu.Unlock()
			return time.Second
		}
		d.mu.Lock()
		for _, e := range due {
			d.done[e.qoff] = true
		}
		d.dirty = true
		d.mu.Unlock()
	}
}
