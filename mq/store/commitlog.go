package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/durable"
)

// errDeleted: the record's segment was deleted by retention.
var errDeleted = errors.New("mq/store: deleted by retention")

// commitLog is the sequence of segments. Appends go to the last one; a
// record that does not fit closes the segment with a blank record and goes
// to the next, which a background goroutine has allocated ahead.
type commitLog struct {
	dir     string
	size    int
	log     *slog.Logger
	mu      sync.Mutex // appends, segment list
	segs    []*segment
	wrote   int64 // offset after the last appended record
	flushed int64 // offset up to which the log is on disk (flushMu)

	flushMu   sync.Mutex
	flushCond *sync.Cond
	flushReq  int64 // highest offset a waiter asked to be flushed
	closed    bool  // flushMu: waiters give up

	ahead     chan struct{} // ask the allocator for the next segment
	nextSeg   *segment      // allocated ahead (mu)
	creating  int64         // start of the segment the allocator is making, -1: none (mu)
	allocWait *sync.Cond    // appenders waiting for it (mu)

	onFlush func(time.Duration) // optional: each sync's duration
}

func openCommitLog(dir string, size int, log *slog.Logger) (*commitLog, error) {
	if err := durable.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("store: commitlog dir: %w", err)
	}
	c := &commitLog{dir: dir, size: size, log: log, ahead: make(chan struct{}, 1), creating: -1}
	c.flushCond = sync.NewCond(&c.flushMu)
	c.allocWait = sync.NewCond(&c.mu)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("store: commitlog dir: %w", err)
	}
	var starts []int64
	for _, e := range ents {
		if v, ok := parseSegmentName(e.Name()); ok && !e.IsDir() {
			starts = append(starts, v)
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for i, st := range starts {
		if st%int64(size) != 0 || (i > 0 && st != starts[i-1]+int64(size)) {
			return nil, fmt.Errorf("store: commitlog segment %s does not follow its predecessor with segment size %d", segmentName(st), size)
		}
		seg, err := openSegment(dir, st, size, false)
		if err != nil {
			c.closeAll()
			return nil, err
		}
		c.segs = append(c.segs, seg)
	}
	if len(c.segs) == 0 {
		seg, err := openSegment(dir, 0, size, true)
		if err != nil {
			return nil, err
		}
		c.segs = append(c.segs, seg)
	}
	return c, nil
}

func (c *commitLog) closeAll() {
	for _, s := range c.segs {
		_ = s.close()
	}
	c.segs = nil
	if c.nextSeg != nil {
		_ = c.nextSeg.close()
		c.nextSeg = nil
	}
}

// recover scans from the start of the segment holding from, stops at the
// first place without a valid record, and truncates there: zeroes the
// rest of that segment and removes any later segment (a torn tail). It
// returns the end offset and calls fn for every message after from.
func (c *commitLog) recover(from int64, fn func(m *Message) error) (int64, error) {
	first := 0
	for i, s := range c.segs {
		if s.start <= from {
			first = i
		}
	}
	pos := c.segs[first].start
	for i := first; i < len(c.segs); i++ {
		s := c.segs[i]
		off := 0
		for off < c.size {
			kind, n := peek(s.data[off:])
			switch kind {
			case kindMessage:
				if s.start+int64(off) >= from {
					m, err := decode(s.data[off : off+n])
					if err != nil {
						kind = kindBad
						break
					}
					if err := fn(m); err != nil {
						return 0, err
					}
				}
				off += n
				pos = s.start + int64(off)
				continue
			case kindBlank:
				off += n
				pos = s.start + int64(off)
				continue
			}
			if kind == kindBad {
				c.log.Warn("store: commitlog ends in a torn or corrupt record; truncated there", "segment", s.path, "offset", s.start+int64(off))
			}
			// End of data: zero what lies after it (a torn record, or
			// records a machine crash left behind a hole), so no stale record
			// comes back once appends reach it — only up to the last non-zero
			// page, so an empty segment is not rewritten with zeros.
			if end := lastNonZero(s.data[off:]); end > 0 {
				clear(s.data[off : off+end])
				if err := s.sync(off, off+end); err != nil {
					return 0, err
				}
			}
			for _, later := range c.segs[i+1:] {
				c.log.Warn("store: removing a commitlog segment after the recovered end", "segment", later.path)
				if err := later.remove(); err != nil {
					return 0, err
				}
			}
			c.segs = c.segs[:i+1]
			c.wrote, c.flushed = pos, pos
			return pos, nil
		}
		// The segment ended exactly full: go on with the next.
	}
	c.wrote, c.flushed = pos, pos
	if pos == c.segs[len(c.segs)-1].start+int64(c.size) {
		// Full last segment: the next append needs a new one.
		if err := c.addSegmentLocked(); err != nil {
			return 0, err
		}
	}
	return pos, nil
}

// addSegmentLocked makes the next segment current: the one allocated
// ahead, or the one the allocator is making (waited for), or a new one. A
// segment file is only ever created and mapped by one party — the
// allocator's pre-fault zeroes pages, which must never happen under data.
func (c *commitLog) addSegmentLocked() error {
	start := c.segs[len(c.segs)-1].start + int64(c.size)
	for c.creating == start {
		c.allocWait.Wait()
	}
	if c.segs[len(c.segs)-1].start >= start {
		// Another appender added it while this one waited (Wait lets go
		// of mu): adding it again would map the same file twice and write
		// at its start over the records appended since.
		return nil
	}
	var seg *segment
	if c.nextSeg != nil && c.nextSeg.start == start {
		seg, c.nextSeg = c.nextSeg, nil
	} else {
		var err error
		if seg, err = openSegment(c.dir, start, c.size, true); err != nil {
			return err
		}
	}
	c.segs = append(c.segs, seg)
	signal(c.ahead) // allocate the one after, in the background
	return nil
}

// allocate runs the allocate-ahead loop until stop closes.
func (c *commitLog) allocate(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-c.ahead:
		}
		c.mu.Lock()
		// Only once the segment being written is half full: an idle broker
		// keeps one segment on disk, not two.
		if c.nextSeg != nil || len(c.segs) == 0 || c.wrote-c.segs[len(c.segs)-1].start < int64(c.size)/2 {
			c.mu.Unlock()
			continue
		}
		start := c.segs[len(c.segs)-1].start + int64(c.size)
		c.creating = start
		c.mu.Unlock()
		seg, err := openSegment(c.dir, start, c.size, true)
		c.mu.Lock()
		c.creating = -1
		if err != nil {
			c.log.Error("store: allocating the next commitlog segment failed; appends will allocate it", "err", err)
		} else if c.nextSeg == nil && len(c.segs) > 0 && c.segs[len(c.segs)-1].start+int64(c.size) == start {
			c.nextSeg, seg = seg, nil
		}
		c.allocWait.Broadcast()
		c.mu.Unlock()
		if seg != nil {
			_ = seg.close()
		}
	}
}

