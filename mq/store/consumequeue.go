package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/tangram-dev/tangram/internal/durable"
)

// cqEntry is a consume queue entry: where the message is in the commitlog,
// its size, and the hash of its tag (for filtering on the broker).
const cqEntry = 20

// consumeQueue is one (topic, queue)'s index: files of perFile entries,
// named by their first queue offset.
type consumeQueue struct {
	dir     string
	perFile int64
	mu      sync.Mutex
	files   map[int64]*os.File // by first queue offset
	next    int64              // queue offset of the next entry
	pend    []byte             // entries from next on, not yet written (see flush)
	notify  chan struct{}      // closed and replaced when entries become readable
	minOff  int64              // first queue offset still on disk
}

func openConsumeQueue(dir string, perFile int) (*consumeQueue, error) {
	if err := durable.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("store: consume queue dir: %w", err)
	}
	q := &consumeQueue{dir: dir, perFile: int64(perFile), files: map[int64]*os.File{}, notify: make(chan struct{})}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("store: consume queue dir: %w", err)
	}
	var starts []int64
	for _, e := range ents {
		if v, ok := parseSegmentName(e.Name()); ok {
			starts = append(starts, v)
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, st := range starts {
		if st%q.perFile != 0 {
			q.closeAll()
			return nil, fmt.Errorf("store: consume queue file %s does not start on a %d-entry boundary", filepath.Join(dir, segmentName(st)), q.perFile)
		}
		f, err := os.OpenFile(filepath.Join(dir, segmentName(st)), os.O_RDWR, 0o644)
		if err != nil {
			q.closeAll()
			return nil, fmt.Errorf("store: consume queue: %w", err)
		}
		q.files[st] = f
		if fi, err := f.Stat(); err == nil && fi.Size() > q.perFile*cqEntry {
			q.closeAll()
			return nil, fmt.Errorf("store: consume queue file %s holds more than %d entries: it was written with another QueueFileEntries", filepath.Join(dir, segmentName(st)), q.perFile)
		}
	}
	if len(starts) > 0 {
		q.minOff = starts[0]
		last := starts[len(starts)-1]
		// The last file's valid entries end at the first all-zero one.
		n, err := q.countValid(q.files[last])
		if err != nil {
			q.closeAll()
			return nil, err
		}
		q.next = last + n
	}
	return q, nil
}

func (q *consumeQueue) countValid(f *os.File) (int64, error) {
	buf := make([]byte, cqEntry*1024)
	var n int64
	for {
		k, err := f.ReadAt(buf, n*cqEntry)
		for i := 0; i+cqEntry <= k; i += cqEntry {
			if binary.BigEndian.Uint32(buf[i+8:]) == 0 { // size 0: no entry
				return n, nil
			}
			n++
		}
		if errors.Is(err, io.EOF) || k < len(buf) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("store: read consume queue: %w", err)
		}
	}
}

func (q *consumeQueue) closeAll() {
	for _, f := range q.files {
		_ = f.Close()
	}
	q.files = map[int64]*os.File{}
}

func (q *consumeQueue) fileFor(off int64, create bool) (*os.File, error) {
	start := off - off%q.perFile
	if f := q.files[start]; f != nil {
		return f, nil
	}
	if !create {
		return nil, nil
	}
	f, err := durable.CreateOrOpen(filepath.Join(q.dir, segmentName(start)))
	if err != nil {
		return nil, fmt.Errorf("store: consume queue: %w", err)
	}
	q.files[start] = f
	return f, nil
}

// put adds the entry for queue offset off to the pending entries, written
// by flush; an offset already there (a replay during recovery) is skipped.
func (q *consumeQueue) put(off, phys int64, size int32, tag int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	end := q.next + int64(len(q.pend)/cqEntry)
	if off < end {
		return nil
	}
	if off > end {
		return fmt.Errorf("store: consume queue %s: entry %d after %d leaves a gap", q.dir, off, end)
	}
	var b [cqEntry]byte
	binary.BigEndian.PutUint64(b[0:], uint64(phys))
	binary.BigEndian.PutUint32(b[8:], uint32(size))
	binary.BigEndian.PutUint64(b[12:], uint64(tag))
	q.pend = append(q.pend, b[:]...)
	return nil
}

