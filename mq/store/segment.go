package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tangram-dev/tangram/internal/durable"
	"golang.org/x/sys/unix"
)

// segment is one commitlog file: size bytes, named by its start offset
// (20 digits, so names sort like offsets), mapped into memory.
type segment struct {
	start int64
	path  string
	f     *os.File
	data  []byte // the mapping
}

func segmentName(start int64) string { return fmt.Sprintf("%020d", start) }

func parseSegmentName(name string) (int64, bool) {
	if len(name) != 20 {
		return 0, false
	}
	v, err := strconv.ParseInt(name, 10, 64)
	return v, err == nil && v >= 0
}

// openSegment maps the segment at start, creating it (size bytes of
// zeros) if needed. prefault warms a new file up so the first appends do
// not wait on the disk (RocketMQ's warm-up of a new mapped file): its
// blocks are allocated (fallocate) and its pages brought into the page
// cache and mapped (MAP_POPULATE) in one call — unlike writing a byte per
// page, this dirties nothing, so no megabytes of zeros are written back.
func openSegment(dir string, start int64, size int, prefault bool) (*segment, error) {
	path := filepath.Join(dir, segmentName(start))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	created := err == nil
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open segment %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: segment %s: %w", path, err)
	}
	fresh := st.Size() == 0
	if st.Size() != int64(size) {
		if st.Size() > int64(size) {
			f.Close()
			return nil, fmt.Errorf("store: segment %s is %d bytes, larger than the segment size %d (was it written with another size?)", path, st.Size(), size)
		}
		// Allocate the blocks now (a full disk fails here, not on an
		// append); a file system without fallocate gets a sparse file.
		if !fresh || unix.Fallocate(int(f.Fd()), 0, 0, int64(size)) != nil {
			if err := f.Truncate(int64(size)); err != nil {
				f.Close()
				return nil, fmt.Errorf("store: size segment %s: %w", path, err)
			}
		}
		// The new size (metadata: msync of the data does not carry it)
		// and, for a new file, its name in the directory are made durable
		// before any acknowledged record can land in it.
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("store: sync segment %s: %w", path, err)
		}
	}
	if created {
		if err := durable.SyncDir(dir); err != nil {
			f.Close()
			return nil, err
		}
	}
	flags := unix.MAP_SHARED
	if prefault && fresh {
		flags |= unix.MAP_POPULATE
	}
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: map segment %s: %w", path, err)
	}
	return &segment{start: start, path: path, f: f, data: data}, nil
}

// sync flushes [from, to) of the mapping to disk.
func (s *segment) sync(from, to int) error {
	if to <= from {
		return nil
	}
	from &^= 4095 // msync wants a page-aligned start
	if err := unix.Msync(s.data[from:to], unix.MS_SYNC); err != nil {
		return fmt.Errorf("store: sync %s: %w", s.path, err)
	}
	return nil
}

func (s *segment) close() error {
	err := unix.Munmap(s.data)
	s.data = nil
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *segment) remove() error {
	if err := s.close(); err != nil {
		return err
	}
	return os.Remove(s.path)
}
