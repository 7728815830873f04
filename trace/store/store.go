// Package store keeps spans on local disk for the trace collector:
// append-only segment files of CRC-framed records, a trace-ID index per
// segment (kept in memory while the segment is written, then sealed into
// a sorted index file with a Bloom filter), time and service pruning for
// searches, and retention by age and size. It starts no goroutines: its
// owner calls Append, the queries and Retain.
//
// Crash safety: a record is framed with its length and a CRC-32C, so a
// segment cut short by a crash (kill -9, power loss without Sync) is
// repaired on Open by cutting it at the last whole record; an index file
// is written whole and renamed into place, and rebuilt from its segment
// when missing or damaged.
package store

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config says where and how much.
type Config struct {
	// Dir holds the segment and index files (required).
	Dir string
	// SegmentBytes is the size at which a segment is sealed and the next
	// begun (default 64 MiB).
	SegmentBytes int64
	// MaxAge drops sealed segments whose newest span started longer ago
	// (0: no limit). MaxBytes drops the oldest sealed segments while the
	// store is larger (0: no limit).
	MaxAge   time.Duration
	MaxBytes int64
	// Sync makes Append fsync before it returns (a power cut loses
	// nothing acknowledged); without it a process crash loses nothing, a
	// power cut the last unsynced appends.
	Sync bool
	// Logger gets repairs and retention (default: discard).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults (Dir still to be set).
func DefaultConfig() Config { return Config{SegmentBytes: 64 << 20} }

// Validate checks cfg.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("trace/store: Dir is required")
	}
	if c.SegmentBytes < 0 || c.MaxAge < 0 || c.MaxBytes < 0 {
		return errors.New("trace/store: SegmentBytes, MaxAge and MaxBytes cannot be negative")
	}
	return nil
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("trace/store: closed")

const (
	segMagic   = "TGSPANS1"
	idxMagic   = "TGSIDX01"
	frameBytes = 8 // length and CRC
	maxRecord  = 4 << 20
	entryBytes = 20 // trace ID and offset
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Store is an open span store, safe for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger

	mu     sync.RWMutex
	sealed []*segment // oldest first
	active *segment
	buf    []byte
	closed bool
	// sealing counts the segments whose index is being written in the
	// background (Close waits for them).
	sealing sync.WaitGroup
}

// segment is one file of records. Its meta fields are set while it is
// written and fixed once sealed.
type segment struct {
	seq      uint64
	f        *os.File
	size     int64
	spans    int
	minStart uint64
	maxStart uint64
	services map[string]bool
	// While active: trace → record offsets.
	byTrace map[TraceID][]uint32
	// Once sealed: the index file, its entries' start and count, and a
	// Bloom filter of its trace IDs.
	idx      *os.File
	entryOff int64
	entries  int
	bloom    []uint64
}

func (s *Store) segPath(seq uint64) string {
	return filepath.Join(s.cfg.Dir, fmt.Sprintf("%016x.seg", seq))
}

func (s *Store) idxPath(seq uint64) string {
	return filepath.Join(s.cfg.Dir, fmt.Sprintf("%016x.idx", seq))
}

// Open opens (creating) the store in cfg.Dir, repairing a torn tail and
// rebuilding missing indexes.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = DefaultConfig().SegmentBytes
	}
	s := &Store{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("trace/store: %w", err)
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("trace/store: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	fail := func(err error) (*Store, error) {
		s.closeFiles()
		return nil, err
	}
	for i, seq := range seqs {
		seg, err := s.openSegment(seq)
		if err != nil {
			return fail(err)
		}
		if i < len(seqs)-1 {
			if err := s.loadIndex(seg); err != nil {
				s.log.Warn("trace/store: rebuilding a segment's index", "segment", seq, "err", err)
				if err := s.seal(seg); err != nil {
					seg.f.Close()
					return fail(err)
				}
			}
			s.sealed = append(s.sealed, seg)
		} else {
			s.active = seg
		}
	}
	if s.active == nil {
		seg, err := s.newSegment(1)
		if err != nil {
			return fail(err)
		}
		s.active = seg
	}
	return s, nil
}

