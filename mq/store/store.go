package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/durable"
	"github.com/tangram-dev/tangram/internal/errcode"
)

// Flush policies.
const (
	FlushAsync = "async" // every FlushInterval; a crash of the machine loses at most that much
	FlushSync  = "sync"  // group commit: Put returns once the message is on disk
)

// Config configures a Store.
type Config struct {
	// Dir holds commitlog/, consumequeue/ and the checkpoint. Required.
	Dir string
	// SegmentSize is the size of a commitlog file (default 1 GiB).
	SegmentSize int
	// QueueFileEntries is the entries of a consume queue file (default
	// 300,000: 6 MB).
	QueueFileEntries int
	// Flush is FlushAsync (default) or FlushSync; FlushInterval paces the
	// async flusher (default 500 ms).
	Flush         string
	FlushInterval time.Duration
	// Retention: commitlog segments whose messages are all older than
	// RetainAge (default 72 h), and the oldest while the log is larger than
	// RetainBytes (0: no size limit), are deleted by DeleteExpired, with the
	// consume queue files that point into them — except what Protect says is
	// still needed (the lowest commitlog offset a consumer group has not
	// consumed; nil: nothing is protected).
	RetainAge   time.Duration
	RetainBytes int64
	Protect     func() int64
	// OnFlush, when set, is told how long each commitlog sync took (for
	// a flush-latency metric).
	OnFlush func(time.Duration)
	Logger  *slog.Logger
}

// ErrClosed is returned after Close.
var ErrClosed = errcode.New(errcode.Unavailable, "mq/store: closed")

// TagProperty is the property whose value's hash goes into the consume
// queue for filtering by tag.
const TagProperty = "TAGS"

type queueKey struct {
	topic string
	queue uint32
}

// Store is the storage engine: Put appends to the commitlog, a dispatcher
// indexes new records into their consume queues, Get reads a queue.
type Store struct {
	cfg Config
	log *slog.Logger
	cl  *commitLog

	keys *keyIndex

	qmu     sync.Mutex
	queues  map[queueKey]*consumeQueue
	touched map[*consumeQueue]bool // queues with entries to flush (under dispatchMu)

	dispatchMu sync.Mutex         // one indexer at a time: the dispatcher or an appender
	counters   map[queueKey]int64 // next queue offset to assign (under cl.mu via append)

	dmu        sync.Mutex
	dispatched int64 // commitlog offset indexed so far
	dcond      *sync.Cond
	changed    chan struct{} // closed and replaced when dispatch indexes something

	kick   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	closed bool
}

