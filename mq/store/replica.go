package store

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// ReadRaw returns whole records of the commitlog from offset from (a
// record boundary), at most max bytes and never past a segment's end, for
// a slave to append as they are; next is the offset after them. A from
// at a segment's blank filler moves on to the next segment.
func (s *Store) ReadRaw(from int64, max int) (data []byte, next int64, err error) {
	return s.cl.readRaw(from, max)
}

// AppendRaw appends records read with ReadRaw from a master, at the same
// offsets: offset must be this log's end. Each record's CRC is checked
// before anything is written. An empty log starts wherever the master's
// data starts (a master whose old segments went to retention).
func (s *Store) AppendRaw(offset int64, data []byte) error {
	if s.isClosed() {
		return ErrClosed
	}
	if err := s.cl.appendRaw(offset, data); err != nil {
		return err
	}
	s.dmu.Lock()
	if first := s.cl.start(); s.dispatched < first {
		s.dispatched = first // the log was moved to the master's start
	}
	s.dmu.Unlock()
	signal(s.kick)
	if s.cfg.Flush == FlushSync {
		return s.cl.waitFlushed(offset + int64(len(data)))
	}
	return nil
}

// SegmentSize is the commitlog's segment size (masters and slaves must
// agree).
func (s *Store) SegmentSize() int { return s.cfg.SegmentSize }

func (c *commitLog) readRaw(from int64, max int) ([]byte, int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if from > c.wrote {
		return nil, from, fmt.Errorf("store: offset %d is beyond the log's end %d", from, c.wrote)
	}
	i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].start > from }) - 1
	if i < 0 {
		if len(c.segs) > 0 && from < c.segs[0].start {
			return nil, from, fmt.Errorf("%w: offset %d (the log now starts at %d)", errDeleted, from, c.segs[0].start)
		}
		return nil, from, nil
	}
	seg := c.segs[i]
	end := min(c.wrote, seg.start+int64(c.size))
	pos := from
	for pos < end && int(pos-from) < max {
		off := int(pos - seg.start)
		kind, n := peekRecord(seg.data[off:min(c.size, off+int(end-pos))], false)
		switch kind {
		case kindMessage:
			if pos > from && int(pos-from)+n > max {
				end = pos
				continue
			}
			pos += int64(n)
		case kindBlank:
			pos += int64(n)
		default:
			return nil, from, fmt.Errorf("%w: at commitlog offset %d", ErrCorrupt, pos)
		}
	}
	out := make([]byte, pos-from)
	copy(out, seg.data[from-seg.start:pos-seg.start])
	return out, pos, nil
}

func (c *commitLog) appendRaw(offset int64, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if offset != c.wrote {
		if !(c.wrote == c.segs[0].start && len(c.segs) == 1 && offset%int64(c.size) == 0 && offset > c.wrote) {
			return fmt.Errorf("store: replicated data at %d, but this log ends at %d", offset, c.wrote)
		}
		// An empty log follows a master whose first segments are gone.
		old := c.segs[0]
		seg, err := openSegment(c.dir, offset, c.size, true)
		if err != nil {
			return err
		}
		c.segs = []*segment{seg}
		c.wrote = offset
		c.flushMu.Lock()
		c.flushed = offset
		c.flushMu.Unlock()
		if c.nextSeg != nil {
			_ = c.nextSeg.remove()
			c.nextSeg = nil
		}
		if err := old.remove(); err != nil {
			c.log.Warn("store: removing the empty first segment", "err", err)
		}
	}
	seg := c.segs[len(c.segs)-1]
	if c.wrote == seg.start+int64(c.size) {
		if err := c.addSegmentLocked(); err != nil {
			return err
		}
		seg = c.segs[len(c.segs)-1]
	}
	off := int(c.wrote - seg.start)
	if off+len(data) > c.size {
		return fmt.Errorf("store: replicated data of %d bytes crosses the segment end at %d", len(data), seg.start+int64(c.size))
	}
	for p := 0; p < len(data); {
		kind, n := peek(data[p:])
		switch {
		case kind == kindMessage && int64(binary.BigEndian.Uint64(data[p+28:])) == c.wrote+int64(p):
		case kind == kindBlank && off+p+n == c.size:
		default:
			return fmt.Errorf("%w: replicated record at %d", ErrCorrupt, offset+int64(p))
		}
		p += n
	}
	copy(seg.data[off:], data)
	c.wrote += int64(len(data))
	if c.wrote-seg.start > int64(c.size)/2 {
		signal(c.ahead)
	}
	return nil
}

// start is the offset of the oldest segment.
func (c *commitLog) start() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.segs[0].start
}