// append writes m, assigning Offset, Size and StoredAt; assign sets the
// queue offset under the log's lock (so queue offsets follow log order).
func (c *commitLog) append(m *Message, assign func(m *Message)) error {
	n, err := encodedSize(m)
	if err != nil {
		return err
	}
	if n > c.size-8 {
		return fmt.Errorf("store: record of %d bytes does not fit a %d-byte segment", n, c.size)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var seg *segment
	var off int
	for {
		// Where the log ends now: waiting for a new segment lets go of mu,
		// and other appenders may have written meanwhile.
		seg = c.segs[len(c.segs)-1]
		off = int(c.wrote - seg.start)
		if off+n > c.size-8 && off < c.size {
			// Close the segment with a blank record; the next one takes it.
			encodeBlank(seg.data[off:])
			c.wrote = seg.start + int64(c.size)
			off = c.size
		}
		if off < c.size {
			break
		}
		if err := c.addSegmentLocked(); err != nil {
			return err
		}
	}
	m.Offset, m.Size, m.StoredAt = c.wrote, int32(n), time.Now().UnixMilli()
	assign(m)
	encode(seg.data[off:off+n], m)
	c.wrote += int64(n)
	if c.wrote-seg.start > int64(c.size)/2 {
		signal(c.ahead)
	}
	return nil
}

// read returns the record at offset (size bytes), decoded.
func (c *commitLog) read(offset int64, size int) (*Message, error) {
	return c.readTopic(offset, size, "")
}

// readTopic is read for a caller that expects the topic (no allocation
// for its name).
func (c *commitLog) readTopic(offset int64, size int, topic string) (*Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if offset < 0 || offset+int64(size) > c.wrote {
		return nil, fmt.Errorf("store: offset %d+%d beyond the log's end %d", offset, size, c.wrote)
	}
	i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].start > offset }) - 1
	if i < 0 {
		return nil, fmt.Errorf("%w: offset %d", errDeleted, offset)
	}
	s := c.segs[i]
	off := int(offset - s.start)
	if off+size > c.size {
		return nil, fmt.Errorf("%w: record at %d crosses its segment's end", ErrCorrupt, offset)
	}
	kind, n := peek(s.data[off : off+size])
	if kind != kindMessage || n != size {
		return nil, fmt.Errorf("%w: at offset %d", ErrCorrupt, offset)
	}
	return decodeRecord(s.data[off:off+size], true, topic)
}

// end is the offset after the last record.
func (c *commitLog) end() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wrote
}

// flush syncs everything appended so far and reports the flushed offset.
func (c *commitLog) flush() (int64, error) { return c.flushTo(false) }