// Open opens (or creates) a store and recovers it: the commitlog's tail
// is checked record by record from the checkpoint and truncated at the
// first torn or corrupt one; consume queues lose entries past the end and
// gain the records written after the checkpoint.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("store: Config.Dir is required")
	}
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = 1 << 30
	}
	if cfg.SegmentSize < 4096 || cfg.SegmentSize%4096 != 0 {
		return nil, fmt.Errorf("store: segment size %d: want a multiple of 4096", cfg.SegmentSize)
	}
	if cfg.QueueFileEntries <= 0 {
		cfg.QueueFileEntries = 300000
	}
	switch cfg.Flush {
	case "":
		cfg.Flush = FlushAsync
	case FlushAsync, FlushSync:
	default:
		return nil, fmt.Errorf("store: flush %q: want async or sync", cfg.Flush)
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 500 * time.Millisecond
	}
	if cfg.RetainAge <= 0 {
		cfg.RetainAge = 72 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if have := existingSegmentSize(filepath.Join(cfg.Dir, "commitlog")); have > 0 && have != cfg.SegmentSize {
		// A log keeps the segment size it was written with (offsets map to
		// files by it); a new setting applies to new logs.
		cfg.Logger.Info("store: keeping the existing commitlog's segment size", "size", have, "configured", cfg.SegmentSize)
		cfg.SegmentSize = have
	}
	cl, err := openCommitLog(filepath.Join(cfg.Dir, "commitlog"), cfg.SegmentSize, cfg.Logger)
	if err != nil {
		return nil, err
	}
	cl.onFlush = cfg.OnFlush
	s := &Store{cfg: cfg, log: cfg.Logger, cl: cl, queues: map[queueKey]*consumeQueue{}, touched: map[*consumeQueue]bool{}, counters: map[queueKey]int64{},
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
	s.dcond = sync.NewCond(&s.dmu)
	s.changed = make(chan struct{})
	if s.keys, err = openKeyIndex(filepath.Join(cfg.Dir, "index")); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.wg.Add(4)
	go func() { defer s.wg.Done(); s.cl.allocate(s.stop) }()
	go func() { defer s.wg.Done(); s.dispatchLoop() }()
	go func() { defer s.wg.Done(); s.checkpointLoop() }()
	go func() { defer s.wg.Done(); s.flushLoop() }()
	signal(s.cl.ahead)
	return s, nil
}

// existingSegmentSize is the size of the first segment file in dir (0:
// none).
func existingSegmentSize(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	for _, e := range ents {
		if _, ok := parseSegmentName(e.Name()); ok && !e.IsDir() {
			if fi, err := e.Info(); err == nil && fi.Size() > 0 && fi.Size()%4096 == 0 {
				return int(fi.Size())
			}
		}
	}
	return 0
}

func (s *Store) checkpointPath() string { return filepath.Join(s.cfg.Dir, "checkpoint") }

func (s *Store) readCheckpoint() int64 {
	b, err := os.ReadFile(s.checkpointPath())
	if err != nil || len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func (s *Store) writeCheckpoint(off int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(off))
	if err := durable.WriteFile(s.checkpointPath(), b[:], 0o644); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	return nil
}

func (s *Store) recover() error {
	// Consume queues on disk.
	root := filepath.Join(s.cfg.Dir, "consumequeue")
	topics, _ := os.ReadDir(root)
	for _, t := range topics {
		qs, _ := os.ReadDir(filepath.Join(root, t.Name()))
		for _, qd := range qs {
			id, err := strconv.ParseUint(qd.Name(), 10, 32)
			if err != nil {
				continue
			}
			q, err := openConsumeQueue(filepath.Join(root, t.Name(), qd.Name()), s.cfg.QueueFileEntries)
			if err != nil {
				return err
			}
			k := queueKey{t.Name(), uint32(id)}
			s.queues[k] = q
		}
	}
	from := s.readCheckpoint()
	end, err := s.cl.recover(from, func(m *Message) error { return s.index(m) })
	if ferr := s.flushQueues(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	for k, q := range s.queues {
		if err := q.truncateAfter(end); err != nil {
			return err
		}
		s.counters[k] = q.next
	}
	if err := s.keys.truncateFrom(end); err != nil {
		return err
	}
	s.dispatched = end
	return nil
}

// flushQueues writes the entries index added (dispatcher and recovery
// only: one goroutine).
func (s *Store) flushQueues() error {
	var errs []error
	for q := range s.touched {
		if err := q.flush(); err != nil {
			errs = append(errs, err)
		}
		delete(s.touched, q)
	}
	return errors.Join(errs...)
}

// queue returns the consume queue of k, creating it.
func (s *Store) queue(k queueKey) (*consumeQueue, error) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if q := s.queues[k]; q != nil {
		return q, nil
	}
	q, err := openConsumeQueue(filepath.Join(s.cfg.Dir, "consumequeue", k.topic, strconv.FormatUint(uint64(k.queue), 10)), s.cfg.QueueFileEntries)
	if err != nil {
		return nil, err
	}
	s.queues[k] = q
	return q, nil
}

func tagHash(props map[string]string) int64 { return TagHash(props[TagProperty]) }

// index adds a message's consume queue entry.
func (s *Store) index(m *Message) error {
	q, err := s.queue(queueKey{m.Topic, m.QueueID})
	if err != nil {
		return err
	}
	if err := q.put(m.QueueOffset, m.Offset, m.Size, tagHash(m.Properties)); err != nil {
		return err
	}
	s.touched[q] = true
	return s.keys.add(m)
}

// Lookup returns up to max messages of topic with key among their keys
// (KeysProperty), oldest first; messages deleted by retention are not
// returned.
func (s *Store) Lookup(topic, key string, max int) ([]*Message, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	var out []*Message
	for _, r := range s.keys.candidates(topic, key) {
		if len(out) >= max {
			break
		}
		m, err := s.cl.read(r.phys, int(r.size))
		if errors.Is(err, errDeleted) {
			continue
		}
		if err != nil {
			continue // past a recovered end, or a stale entry: not this key
		}
		if m.Topic == topic && hasKey(m.Properties[KeysProperty], key) {
			out = append(out, m)
		}
	}
	return out, nil
}

func hasKey(keys, key string) bool {
	for _, k := range strings.Fields(keys) {
		if k == key {
			return true
		}
	}
	return false
}

// Put appends a message and assigns its commitlog and queue offsets. With
// FlushSync it returns once the message is on disk.
func (s *Store) Put(m *Message) error { return s.PutBatch([]*Message{m}) }

// PutBatch appends messages in order; with FlushSync it returns once all
// are on disk (one wait for the batch). On an error the messages before
// the failing one are stored (their Offset is set) and the rest are not.
func (s *Store) PutBatch(ms []*Message) error {
	if s.isClosed() {
		return ErrClosed
	}
	var end int64
	for _, m := range ms {
		if !validTopic(m.Topic) {
			return fmt.Errorf("store: topic %q: 1–%d letters, digits, '%%', '_', '-' or '.'", m.Topic, MaxTopicLen)
		}
		err := s.cl.append(m, func(m *Message) {
			k := queueKey{m.Topic, m.QueueID}
			m.QueueOffset = s.counters[k]
			s.counters[k]++
		})
		if err != nil {
			if end > 0 {
				signal(s.kick)
				if s.cfg.Flush == FlushSync {
					_ = s.cl.waitFlushed(end)
				}
			}
			return err
		}
		end = m.Offset + int64(m.Size)
	}
	s.indexNow()
	if s.cfg.Flush == FlushSync && end > 0 {
		return s.cl.waitFlushed(end)
	}
	return nil
}

// ValidTopic reports whether t is a usable topic name.
func ValidTopic(t string) bool { return validTopic(t) }

func validTopic(t string) bool {
	if len(t) == 0 || len(t) > MaxTopicLen || t == "." || t == ".." {
		return false
	}
	for _, c := range []byte(t) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '%' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// dispatchLoop indexes what the commitlog gained into the consume queues
// when an appender could not do it inline (see indexNow), and every 100 ms.
func (s *Store) dispatchLoop() {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-t.C:
		}
		if err := s.dispatch(); err != nil {
			s.log.Error("store: indexing the commitlog failed; retrying", "err", err)
		}
		t.Reset(100 * time.Millisecond)
	}
}