// newSegment creates segment seq, empty but for its magic.
func (s *Store) newSegment(seq uint64) (*segment, error) {
	f, err := os.OpenFile(s.segPath(seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("trace/store: %w", err)
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		f.Close()
		return nil, fmt.Errorf("trace/store: %w", err)
	}
	return &segment{seq: seq, f: f, size: int64(len(segMagic)), services: map[string]bool{}, byTrace: map[TraceID][]uint32{}}, nil
}

// openSegment opens segment seq and scans it: its records' trace IDs,
// times and services, and its end — cut at the last whole record.
func (s *Store) openSegment(seq uint64) (*segment, error) {
	f, err := os.OpenFile(s.segPath(seq), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("trace/store: %w", err)
	}
	seg := &segment{seq: seq, f: f, services: map[string]bool{}, byTrace: map[TraceID][]uint32{}}
	magic := make([]byte, len(segMagic))
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != segMagic {
		// A segment created but cut before its magic reached the disk.
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("trace/store: %w", err)
		}
		if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("trace/store: %w", err)
		}
		seg.size = int64(len(segMagic))
		return seg, nil
	}
	end := scan(f, func(off int64, sp *Span) { seg.note(off, sp) })
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("trace/store: %w", err)
	}
	if fi.Size() > end {
		s.log.Warn("trace/store: cutting a torn tail", "segment", seq, "at", end, "bytes", fi.Size()-end)
		if err := f.Truncate(end); err != nil {
			f.Close()
			return nil, fmt.Errorf("trace/store: cut torn tail: %w", err)
		}
	}
	seg.size = end
	return seg, nil
}

// scan reads f's records from after the magic, calling fn with each
// record's offset and head, and returns where the whole records end.
func scan(f *os.File, fn func(off int64, sp *Span)) int64 {
	var sp Span
	return scanRecords(f, 1<<62, func(off int64, payload []byte) bool {
		d := decoder{b: payload}
		d.head(&sp)
		if d.err != nil {
			return false
		}
		fn(off, &sp)
		return true
	})
}

// note records a span written at off in an active segment.
func (g *segment) note(off int64, sp *Span) {
	g.byTrace[sp.TraceID] = append(g.byTrace[sp.TraceID], uint32(off))
	g.noteMeta(sp)
}

func (g *segment) noteMeta(sp *Span) {
	if g.spans == 0 || sp.StartUnixNano < g.minStart {
		g.minStart = sp.StartUnixNano
	}
	if sp.StartUnixNano > g.maxStart {
		g.maxStart = sp.StartUnixNano
	}
	g.spans++
	if !g.services[sp.Service] {
		// A span's strings may share its request's bytes: keep a copy.
		g.services[strings.Clone(sp.Service)] = true
	}
}

// Append writes spans as one batch: one write, and one fsync with Sync.
func (s *Store) Append(spans []Span) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	b := s.buf[:0]
	offs := make([]int, len(spans))
	for i := range spans {
		offs[i] = len(b)
		start := len(b)
		b = append(b, make([]byte, frameBytes)...)
		b = appendSpan(b, &spans[i])
		n := len(b) - start - frameBytes
		if n > maxRecord {
			s.buf = b[:0]
			return fmt.Errorf("trace/store: a span of %d bytes encoded (at most %d)", n, maxRecord)
		}
		binary.LittleEndian.PutUint32(b[start:], uint32(n))
		binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+frameBytes:], crcTable))
	}
	s.buf = b[:0]
	if len(b) == 0 {
		return nil
	}
	if s.active.size > int64(len(segMagic)) && s.active.size+int64(len(b)) > s.cfg.SegmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if s.active.size+int64(len(b)) > 1<<32-1 {
		return fmt.Errorf("trace/store: a batch of %d bytes does not fit a segment", len(b))
	}
	g := s.active
	if _, err := g.f.WriteAt(b, g.size); err != nil {
		// What was written is cut on the next open; keep the size.
		return fmt.Errorf("trace/store: append: %w", err)
	}
	if s.cfg.Sync {
		if err := g.f.Sync(); err != nil {
			return fmt.Errorf("trace/store: sync: %w", err)
		}
	}
	for i := range spans {
		g.note(g.size+int64(offs[i]), &spans[i])
	}
	g.size += int64(len(b))
	return nil
}