// flush writes the pending entries, one write per file they fall in, and
// makes them readable.
func (q *consumeQueue) flush() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.pend) > 0 {
		f, err := q.fileFor(q.next, true)
		if err != nil {
			return err
		}
		n := min(int64(len(q.pend)/cqEntry), q.perFile-q.next%q.perFile)
		if _, err := f.WriteAt(q.pend[:n*cqEntry], (q.next%q.perFile)*cqEntry); err != nil {
			return fmt.Errorf("store: consume queue write: %w", err)
		}
		q.next += n
		q.pend = q.pend[n*cqEntry:]
		close(q.notify)
		q.notify = make(chan struct{})
	}
	q.pend = q.pend[:0:0]
	return nil
}

// changed returns a channel closed when the queue next gains entries.
func (q *consumeQueue) changed() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.notify
}

type cqRef struct {
	off  int64 // queue offset
	phys int64
	size int32
	tag  int64
}

// get reads up to max entries from off, each file's run in one read.
func (q *consumeQueue) get(off int64, max int) ([]cqRef, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if off < q.minOff {
		off = q.minOff
	}
	var out []cqRef
	for off < q.next && len(out) < max {
		f, err := q.fileFor(off, false)
		if err != nil || f == nil {
			return out, err
		}
		n := min(int64(max-len(out)), q.next-off, q.perFile-off%q.perFile)
		b := make([]byte, n*cqEntry)
		if _, err := f.ReadAt(b, (off%q.perFile)*cqEntry); err != nil {
			return out, fmt.Errorf("store: consume queue read: %w", err)
		}
		for i := int64(0); i < n; i++ {
			e := b[i*cqEntry:]
			out = append(out, cqRef{off: off + i, phys: int64(binary.BigEndian.Uint64(e[0:])), size: int32(binary.BigEndian.Uint32(e[8:])),
				tag: int64(binary.BigEndian.Uint64(e[12:]))})
		}
		off += n
	}
	return out, nil
}

// truncateAfter drops the entries that point at or beyond the commitlog's
// end (their records were lost with a torn tail).
func (q *consumeQueue) truncateAfter(end int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.next > q.minOff {
		off := q.next - 1
		f, err := q.fileFor(off, false)
		if err != nil || f == nil {
			return err
		}
		var b [cqEntry]byte
		if _, err := f.ReadAt(b[:], (off%q.perFile)*cqEntry); err != nil {
			return fmt.Errorf("store: consume queue read: %w", err)
		}
		if int64(binary.BigEndian.Uint64(b[0:]))+int64(binary.BigEndian.Uint32(b[8:])) <= end {
			return nil
		}
		var zero [cqEntry]byte
		if _, err := f.WriteAt(zero[:], (off%q.perFile)*cqEntry); err != nil {
			return fmt.Errorf("store: consume queue truncate: %w", err)
		}
		q.next = off
	}
	return nil
}

// sync fsyncs the queue's files — outside the lock, so readers and the
// dispatcher do not wait for the disk.
func (q *consumeQueue) sync() error {
	q.mu.Lock()
	files := make([]*os.File, 0, len(q.files))
	for _, f := range q.files {
		files = append(files, f)
	}
	q.mu.Unlock()
	for _, f := range files {
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("store: consume queue sync: %w", err)
		}
	}
	return nil
}

// dropBefore removes the files whose entries all point below phys (their
// messages were deleted by retention); reads before the new first offset
// start at it.
func (q *consumeQueue) dropBefore(phys int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var starts []int64
	for st := range q.files {
		starts = append(starts, st)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, st := range starts {
		last := min(st+q.perFile, q.next) - 1
		if st+q.perFile > q.next || last < st {
			break // the file being written stays
		}
		var b [cqEntry]byte
		if _, err := q.files[st].ReadAt(b[:], (last%q.perFile)*cqEntry); err != nil {
			return fmt.Errorf("store: consume queue read: %w", err)
		}
		if int64(binary.BigEndian.Uint64(b[0:])) >= phys {
			break
		}
		f := q.files[st]
		delete(q.files, st)
		name := f.Name()
		_ = f.Close()
		if err := os.Remove(name); err != nil {
			return fmt.Errorf("store: remove consume queue file: %w", err)
		}
		q.minOff = st + q.perFile
	}
	return nil
}

// first is the first queue offset still on disk.
func (q *consumeQueue) first() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.minOff
}