// checkpointLoop syncs the consume queues and writes the checkpoint (how
// far they are complete) every 5 s, which bounds the recovery scan. It runs
// beside the dispatcher so new messages are not held up by fsyncs.
func (s *Store) checkpointLoop() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.checkpoint(); err != nil {
				s.log.Error("store: checkpoint failed", "err", err)
			}
		}
	}
}

func (s *Store) checkpoint() error {
	s.dmu.Lock()
	at := s.dispatched
	s.dmu.Unlock()
	s.qmu.Lock()
	qs := make([]*consumeQueue, 0, len(s.queues))
	for _, q := range s.queues {
		qs = append(qs, q)
	}
	s.qmu.Unlock()
	for _, q := range qs {
		if err := q.sync(); err != nil {
			return err
		}
	}
	if err := s.keys.sync(); err != nil {
		return err
	}
	return s.writeCheckpoint(at)
}

// indexNow makes what was just appended readable: it indexes it on the
// caller's goroutine when no one else is indexing (a message reaches a
// waiting consumer without a hand-off to the dispatcher), else leaves it to
// the dispatcher.
func (s *Store) indexNow() {
	if !s.dispatchMu.TryLock() {
		signal(s.kick)
		return
	}
	err := s.dispatchLocked()
	s.dispatchMu.Unlock()
	if err != nil {
		signal(s.kick) // the dispatcher retries and logs
	}
}

func (s *Store) dispatch() error {
	s.dispatchMu.Lock()
	defer s.dispatchMu.Unlock()
	return s.dispatchLocked()
}

