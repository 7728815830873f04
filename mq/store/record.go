// Package store is the message queue's storage engine, after RocketMQ's:
// one commitlog shared by every topic, in fixed-size segment files named
// by their start offset, memory-mapped, the next one allocated and
// pre-faulted before it is needed; consume queues per (topic, queue) of
// fixed 20-byte entries pointing into the commitlog, built from it
// asynchronously; flushing asynchronous (an interval) or synchronous
// (group commit: an acknowledged append is on disk); recovery that
// verifies the commitlog tail by CRC, truncates a torn record and rebuilds
// the consume queues from the checkpoint.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Record magic numbers.
const (
	magicMessage uint32 = 0x54474d31 // "TGM1"
	magicBlank   uint32 = 0x54474230 // "TGB0": fills a segment's end
)

// Limits.
const (
	headerSize    = 52
	MaxTopicLen   = 127
	MaxPropsBytes = 32 << 10
	// MaxBodyBytes is the largest message body (the broker may set a
	// smaller limit; 4 MiB by default there).
	MaxBodyBytes = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks a record that fails its checks.
var ErrCorrupt = errors.New("mq/store: corrupt record")

// Message is one stored message.
type Message struct {
	Topic       string
	QueueID     uint32
	Flags       uint32
	QueueOffset int64 // position in its queue (set by the store)
	Offset      int64 // position in the commitlog (set by the store)
	Size        int32 // bytes in the commitlog (set by the store)
	BornAt      int64 // unix ms, producer's clock
	StoredAt    int64 // unix ms (set by the store)
	Properties  map[string]string
	Body        []byte
}

// encodedSize is the record's size in the commitlog.
func encodedSize(m *Message) (int, error) {
	if len(m.Topic) == 0 || len(m.Topic) > MaxTopicLen {
		return 0, fmt.Errorf("store: topic %q: 1–%d bytes", m.Topic, MaxTopicLen)
	}
	if len(m.Body) > MaxBodyBytes {
		return 0, fmt.Errorf("store: body of %d bytes exceeds %d", len(m.Body), MaxBodyBytes)
	}
	p := propsSize(m.Properties)
	if p > MaxPropsBytes {
		return 0, fmt.Errorf("store: properties of %d bytes exceed %d", p, MaxPropsBytes)
	}
	return headerSize + 1 + len(m.Topic) + 2 + p + 4 + len(m.Body), nil
}

func propsSize(p map[string]string) int {
	n := 0
	for k, v := range p {
		n += 2 + len(k) + 2 + len(v)
	}
	return n
}

// encode writes m (Offset, QueueOffset and StoredAt set) into b, which is
// exactly encodedSize(m) long.
func encode(b []byte, m *Message) {
	be := binary.BigEndian
	be.PutUint32(b[0:], uint32(len(b)))
	be.PutUint32(b[4:], magicMessage)
	be.PutUint32(b[12:], m.QueueID)
	be.PutUint32(b[16:], m.Flags)
	be.PutUint64(b[20:], uint64(m.QueueOffset))
	be.PutUint64(b[28:], uint64(m.Offset))
	be.PutUint64(b[36:], uint64(m.BornAt))
	be.PutUint64(b[44:], uint64(m.StoredAt))
	i := headerSize
	b[i] = byte(len(m.Topic))
	i++
	i += copy(b[i:], m.Topic)
	be.PutUint16(b[i:], uint16(propsSize(m.Properties)))
	i += 2
	for k, v := range m.Properties {
		be.PutUint16(b[i:], uint16(len(k)))
		i += 2
		i += copy(b[i:], k)
		be.PutUint16(b[i:], uint16(len(v)))
		i += 2
		i += copy(b[i:], v)
	}
	be.PutUint32(b[i:], uint32(len(m.Body)))
	i += 4
	copy(b[i:], m.Body)
	be.PutUint32(b[8:], crc32.Checksum(b[12:], crcTable))
}

// encodeBlank fills b (at least 8 bytes) with a blank record.
func encodeBlank(b []byte) {
	binary.BigEndian.PutUint32(b[0:], uint32(len(b)))
	binary.BigEndian.PutUint32(b[4:], magicBlank)
}

// recordKind classifies the record at the start of b.
type recordKind int

const (
	kindEnd     recordKind = iota // zeros: no record here yet
	kindMessage                   // a valid message
	kindBlank                     // the segment's filler
	kindBad                       // torn or corrupt
)

// peek looks at the record at the start of b (the rest of a segment) and
// returns its kind and size, checking the CRC of a message.
func peek(b []byte) (recordKind, int) { return peekRecord(b, true) }

// peekRecord is peek, checking the CRC only when verify is set (the
// dispatcher reads records this process just wrote).
func peekRecord(b []byte, verify bool) (recordKind, int) {
	if len(b) < 8 {
		return kindEnd, 0
	}
	size := int(binary.BigEndian.Uint32(b[0:]))
	magic := binary.BigEndian.Uint32(b[4:])
	switch {
	case size == 0 && magic == 0:
		return kindEnd, 0
	case magic == magicBlank && size >= 8 && size <= len(b):
		return kindBlank, size
	case magic != magicMessage || size < headerSize+7 || size > len(b):
		return kindBad, 0
	}
	if verify && crc32.Checksum(b[12:size], crcTable) != binary.BigEndian.Uint32(b[8:]) {
		return kindBad, 0
	}
	return kindMessage, size
}

// decode parses a message record (whose CRC peek has checked). Every
// length is checked against what is left, so bad input is an error, never
// a panic or a huge allocation.
func decode(b []byte) (*Message, error) { return decodeRecord(b, true, "") }

// decodeRecord is decode; without withBody the body is left out (for
// indexing, which needs only the header and properties).
func decodeRecord(b []byte, withBody bool, topicHint string) (*Message, error) {
	be := binary.BigEndian
	if len(b) < headerSize+7 || int(be.Uint32(b[0:])) != len(b) || be.Uint32(b[4:]) != magicMessage {
		return nil, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	m := &Message{QueueID: be.Uint32(b[12:]), Flags: be.Uint32(b[16:]), QueueOffset: int64(be.Uint64(b[20:])),
		Offset: int64(be.Uint64(b[28:])), BornAt: int64(be.Uint64(b[36:])), StoredAt: int64(be.Uint64(b[44:])), Size: int32(len(b))}
	r := b[headerSize:]
	tl := int(r[0])
	r = r[1:]
	if tl == 0 || tl > len(r) {
		return nil, fmt.Errorf("%w: topic length %d", ErrCorrupt, tl)
	}
	if string(r[:tl]) == topicHint {
		m.Topic = topicHint // no allocation when the caller knows it
	} else {
		m.Topic = string(r[:tl])
	}
	r = r[tl:]
	if len(r) < 2 {
		return nil, fmt.Errorf("%w: truncated properties", ErrCorrupt)
	}
	pl := int(be.Uint16(r))
	r = r[2:]
	if pl > len(r) {
		return nil, fmt.Errorf("%w: properties length %d", ErrCorrupt, pl)
	}
	props := r[:pl]
	r = r[pl:]
	for len(props) > 0 {
		if len(props) < 2 {
			return nil, fmt.Errorf("%w: property key", ErrCorrupt)
		}
		kl := int(be.Uint16(props))
		props = props[2:]
		if kl+2 > len(props) {
			return nil, fmt.Errorf("%w: property key length %d", ErrCorrupt, kl)
		}
		k := internKey(props[:kl])
		props = props[kl:]
		vl := int(be.Uint16(props))
		props = props[2:]
		if vl > len(props) {
			return nil, fmt.Errorf("%w: property value length %d", ErrCorrupt, vl)
		}
		if m.Properties == nil {
			m.Properties = map[string]string{}
		}
		m.Properties[k] = string(props[:vl])
		props = props[vl:]
	}
	if len(r) < 4 {
		return nil, fmt.Errorf("%w: truncated body length", ErrCorrupt)
	}
	bl := int(be.Uint32(r))
	r = r[4:]
	if bl != len(r) {
		return nil, fmt.Errorf("%w: body length %d, %d bytes left", ErrCorrupt, bl, len(r))
	}
	if withBody {
		m.Body = append([]byte(nil), r...)
	}
	return m, nil
}

// internKey returns the common property names without allocating.
func internKey(b []byte) string {
	switch string(b) {
	case "ID":
		return "ID"
	case "TAGS":
		return "TAGS"
	case "KEYS":
		return "KEYS"
	case "traceparent":
		return "traceparent"
	case "tangram-xid":
		return "tangram-xid"
	}
	return string(b)
}