// rotate seals the active segment and begins the next; then retention.
//
// The full segment's index is written in the background: appends go on
// into the new segment meanwhile, and queries use the old one's trace map
// until its index is in place. If the index cannot be written, the map
// stays (and the next open rebuilds the file).
func (s *Store) rotate() error {
	old := s.active
	seg, err := s.newSegment(old.seq + 1)
	if err != nil {
		return err
	}
	s.sealed = append(s.sealed, old)
	s.active = seg
	s.sealing.Add(1)
	go func() {
		defer s.sealing.Done()
		ix, err := s.writeIndex(old)
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case err != nil:
			s.log.Error("trace/store: writing a segment's index failed; its trace map stays in memory", "segment", old.seq, "err", err)
		case s.closed:
			ix.f.Close()
		case !slices.Contains(s.sealed, old): // retention dropped it meanwhile
			ix.f.Close()
			os.Remove(s.idxPath(old.seq))
		default:
			s.install(old, ix)
		}
	}()
	s.retain(time.Now())
	return nil
}

// bloomBits per trace ID: about 1% false positives with 4 probes.
const bloomBits = 10

func bloomSize(n int) int { return max(1, (n*bloomBits+63)/64) }

// bloomProbes takes four probes from the (random) trace ID itself.
func bloomProbes(id TraceID, words int) [4]uint64 {
	var p [4]uint64
	bits := uint64(words * 64)
	for i := range p {
		p[i] = uint64(binary.LittleEndian.Uint32(id[4*i:])) * 0x9E3779B97F4A7C15 % bits
	}
	return p
}

// seal writes g's index file from its records (scanning g when its trace
// map is gone) and switches g to it.
func (s *Store) seal(g *segment) error {
	ix, err := s.writeIndex(g)
	if err != nil {
		return err
	}
	s.install(g, ix)
	return nil
}

// index is a written index file, open, with what a segment needs of it.
type index struct {
	f        *os.File
	entryOff int64
	entries  int
	bloom    []uint64
}

// install switches g from its trace map to its index file.
func (s *Store) install(g *segment, ix index) {
	if g.idx != nil {
		g.idx.Close()
	}
	g.idx, g.entryOff, g.entries, g.bloom, g.byTrace = ix.f, ix.entryOff, ix.entries, ix.bloom, nil
}