// dispatchLocked indexes the commitlog from where indexing stopped to its
// end (dispatchMu held: one indexer at a time).
func (s *Store) dispatchLocked() error {
	s.dmu.Lock()
	from := s.dispatched
	s.dmu.Unlock()
	end := s.cl.end()
	if from >= end {
		return nil
	}
	pos, err := s.cl.scan(from, end, s.index)
	if ferr := s.flushQueues(); err == nil {
		err = ferr
	}
	s.dmu.Lock()
	if pos > s.dispatched {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.dispatched = pos
	s.dcond.Broadcast()
	s.dmu.Unlock()
	return err
}

// WaitIndexed blocks until everything appended before the call is readable
// through Get (for tests and for read-your-writes).
func (s *Store) WaitIndexed() {
	end := s.cl.end()
	signal(s.kick)
	s.dmu.Lock()
	defer s.dmu.Unlock()
	for s.dispatched < end && !s.closed {
		s.dcond.Wait()
	}
}

func (s *Store) flushLoop() {
	if s.cfg.Flush == FlushSync {
		s.cl.syncFlusher()
		return
	}
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	var last int64 = -1
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// While appends go on, whole pages only (see flushTo); once they
			// pause for an interval, the partial last page too — so an
			// acknowledged message is on disk within two intervals.
			end := s.cl.end()
			if _, err := s.cl.flushTo(end != last); err != nil {
				s.log.Error("store: commitlog flush failed", "err", err)
			}
			last = end
		}
	}
}

// Flushed is the commitlog offset up to which the log is on disk.
func (s *Store) Flushed() int64 { return s.cl.flushedOffset() }

// Get reads up to max messages of a queue from queue offset from; next is
// the offset to ask for after them.
func (s *Store) Get(topic string, queue uint32, from int64, max int) (msgs []*Message, next int64, err error) {
	return s.GetTags(topic, queue, from, max, nil)
}

// TagHash is the hash of a tag that consume queue entries carry.
func TagHash(tag string) int64 {
	if tag == "" {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(tag))
	return int64(h.Sum64() >> 1)
}

// GetTags is Get keeping only messages whose tag is one of tags (all when
// tags is empty). Entries are filtered by the hash in the consume queue
// without reading the commitlog, then by the tag itself. At most 8×max
// entries are examined per call, so a sparse filter returns fewer than
// max messages with next advanced past what was skipped.
func (s *Store) GetTags(topic string, queue uint32, from int64, max int, tags []string) (msgs []*Message, next int64, err error) {
	if s.isClosed() {
		return nil, from, ErrClosed
	}
	s.qmu.Lock()
	q := s.queues[queueKey{topic, queue}]
	s.qmu.Unlock()
	if q == nil {
		return nil, from, nil
	}
	var hashes map[int64]bool
	if len(tags) > 0 {
		hashes = make(map[int64]bool, len(tags))
		for _, t := range tags {
			hashes[TagHash(t)] = true
		}
	}
	next = from
	budget := 8 * max
	for len(msgs) < max && budget > 0 {
		refs, err := q.get(next, max-len(msgs))
		if err != nil {
			return msgs, next, err
		}
		if len(refs) == 0 {
			break
		}
		budget -= len(refs)
		for _, r := range refs {
			next = r.off + 1
			if hashes != nil && !hashes[r.tag] {
				continue
			}
			m, err := s.cl.readTopic(r.phys, int(r.size), topic)
			if errors.Is(err, errDeleted) {
				continue // its segment went to retention: skip to what is left
			}
			if err != nil {
				return msgs, r.off, err
			}
			if hashes != nil && !slices.Contains(tags, m.Properties[TagProperty]) {
				continue // a hash collision
			}
			msgs = append(msgs, m)
		}
	}
	return msgs, next, nil
}

// QueueChanged returns a channel closed when a queue next gains entries
// (a long poll waits on its own queue; until the queue exists, on any).
func (s *Store) QueueChanged(topic string, queue uint32) <-chan struct{} {
	s.qmu.Lock()
	q := s.queues[queueKey{topic, queue}]
	s.qmu.Unlock()
	if q == nil {
		return s.Changed()
	}
	return q.changed()
}

// Changed returns a channel closed when the consume queues next gain
// entries (for long polls).
func (s *Store) Changed() <-chan struct{} {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return s.changed
}

