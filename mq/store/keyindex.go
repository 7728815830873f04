package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tangram-dev/tangram/internal/durable"
)

// KeysProperty holds a message's keys, separated by spaces (RocketMQ's
// KEYS): Lookup finds messages by any of them.
const KeysProperty = "KEYS"

// keyIndex finds messages by key: an append-only file of 20-byte entries
// (hash of topic and key, commitlog offset, size), loaded into memory at
// open. Hash collisions are resolved by reading the message and checking.
type keyIndex struct {
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	refs    map[uint64][]cqRef
	n       int64 // entries in the file
	maxPhys int64 // the highest commitlog offset indexed (replays below it are skipped)
}

const keyEntry = 20

func keyHash(topic, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return h.Sum64()
}

func openKeyIndex(dir string) (*keyIndex, error) {
	if err := durable.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("store: key index dir: %w", err)
	}
	f, err := durable.CreateOrOpen(filepath.Join(dir, "keys"))
	if err != nil {
		return nil, fmt.Errorf("store: key index: %w", err)
	}
	k := &keyIndex{f: f, refs: map[uint64][]cqRef{}, maxPhys: -1}
	r := bufio.NewReaderSize(f, 1<<16)
	var b [keyEntry]byte
	var n int64
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break // a torn last entry is cut off below
			}
			f.Close()
			return nil, fmt.Errorf("store: key index read: %w", err)
		}
		h := binary.BigEndian.Uint64(b[0:])
		ref := cqRef{phys: int64(binary.BigEndian.Uint64(b[8:])), size: int32(binary.BigEndian.Uint32(b[16:]))}
		k.refs[h] = append(k.refs[h], ref)
		k.maxPhys = max(k.maxPhys, ref.phys)
		n++
	}
	if err := f.Truncate(n * keyEntry); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: key index truncate: %w", err)
	}
	if _, err := f.Seek(n*keyEntry, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: key index: %w", err)
	}
	k.n = n
	k.w = bufio.NewWriterSize(f, 1<<16)
	return k, nil
}

// truncateFrom drops the entries at or past the commitlog's recovered end
// (entries are in commitlog order, so they are the file's tail).
func (k *keyIndex) truncateFrom(end int64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.maxPhys < end {
		return nil
	}
	removed := int64(0)
	k.maxPhys = -1
	for h, refs := range k.refs {
		keep := refs[:0]
		for _, r := range refs {
			if r.phys < end {
				keep = append(keep, r)
				k.maxPhys = max(k.maxPhys, r.phys)
			} else {
				removed++
			}
		}
		if len(keep) == 0 {
			delete(k.refs, h)
		} else {
			k.refs[h] = keep
		}
	}
	if err := k.w.Flush(); err != nil {
		return err
	}
	k.n -= removed
	if err := k.f.Truncate(k.n * keyEntry); err != nil {
		return fmt.Errorf("store: key index truncate: %w", err)
	}
	if _, err := k.f.Seek(k.n*keyEntry, io.SeekStart); err != nil {
		return err
	}
	k.w.Reset(k.f)
	return nil
}

// add indexes a message's keys (a replay of one already indexed is skipped).
func (k *keyIndex) add(m *Message) error {
	keys := m.Properties[KeysProperty]
	if keys == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if m.Offset <= k.maxPhys {
		return nil
	}
	for _, key := range strings.Fields(keys) {
		h := keyHash(m.Topic, key)
		var b [keyEntry]byte
		binary.BigEndian.PutUint64(b[0:], h)
		binary.BigEndian.PutUint64(b[8:], uint64(m.Offset))
		binary.BigEndian.PutUint32(b[16:], uint32(m.Size))
		if _, err := k.w.Write(b[:]); err != nil {
			return fmt.Errorf("store: key index write: %w", err)
		}
		k.refs[h] = append(k.refs[h], cqRef{phys: m.Offset, size: m.Size})
		k.n++
	}
	k.maxPhys = m.Offset
	return nil
}

func (k *keyIndex) candidates(topic, key string) []cqRef {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]cqRef(nil), k.refs[keyHash(topic, key)]...)
}

func (k *keyIndex) sync() error {
	k.mu.Lock()
	err := k.w.Flush()
	k.mu.Unlock()
	if err != nil {
		return fmt.Errorf("store: key index flush: %w", err)
	}
	if err := k.f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

func (k *keyIndex) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	err := k.w.Flush()
	if cerr := k.f.Close(); err == nil {
		err = cerr
	}
	return err
}