// writeIndex writes g's index file (whole, then renamed into place) and
// opens it. It reads g's trace map and meta, which no longer change once
// g is not the active segment; it takes no lock.
func (s *Store) writeIndex(g *segment) (index, error) {
	if g.byTrace == nil {
		g.byTrace = map[TraceID][]uint32{}
		g.spans, g.services = 0, map[string]bool{}
		scan(g.f, func(off int64, sp *Span) { g.note(off, sp) })
	}
	type entry struct {
		id  TraceID
		off uint32
	}
	entries := make([]entry, 0, g.spans)
	for id, offs := range g.byTrace {
		for _, o := range offs {
			entries = append(entries, entry{id, o})
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := compareIDs(a.id, b.id); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
	bloom := make([]uint64, bloomSize(len(g.byTrace)))
	for id := range g.byTrace {
		for _, p := range bloomProbes(id, len(bloom)) {
			bloom[p/64] |= 1 << (p % 64)
		}
	}
	var b []byte
	b = append(b, idxMagic...)
	b = binary.LittleEndian.AppendUint64(b, g.minStart)
	b = binary.LittleEndian.AppendUint64(b, g.maxStart)
	b = binary.LittleEndian.AppendUint32(b, uint32(g.spans))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(g.services)))
	for svc := range g.services {
		b = appendString(b, svc)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(bloom)))
	for _, w := range bloom {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	entryOff := len(b)
	for _, e := range entries {
		b = append(b, e.id[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.off)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	tmp := s.idxPath(g.seq) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return index{}, fmt.Errorf("trace/store: write index: %w", err)
	}
	if s.cfg.Sync {
		if f, err := os.Open(tmp); err == nil {
			f.Sync()
			f.Close()
		}
	}
	if err := os.Rename(tmp, s.idxPath(g.seq)); err != nil {
		return index{}, fmt.Errorf("trace/store: write index: %w", err)
	}
	idx, err := os.Open(s.idxPath(g.seq))
	if err != nil {
		return index{}, fmt.Errorf("trace/store: %w", err)
	}
	return index{f: idx, entryOff: int64(entryOff), entries: len(entries), bloom: bloom}, nil
}

// loadIndex reads g's index file's head (meta and Bloom filter) and
// checks the whole file's CRC.
func (s *Store) loadIndex(g *segment) error {
	b, err := os.ReadFile(s.idxPath(g.seq))
	if err != nil {
		return err
	}
	if len(b) < len(idxMagic)+4 || string(b[:len(idxMagic)]) != idxMagic {
		return errors.New("not an index file")
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return errors.New("index CRC mismatch")
	}
	d := decoder{b: body[len(idxMagic):]}
	u64 := func() uint64 {
		v := d.bytes(8)
		if v == nil {
			return 0
		}
		return binary.LittleEndian.Uint64(v)
	}
	u32 := func() uint32 {
		v := d.bytes(4)
		if v == nil {
			return 0
		}
		return binary.LittleEndian.Uint32(v)
	}
	g.minStart, g.maxStart = u64(), u64()
	g.spans = int(u32())
	nsvc := int(u32())
	if d.err == nil && nsvc > len(d.b) {
		return errors.New("index: bad service count")
	}
	for range nsvc {
		g.services[d.string()] = true
	}
	nb := int(u32())
	if d.err == nil && nb*8 > len(d.b) {
		return errors.New("index: bad Bloom filter size")
	}
	g.bloom = make([]uint64, nb)
	for i := range g.bloom {
		g.bloom[i] = u64()
	}
	g.entries = int(u32())
	if d.err != nil {
		return d.err
	}
	if len(d.b) != g.entries*entryBytes {
		return errors.New("index: entries do not fill the file")
	}
	g.entryOff = int64(len(b) - 4 - len(d.b))
	idx, err := os.Open(s.idxPath(g.seq))
	if err != nil {
		return err
	}
	g.idx, g.byTrace = idx, nil
	return nil
}

func compareIDs(a, b TraceID) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])); c != 0 {
		return c
	}
	return cmp.Compare(binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:]))
}

// offsets returns g's record offsets for trace id.
func (g *segment) offsets(id TraceID) ([]uint32, error) {
	if g.byTrace != nil {
		return g.byTrace[id], nil
	}
	if g.entries == 0 {
		return nil, nil
	}
	for _, p := range bloomProbes(id, len(g.bloom)) {
		if g.bloom[p/64]&(1<<(p%64)) == 0 {
			return nil, nil
		}
	}
	var e [entryBytes]byte
	var readErr error
	at := func(i int) []byte {
		if _, err := g.idx.ReadAt(e[:], g.entryOff+int64(i)*entryBytes); err != nil && readErr == nil {
			readErr = err
		}
		return e[:]
	}
	i := sort.Search(g.entries, func(i int) bool { return compareIDs(TraceID(at(i)[:16]), id) >= 0 })
	var out []uint32
	for ; i < g.entries && readErr == nil; i++ {
		b := at(i)
		if TraceID(b[:16]) != id {
			break
		}
		out = append(out, binary.LittleEndian.Uint32(b[16:]))
	}
	if readErr != nil {
		return nil, fmt.Errorf("trace/store: read index %d: %w", g.seq, readErr)
	}
	return out, nil
}

// readRecord reads and checks the record at off.
func (g *segment) readRecord(off int64) (Span, error) {
	var h [frameBytes]byte
	if _, err := g.f.ReadAt(h[:], off); err != nil {
		return Span{}, fmt.Errorf("trace/store: read segment %d at %d: %w", g.seq, off, err)
	}
	n := binary.LittleEndian.Uint32(h[:])
	if n > maxRecord {
		return Span{}, fmt.Errorf("trace/store: segment %d at %d: a record of %d bytes", g.seq, off, n)
	}
	b := make([]byte, n)
	if _, err := g.f.ReadAt(b, off+frameBytes); err != nil {
		return Span{}, fmt.Errorf("trace/store: read segment %d at %d: %w", g.seq, off, err)
	}
	if crc32.Checksum(b, crcTable) != binary.LittleEndian.Uint32(h[4:]) {
		return Span{}, fmt.Errorf("trace/store: segment %d at %d: CRC mismatch", g.seq, off)
	}
	return decodeSpan(b)
}