// flushTo syncs what was appended; with wholePages it stops at the last
// whole page. The async flusher uses that: syncing the page appends are
// still filling would make the next append wait for the disk (a page
// under writeback cannot be written), a stall of milliseconds for every
// producer; that page goes out with the next flush.
func (c *commitLog) flushTo(wholePages bool) (int64, error) {
	c.mu.Lock()
	to := c.wrote
	if wholePages {
		to &^= 4095
	}
	var segs []*segment
	for _, s := range c.segs {
		if s.start+int64(c.size) > c.flushedOffset() && s.start < to {
			segs = append(segs, s)
		}
	}
	from := c.flushedOffset()
	c.mu.Unlock()
	start := time.Now()
	for _, s := range segs {
		lo := max(from-s.start, 0)
		hi := min(to-s.start, int64(c.size))
		if err := s.sync(int(lo), int(hi)); err != nil {
			return from, err
		}
	}
	if c.onFlush != nil && to > from {
		c.onFlush(time.Since(start))
	}
	c.flushMu.Lock()
	if to > c.flushed {
		c.flushed = to
	}
	c.flushCond.Broadcast()
	c.flushMu.Unlock()
	return to, nil
}

// flushedOffset returns how far the log is on disk; it takes flushMu itself
// (callers may hold mu: the lock order is mu, then flushMu).
func (c *commitLog) flushedOffset() int64 {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	return c.flushed
}

// waitFlushed blocks until the log is on disk up to offset (group commit:
// the flusher syncs once for every appender waiting).
func (c *commitLog) waitFlushed(offset int64) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	if offset > c.flushReq {
		c.flushReq = offset
		c.flushCond.Broadcast() // wake the flusher
	}
	for c.flushed < offset {
		if c.closed {
			return ErrClosed
		}
		c.flushCond.Wait()
	}
	return nil
}

// syncFlusher is the group committer: it syncs whenever an appender waits.
func (c *commitLog) syncFlusher() {
	for {
		c.flushMu.Lock()
		for c.flushReq <= c.flushed && !c.closed {
			c.flushCond.Wait()
		}
		closed := c.closed
		c.flushMu.Unlock()
		if closed {
			return
		}
		if _, err := c.flush(); err != nil {
			c.log.Error("store: commitlog flush failed", "err", err)
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// shutFlush wakes every waiter and the flusher for Close.
func (c *commitLog) shutFlush() {
	c.flushMu.Lock()
	c.closed = true
	c.flushCond.Broadcast()
	c.flushMu.Unlock()
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// scan calls fn for every message in [from, end) and returns how far it
// got (end, unless fn failed).
func (c *commitLog) scan(from, end int64, fn func(m *Message) error) (int64, error) {
	return c.scanRecords(from, end, false, fn)
}

// scanRecords is scan; verify checks each record's CRC, and the messages
// passed to fn have no body (indexing needs none).
func (c *commitLog) scanRecords(from, end int64, verify bool, fn func(m *Message) error) (int64, error) {
	c.mu.Lock()
	segs := append([]*segment(nil), c.segs...)
	c.mu.Unlock()
	pos := from
	for _, s := range segs {
		if s.start+int64(c.size) <= pos {
			continue
		}
		for pos < end && pos < s.start+int64(c.size) {
			off := int(pos - s.start)
			kind, n := peekRecord(s.data[off:min(c.size, off+int(end-pos))], verify)
			switch kind {
			case kindBlank:
				pos = s.start + int64(c.size)
				continue
			case kindMessage:
				m, err := decodeRecord(s.data[off:off+n], false, "")
				if err != nil {
					return pos, err
				}
				if err := fn(m); err != nil {
					return pos, err
				}
				pos += int64(n)
				continue
			}
			return pos, fmt.Errorf("%w: at commitlog offset %d", ErrCorrupt, pos)
		}
		if pos >= end {
			break
		}
	}
	return pos, nil
}

// firstStoredAt is the store time of a segment's first message (0 when it
// has none).
func (s *segment) firstStoredAt(size int) int64 {
	for off := 0; off < size; {
		kind, n := peek(s.data[off:])
		switch kind {
		case kindMessage:
			return int64(binary.BigEndian.Uint64(s.data[off+44:]))
		case kindBlank:
			off += n
			continue
		}
		return 0
	}
	return 0
}

// dropOldest removes the oldest segment if keep says so, never the one
// being written; it returns the new first offset and whether it removed one.
func (c *commitLog) dropOldest(keep func(first, next *segment) bool) (int64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.segs) < 2 || keep(c.segs[0], c.segs[1]) {
		return c.segs[0].start, false, nil
	}
	old := c.segs[0]
	c.segs = c.segs[1:]
	if err := old.remove(); err != nil {
		return c.segs[0].start, true, err
	}
	return c.segs[0].start, true, nil
}

// bytesLocked is the size of the segments on disk (mu held).
func (c *commitLog) bytesLocked() int64 { return int64(len(c.segs)) * int64(c.size) }

var zeroPage [4096]byte

// lastNonZero returns the length of b up to the end of its last 4 KiB
// block holding a non-zero byte (0 when b is all zeros).
func lastNonZero(b []byte) int {
	for end := len(b); end > 0; {
		start := max(0, end-len(zeroPage))
		if !bytes.Equal(b[start:end], zeroPage[:end-start]) {
			return end
		}
		end = start
	}
	return 0
}
