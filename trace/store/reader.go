package store

import (
	"bufio"
	"encoding/binary"
	"hash/crc32"
	"io"
)

// reader walks a segment's records from an offset with a buffer, stopping
// at the first incomplete or damaged one.
type reader struct {
	br  *bufio.Reader
	off int64
	buf []byte
}

func newReader(r io.ReaderAt, off int64) *reader {
	return &reader{br: bufio.NewReaderSize(io.NewSectionReader(r, off, 1<<62), 256<<10), off: off}
}

// next returns the next record's payload (valid until the next call), the
// offset after it, and false at the end of the whole records.
func (r *reader) next() ([]byte, int64, bool) {
	var h [frameBytes]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return nil, r.off, false
	}
	n := binary.LittleEndian.Uint32(h[:])
	if n > maxRecord {
		return nil, r.off, false
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, r.off, false
	}
	if crc32.Checksum(b, crcTable) != binary.LittleEndian.Uint32(h[4:]) {
		return nil, r.off, false
	}
	r.off += frameBytes + int64(n)
	return b, r.off, true
}