// MaxOffset is the queue offset after the last indexed message of a queue.
func (s *Store) MaxOffset(topic string, queue uint32) int64 {
	s.qmu.Lock()
	q := s.queues[queueKey{topic, queue}]
	s.qmu.Unlock()
	if q == nil {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.next
}

// ReadAt reads the message at a commitlog offset (a message ID encodes it).
func (s *Store) ReadAt(offset int64, size int32) (*Message, error) {
	return s.cl.read(offset, int(size))
}

// End is the commitlog offset after the last record.
func (s *Store) End() int64 { return s.cl.end() }

func (s *Store) isClosed() bool {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return s.closed
}

// Close stops the store: indexes and flushes what was appended, writes the
// checkpoint, and unmaps the files.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.dmu.Lock()
		s.closed = true
		s.dcond.Broadcast()
		s.dmu.Unlock()
		close(s.stop)
		s.cl.shutFlush()
		s.wg.Wait()
		if e := s.dispatch(); e != nil {
			err = e
		}
		if _, e := s.cl.flush(); e != nil && err == nil {
			err = e
		}
		s.qmu.Lock()
		for _, q := range s.queues {
			if e := q.sync(); e != nil && err == nil {
				err = e
			}
		}
		s.qmu.Unlock()
		if e := s.keys.sync(); e != nil && err == nil {
			err = e
		}
		if e := s.writeCheckpoint(s.dispatched); e != nil && err == nil {
			err = e
		}
		s.closeFiles()
	})
	return err
}

func (s *Store) closeFiles() {
	if s.keys != nil {
		_ = s.keys.close()
	}
	s.cl.mu.Lock()
	s.cl.closeAll()
	s.cl.mu.Unlock()
	s.qmu.Lock()
	for _, q := range s.queues {
		q.closeAll()
	}
	s.qmu.Unlock()
}

// DeleteExpired applies retention at now and returns how many commitlog
// segments it deleted. The segment being written is never deleted.
func (s *Store) DeleteExpired(now time.Time) (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	cut := now.Add(-s.cfg.RetainAge).UnixMilli()
	protect := int64(-1)
	if s.cfg.Protect != nil {
		protect = s.cfg.Protect()
	}
	n := 0
	var first int64
	for {
		var dropped bool
		var err error
		first, dropped, err = s.cl.dropOldest(func(old, next *segment) bool {
			if protect >= 0 && next.start > protect {
				return true // a consumer still needs old
			}
			tooBig := s.cfg.RetainBytes > 0 && s.cl.bytesLocked() > s.cfg.RetainBytes
			at := next.firstStoredAt(s.cfg.SegmentSize)
			expired := at > 0 && at < cut
			return !tooBig && !expired
		})
		if err != nil {
			return n, err
		}
		if !dropped {
			break
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	s.qmu.Lock()
	qs := make([]*consumeQueue, 0, len(s.queues))
	for _, q := range s.queues {
		qs = append(qs, q)
	}
	s.qmu.Unlock()
	for _, q := range qs {
		if err := q.dropBefore(first); err != nil {
			return n, err
		}
	}
	s.log.Info("store: retention deleted commitlog segments", "segments", n, "first_offset", first)
	return n, nil
}

// MinOffset is the first queue offset of a queue still on disk.
func (s *Store) MinOffset(topic string, queue uint32) int64 {
	s.qmu.Lock()
	q := s.queues[queueKey{topic, queue}]
	s.qmu.Unlock()
	if q == nil {
		return 0
	}
	return q.first()
}

// FlushPolicy is the flush policy (FlushAsync or FlushSync).
func (s *Store) FlushPolicy() string { return s.cfg.Flush }

// PhysOffset is the commitlog offset of a queue's entry at queue offset
// qoff; false when the queue has no such entry.
func (s *Store) PhysOffset(topic string, queue uint32, qoff int64) (int64, bool) {
	s.qmu.Lock()
	q := s.queues[queueKey{topic, queue}]
	s.qmu.Unlock()
	if q == nil {
		return 0, false
	}
	refs, err := q.get(qoff, 1)
	if err != nil || len(refs) == 0 || refs[0].off != qoff {
		return 0, false
	}
	return refs[0].phys, true
}

// OffsetAt is the first queue offset of a queue whose message was stored
// at or after t (unix ms); MaxOffset when none was.
func (s *Store) OffsetAt(topic string, queue uint32, t int64) int64 {
	lo, hi := s.MinOffset(topic, queue), s.MaxOffset(topic, queue)
	for lo < hi {
		mid := lo + (hi-lo)/2
		ms, _, err := s.Get(topic, queue, mid, 1)
		if err != nil || len(ms) == 0 || ms[0].StoredAt >= t {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}