// Trace returns every stored record of trace id — its spans and its log
// records (KindLog) — by start time.
func (s *Store) Trace(id TraceID) ([]Span, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []Span
	for _, g := range append(slices.Clone(s.sealed), s.active) {
		offs, err := g.offsets(id)
		if err != nil {
			return nil, err
		}
		for _, o := range offs {
			sp, err := g.readRecord(int64(o))
			if err != nil {
				return nil, err
			}
			out = append(out, sp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartUnixNano < out[j].StartUnixNano })
	return out, nil
}

// Query selects spans; zero fields match everything. A trace matches when
// one of its spans does.
type Query struct {
	Service   string
	Operation string // the span name
	// Attrs must all be present with these values (compared as text).
	Attrs       map[string]string
	MinDuration time.Duration
	MaxDuration time.Duration // 0: no limit
	OnlyErrors  bool
	Start, End  time.Time // the span's start within [Start, End); zero: open
	Limit       int       // traces; default 20
}

// Match is a trace found by Search, named by its first matching span.
type Match struct {
	TraceID       TraceID
	Service, Name string
	StartUnixNano uint64
	DurationNano  uint64
	Status        Status
}

// Search returns traces with a span matching q, newest segments first.
func (s *Store) Search(q Query) ([]Match, error) {
	if q.Limit <= 0 {
		q.Limit = 20
	}
	var lo, hi uint64 = 0, ^uint64(0)
	if !q.Start.IsZero() {
		lo = uint64(q.Start.UnixNano())
	}
	if !q.End.IsZero() {
		hi = uint64(q.End.UnixNano())
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	segs := append(slices.Clone(s.sealed), s.active)
	seen := map[TraceID]bool{}
	var out []Match
	for i := len(segs) - 1; i >= 0 && len(out) < q.Limit; i-- {
		g := segs[i]
		if g.spans == 0 || g.maxStart < lo || g.minStart >= hi || (q.Service != "" && !g.services[q.Service]) {
			continue
		}
		var found []Match
		scanRecords(g.f, g.size, func(_ int64, payload []byte) bool {
			d := decoder{b: payload}
			var sp Span
			d.head(&sp)
			if d.err != nil || seen[sp.TraceID] || !q.matchHead(&sp, lo, hi) {
				return true
			}
			if len(q.Attrs) > 0 {
				attrs := d.attrs()
				if d.err != nil || !matchAttrs(q.Attrs, attrs) {
					return true
				}
			}
			seen[sp.TraceID] = true
			found = append(found, Match{sp.TraceID, sp.Service, sp.Name, sp.StartUnixNano, sp.DurationNano, sp.Status})
			return true
		})
		// Newest first within the segment too: later in the file is
		// newer among spans that started at the same time.
		slices.Reverse(found)
		slices.SortStableFunc(found, func(a, b Match) int {
			switch {
			case a.StartUnixNano > b.StartUnixNano:
				return -1
			case a.StartUnixNano < b.StartUnixNano:
				return 1
			}
			return 0
		})
		out = append(out, found[:min(len(found), q.Limit-len(out))]...)
	}
	return out, nil
}

// ScanRecent calls fn with batches of the spans that started at or after
// since — their heads only: IDs, times, kind, status, service, name, no
// attributes or events — newest segments first, until fn returns false.
// Writers wait while it runs: it is for a collector's start, before
// ingest (replaying the rollup's window).
func (s *Store) ScanRecent(since time.Time, fn func([]Span) bool) error {
	lo := uint64(max(since.UnixNano(), 0))
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	segs := append(slices.Clone(s.sealed), s.active)
	batch := make([]Span, 0, 1024)
	more := true
	for i := len(segs) - 1; i >= 0 && more; i-- {
		g := segs[i]
		if g.spans == 0 || g.maxStart < lo {
			continue
		}
		scanRecords(g.f, g.size, func(_ int64, payload []byte) bool {
			d := decoder{b: payload}
			var sp Span
			d.head(&sp)
			if d.err != nil || sp.StartUnixNano < lo {
				return true
			}
			if batch = append(batch, sp); len(batch) == cap(batch) {
				more = fn(batch)
				batch = batch[:0]
			}
			return more
		})
	}
	if more && len(batch) > 0 {
		fn(batch)
	}
	return nil
}

func (q *Query) matchHead(sp *Span, lo, hi uint64) bool {
	if sp.Kind == KindLog {
		return false // searches find traces by their spans
	}
	if sp.StartUnixNano < lo || sp.StartUnixNano >= hi {
		return false
	}
	if q.Service != "" && sp.Service != q.Service || q.Operation != "" && sp.Name != q.Operation {
		return false
	}
	if q.OnlyErrors && sp.Status != StatusError {
		return false
	}
	d := time.Duration(sp.DurationNano)
	return d >= q.MinDuration && (q.MaxDuration == 0 || d <= q.MaxDuration)
}

func matchAttrs(want map[string]string, attrs []Attr) bool {
	n := 0
	for _, a := range attrs {
		if v, ok := want[a.Key]; ok && a.Value.Text() == v {
			n++
		}
	}
	return n == len(want)
}

// Text is the value as text.
func (v Value) Text() string {
	switch v.Type {
	case TypeInt:
		return strconv.FormatInt(v.Int, 10)
	case TypeFloat:
		return strconv.FormatFloat(v.Float, 'g', -1, 64)
	case TypeBool:
		return strconv.FormatBool(v.Bool)
	}
	return v.Str
}

// scanRecords calls fn with each whole record's offset and payload up to
// end, until fn returns false; it returns the offset it stopped at (the
// end of the whole records, or the record fn refused).
func scanRecords(f *os.File, end int64, fn func(off int64, payload []byte) bool) int64 {
	off := int64(len(segMagic))
	br := newReader(io.NewSectionReader(f, 0, end), off)
	for {
		payload, next, ok := br.next()
		if !ok || !fn(off, payload) {
			return off
		}
		off = next
	}
}

// Retain drops sealed segments past MaxAge (measured from now) and, while
// the store is over MaxBytes, the oldest sealed ones.
func (s *Store) Retain(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.retain(now)
	}
}

func (s *Store) retain(now time.Time) {
	total := s.active.size
	for _, g := range s.sealed {
		total += g.size
	}
	drop := 0
	for drop < len(s.sealed) {
		g := s.sealed[drop]
		old := s.cfg.MaxAge > 0 && g.maxStart < uint64(now.Add(-s.cfg.MaxAge).UnixNano())
		big := s.cfg.MaxBytes > 0 && total > s.cfg.MaxBytes
		if !old && !big {
			break
		}
		total -= g.size
		g.f.Close()
		if g.idx != nil {
			g.idx.Close()
		}
		os.Remove(s.segPath(g.seq))
		os.Remove(s.idxPath(g.seq))
		s.log.Info("trace/store: dropped a segment", "segment", g.seq, "spans", g.spans, "old", old, "over size", big)
		drop++
	}
	s.sealed = s.sealed[drop:]
}

// Stats are the store's sizes.
type Stats struct {
	Segments int
	Bytes    int64
	Spans    int
}

// Stats returns the store's sizes.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := Stats{Segments: len(s.sealed) + 1, Bytes: s.active.size, Spans: s.active.spans}
	for _, g := range s.sealed {
		st.Bytes += g.size
		st.Spans += g.spans
	}
	return st
}

// Close closes the files; the active segment stays unsealed (its index
// is rebuilt by the next Open's scan).
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.sealing.Wait() // an index being written is finished (and kept for the next open)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeFiles()
}

func (s *Store) closeFiles() error {
	var first error
	for _, g := range append(slices.Clone(s.sealed), s.active) {
		if g == nil {
			continue
		}
		if err := g.f.Close(); err != nil && first == nil {
			first = err
		}
		if g.idx != nil {
			g.idx.Close()
		}
	}
	return first
}
